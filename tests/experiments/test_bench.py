"""The experiment report's bench, at a tiny size and through `manage.py bench_samples
--experiment-events`: the figures come from a real report over the events it stored and
folded, printed in the command's one JSON line, and it leaves no usage rows behind."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.db import connection

from console.releases.models import ShadowDeployment
from console.usage.models import UsageEvent, UsageHourly


@pytest.mark.usefixtures("postgres")
def test_bench_samples_times_the_experiment_report_over_events_it_stored():
    # Ids that rolled-back transactions took leave a gap after the rollup watermark: the
    # bench still folds every event it stored.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('usage_usageevent', 'id'),"
            " nextval(pg_get_serial_sequence('usage_usageevent', 'id')) + 5000)"
        )
    out = io.StringIO()
    call_command(
        "bench_samples", stdout=out, stderr=io.StringIO(), skip=["ingest"],
        experiment_events=3_000,
    )  # fmt: skip
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])["experiment_report"]
    assert figures["experiment_requests"] == 3_000  # every event read back through the report
    assert figures["rollup_events"] == 3_000
    assert figures["experiment_rollup_rows"] > 0
    assert 0 < figures["experiment_report_ms"] <= figures["experiment_report_max_ms"]
    assert figures["experiment_verdict"] in {"collecting", "inconclusive", "winner", "mixed"}
    assert not UsageEvent.objects.exists() and not UsageHourly.objects.exists()


@pytest.mark.usefixtures("postgres")
def test_bench_samples_times_the_shadow_comparison_over_pairs_it_stored():
    out = io.StringIO()
    call_command(
        "bench_samples", stdout=out, stderr=io.StringIO(), skip=["ingest"], shadow_events=5_000
    )
    figures = json.loads(out.getvalue().strip())["shadow_comparison"]
    assert figures["shadow_calls"] == 1_000
    assert figures["shadow_pairs"] == 1_000  # every shadow call found its live call
    assert 0 < figures["shadow_comparison_ms"] <= figures["shadow_comparison_max_ms"]
    assert figures["shadow_status"] in {"collecting", "worse", "no worse"}
    assert not UsageEvent.objects.exists()
    assert not ShadowDeployment.objects.filter(active=True).exists()  # the bench's shadow ended
