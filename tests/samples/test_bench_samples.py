"""`manage.py bench_samples` at a small scale: it starts the production web server against the
test database, posts real batches through /api/v1/samples, and checks that every accepted
sample was stored and every planted email or phone number redacted; with --monitor-samples it
writes a month (here two days) of samples, folds them and times the monitor sweep over them."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from console.samples.models import Monitor, Sample, SampleHourly

pytestmark = pytest.mark.services


def test_bench_samples_ingests_and_redacts_through_the_real_server(postgres_tx):
    out = io.StringIO()
    call_command(
        "bench_samples", stdout=out, stderr=io.StringIO(), seconds=1.5, batch=40, threads=2,
        workers=1, keep=True,
    )  # fmt: skip
    result = json.loads(out.getvalue())
    assert result["bench"] == "samples" and result["errors"] == 0
    assert result["samples"] >= 40 and result["samples"] % 40 == 0
    assert 1500 <= result["avg_sample_bytes"] <= 2500
    stored = Sample.objects.filter(application__key__startswith="bench-samples-")
    assert stored.count() == result["samples"]
    assert result["stored_redactions"] == result["planted"]


def test_bench_samples_times_the_monitor_sweep_over_folded_samples(postgres_tx):
    out = io.StringIO()
    call_command(
        "bench_samples", stdout=out, stderr=io.StringIO(), skip=["ingest"],
        monitor_samples=6_000, monitor_days=2, monitor_runs=2, keep=True,
    )  # fmt: skip
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["bench"] == "samples" and "samples_per_s" not in result  # ingestion skipped
    sweep = result["monitor_sweep"]
    assert (sweep["samples"], sweep["days"], sweep["monitors"]) == (6_000, 2, 12)
    assert sweep["outcome"]["checked"] == 12 and sweep["outcome"]["failed"] == 0
    assert len(sweep["runs_s"]) == 2 and sweep["seconds"] == sweep["runs_s"][0] > 0
    assert sweep["agrees_with_raw"] is True
    assert sweep["quality_counts_every_sample"] is True and sweep["quality_ms"] > 0
    assert sweep["quality_rows"] >= 2  # two days at least, of one prompt version or more
    stored = Sample.objects.filter(application__key__startswith="bench-monitors-")
    assert stored.count() == 6_000
    folded = SampleHourly.objects.filter(application__key__startswith="bench-monitors-")
    assert sweep["rollup_rows"] == folded.count() > 0
    assert sum(folded.values_list("samples", flat=True)) == 6_000  # every sample folded
    monitors = Monitor.objects.filter(application__key__startswith="bench-monitors-")
    assert all(m.last_check["n"] > 0 for m in monitors if m.metric == "refusal_rate")
