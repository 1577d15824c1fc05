"""/metrics carries the applications' AI metrics: traffic, errors, tokens and spend by
application, environment and version; judged quality; open monitor alerts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from console.samples import monitors, services
from console.samples.models import Sample
from console.usage import services as usage
from tests.samples.conftest import sample

pytestmark = pytest.mark.django_db


def scrape(client, settings) -> dict[tuple, float]:
    """Samples by (name, labels in any order) → value."""
    settings.METRICS_TOKEN = "metrics-token-for-tests"
    body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-for-tests")
    assert body.status_code == 200
    seen = {}
    for line in body.content.decode().splitlines():
        if line.startswith("airlock_"):
            key, value = line.rsplit(" ", 1)
            name, _, labels = key.partition("{")
            seen[(name, frozenset(labels.rstrip("}").split(",")) - {""})] = float(value)
    return seen


def series(name: str, **labels) -> tuple:
    return (name, frozenset(f'{k}="{v}"' for k, v in labels.items()))


def test_ai_metrics_by_application_environment_and_version(client, settings, application, engineer):
    prod = application.environments.get(key="prod")
    at = (timezone.now() - timedelta(minutes=5)).isoformat()
    usage.ingest(
        application=application, environment=prod,
        events=[
            {"event_id": f"e-{i}", "time": at, "model": "gpt-4o-mini", "input_tokens": 100,
             "output_tokens": 20, "status": "error" if i == 0 else "ok",
             "prompt_version": "answer@3"}
            for i in range(4)
        ],
    )  # fmt: skip
    usage.rollup(settle=timedelta(0))
    services.ingest(
        application=application, environment=prod,
        samples=[sample(f"s-{i}", prompt_version="answer@3") for i in range(3)],
    )  # fmt: skip
    Sample.objects.update(judge_state="done", faithfulness=0.5, relevance=0.75)
    services.create_monitor(
        actor=engineer, application=application, environment=prod, metric="faithfulness",
        min_samples=1,
    )  # fmt: skip
    Sample.objects.create(
        application=application, environment=prod, sample_id="old", prompt_version="answer@3",
        at=timezone.now() - timedelta(hours=3), judge_state="done", faithfulness=1.0,
    )  # fmt: skip
    assert monitors.sweep()["raised"] == 1
    seen = scrape(client, settings)
    labels = {"application": application.key, "environment": "prod", "version": "answer@3"}
    assert seen[series("airlock_ai_requests_total", **labels)] == 4
    assert seen[series("airlock_ai_errors_total", **labels)] == 1
    assert seen[series("airlock_ai_tokens_total", **labels, direction="input")] == 400
    assert seen[series("airlock_ai_tokens_total", **labels, direction="output")] == 80
    assert seen[series("airlock_ai_cost_dollars_total", **labels)] >= 0
    assert seen[series("airlock_ai_quality", **labels, metric="relevance")] == 0.75
    assert seen[series("airlock_ai_samples_judged", **labels)] == 4
    open_alerts = series(
        "airlock_monitor_alerts_open", application=application.key, environment="prod",
        severity="critical",
    )  # fmt: skip
    assert seen[open_alerts] == 1
