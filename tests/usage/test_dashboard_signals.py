"""The costs page beyond spend: eval spend includes the judge calls (matching the run page's
"model + judge"), evals are a source rather than a nameless environment, and error, thumbs-down
and cache-hit rates per model, feature and environment, with "—" where nothing was reported."""

from __future__ import annotations

import html as htmllib
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from console.accounts.roles import Role
from console.evals import services as evals
from console.evals.models import EvalRun
from console.usage import selectors, services
from console.usage.models import UsageEvent
from tests.evals.helpers import build_demo
from tests.usage.helpers import event, hour_ago, ingest, price, rollup
from tests.usage.test_dashboard import MAX_DASHBOARD_QUERIES

pytestmark = pytest.mark.django_db
M = 1_000_000


def url(application) -> str:
    return f"/apps/{application.key}/usage/"


def text(response) -> str:
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


@pytest.fixture
def viewer_client(application, member):
    client = Client()
    client.force_login(member(Role.VIEWER, "reader"))
    return client


@pytest.fixture
def signals(application):
    """prod: 4 gpt-4o-mini 'answer' requests (1 error, 2 cached, ratings 1 up / 2 down) and
    1 gpt-4o 'escalate' timeout; staging: 2 requests, never rated, never cached."""
    price(application, "gpt-4o-mini", hour_ago(48), "1", "0.5", "2")
    price(application, "gpt-4o", hour_ago(48), "2", "1", "4")
    at = hour_ago(2)
    ingest(
        application,
        "prod",
        [
            event("a1", at, input_tokens=M, cached_tokens=M // 2, cache_hit=True, feature="answer",
                  feedback="up"),
            event("a2", at, input_tokens=M, cached_tokens=M // 2, cache_hit=True, feature="answer",
                  feedback="down"),
            event("a3", at, input_tokens=M, feature="answer", feedback="down"),
            event("a4", at, input_tokens=M, feature="answer", status="error"),
            event("x1", at, model="gpt-4o", input_tokens=M, feature="escalate", status="timeout"),
        ],
    )  # fmt: skip
    ingest(
        application,
        "staging",
        [event("s1", at, input_tokens=M, feature="answer"), event("s2", at, input_tokens=M)],
    )
    rollup()
    return application


def test_rates_per_model_feature_and_environment(signals, viewer_client):
    response = viewer_client.get(url(signals))
    board = response.context["board"]
    totals = board.totals
    assert (totals["errors"], totals["error_pct"]) == (2, round(100 * 2 / 7, 2))
    assert (totals["rated"], totals["thumbs_down"], totals["thumbs_down_pct"]) == (3, 2, 66.67)
    assert totals["cache_hit_pct"] == round(100 * 2 / 7, 2)

    def by(name):
        return {r["label"]: r for r in board.breakdowns[name]}

    env = by("environment")
    assert (env["prod"]["error_pct"], env["prod"]["thumbs_down_pct"]) == (40.0, 66.67)
    assert env["prod"]["cache_hit_pct"] == 40.0
    assert (env["staging"]["error_pct"], env["staging"]["cache_hit_pct"]) == (0.0, 0.0)
    assert env["staging"]["thumbs_down_pct"] is None  # nobody rated: no rate, not 0 %
    model = by("model")
    assert model["gpt-4o"]["error_pct"] == 100.0 and model["gpt-4o"]["rated"] == 0
    assert model["gpt-4o-mini"]["error_pct"] == round(100 / 6, 2)
    feature = by("feature")
    assert feature["answer"]["thumbs_down_pct"] == 66.67
    assert feature["(none)"]["requests"] == 1

    page = text(response)
    assert "Errors, feedback and cache hits" in page
    assert "Error rate 28.6% 2 failed or timed out" in page
    assert "Thumbs down 66.7% of 3 rated responses" in page
    assert "Cache hit rate 28.6%" in page
    # prod's row in the environment group: 5 requests, 40 % errors, 2 of 3 rated down.
    assert "prod 5 40.0% (2) 66.7% (2 of 3) 40.0%" in page
    assert "staging 2 0.0% — 0.0%" in page


def test_no_usage_shows_dashes_not_zero(application, viewer_client):
    response = viewer_client.get(url(application))
    totals = response.context["board"].totals
    assert totals["error_pct"] is None and totals["thumbs_down_pct"] is None
    page = text(response)
    assert "Error rate —" in page and "Thumbs down — no ratings reported" in page
    assert "Cache hit rate —" in page


def test_evals_are_a_source_not_a_nameless_environment(signals, viewer_client):
    services.ingest(
        application=signals,
        environment=None,
        events=[event("e1", hour_ago(2), input_tokens=M, feature="eval")],
        source="eval",
    )
    rollup()
    response = viewer_client.get(url(signals))
    labels = [r["label"] for r in response.context["board"].breakdowns["environment"]]
    assert set(labels) == {"prod", "staging", "eval"}
    page = text(response)
    assert "(none)" not in "".join(labels)
    assert "eval source 1" in page  # the eval row, marked as a source
    csv_rows = viewer_client.get(
        f"/apps/{signals.key}/usage/export.csv", {"view": "environment"}
    ).content.decode()
    assert "\neval," in csv_rows and "(none)" not in csv_rows


def test_eval_spend_includes_the_judge_calls_as_the_run_page_shows(
    application, engineer, simulator_url, viewer_client
):
    # The price history matches the model configs' prices (as seed_demo sets them up).
    price(application, "gpt-4o-mini", timezone.now() - timedelta(days=1), "0.15", "0.075", "0.6")
    price(application, "gpt-4o", timezone.now() - timedelta(days=1), "2.50", "1.25", "10")
    demo = build_demo(application, engineer, simulator_url)
    run = evals.launch_run(**demo.launch_kwargs(judged=True))
    assert evals.execute_run(run.pk).status == EvalRun.Status.COMPLETED
    run.refresh_from_db()
    judge_cost = Decimal(str(run.metrics["cost_judge"]))
    assert judge_cost > Decimal(str(run.metrics["cost_model"])) > 0  # the judge dominates

    judge_events = UsageEvent.objects.filter(event_id__endswith="-judge")
    assert judge_events.count() == 60
    assert {(e.source, e.feature, e.model, e.model_config) for e in judge_events} == {
        ("eval", "eval", "gpt-4o", "judge@1")
    }
    assert abs(sum(e.cost for e in judge_events) - judge_cost) < Decimal("0.000001")
    # Recording again stores nothing new (a redelivered task).
    assert evals.record_eval_usage(EvalRun.objects.get(pk=run.pk)) == 0

    rollup()
    response = viewer_client.get(url(application))
    eval_cost = response.context["board"].totals["eval_cost"]
    assert abs(eval_cost - Decimal(str(run.spend))) < Decimal("0.00001")
    assert f"${Decimal(str(run.spend)):.2f}" in text(response)

    # A price correction for the judge's model reprices tokens; the judge events carry none,
    # so they keep the cost the run recorded.
    price(application, "gpt-4o", timezone.now() - timedelta(hours=12), "5", "2.5", "20")
    assert abs(sum(e.cost for e in judge_events.all()) - judge_cost) < Decimal("0.000001")


def test_dashboard_with_rates_stays_bounded(signals, viewer_client, django_assert_max_num_queries):
    filters, _ = selectors.UsageFilters.from_query({}, timezone.now().date())
    with django_assert_max_num_queries(MAX_DASHBOARD_QUERIES):
        viewer_client.get(url(signals))
    assert selectors.dashboard(signals, filters, timezone.now().date()).totals["requests"] == 7
