"""Eval runs record their own model calls as usage tagged `eval`, priced from the price history
like production traffic: executed for real against the simulator."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from console.datasets.demo import items as demo_items
from console.evals import services as evals
from console.evals.models import EvalResult, EvalRun
from console.ops.management.commands.seed_demo import ANSWER_V3
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG, PROMPT
from console.usage import selectors
from console.usage.models import UsageEvent, UsageHourly
from tests.evals.helpers import model_content, publish_items
from tests.usage.helpers import price, rollup

pytestmark = pytest.mark.django_db


def test_an_eval_run_records_its_spend_as_eval_usage(application, engineer, simulator_url):
    price(application, "gpt-4o-mini", timezone.now() - timedelta(days=1), "0.15", "0.075", "0.6")
    _, dataset_version = publish_items(application, engineer, "mini-golden", demo_items()[:5])
    prompt = registry.create_head(
        actor=engineer, kind=PROMPT, application=application, key="answer-question",
        name="Answer", content=ANSWER_V3,
    ).version  # fmt: skip
    model = registry.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=application, key="gpt-main",
        name="Main", content=model_content(simulator_url),
    ).version  # fmt: skip
    run = evals.launch_run(
        actor=engineer,
        application=application,
        dataset_version=dataset_version,
        prompt_version=prompt,
        model_version=model,
        scorers=["contains_all"],
    )
    assert evals.execute_run(run.pk).status == EvalRun.Status.COMPLETED

    events = UsageEvent.objects.filter(application=application).order_by("event_id")
    assert events.count() == 5
    results = {r.item_id: r for r in EvalResult.objects.filter(run=run)}
    for e in events:
        result = results[e.event_id.removeprefix(f"eval-{run.pk}-")]
        assert e.source == UsageEvent.Source.EVAL
        assert (e.environment_id, e.feature) == (None, "eval")
        assert (e.model, e.model_config) == ("gpt-4o-mini", "gpt-main@1")
        assert e.prompt_version == "answer-question@1"
        assert (e.input_tokens, e.output_tokens) == (result.prompt_tokens, result.completion_tokens)
        expected = (
            Decimal(result.prompt_tokens) * Decimal("0.15")
            + Decimal(result.completion_tokens) * Decimal("0.6")
        ) / 1_000_000
        assert e.cost == expected.quantize(Decimal("0.00000001"))
        assert e.cost > 0
    # Recording again (a redelivered task) stores nothing new.
    assert evals.record_eval_usage(EvalRun.objects.get(pk=run.pk)) == 0
    assert UsageEvent.objects.count() == 5

    rollup()
    hourly = UsageHourly.objects.filter(application=application)
    assert set(hourly.values_list("source", flat=True)) == {"eval"}
    total = sum((e.cost for e in events), Decimal(0))
    filters, _ = selectors.UsageFilters.from_query({}, timezone.now().date())
    board = selectors.dashboard(application, filters, timezone.now().date())
    assert board.totals["eval_cost"] == board.totals["cost"] == total
    assert board.totals["requests"] == 5
