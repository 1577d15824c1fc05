"""`manage.py bench_usage` ingestion phase at a small scale: it starts the production web
server against the test database, posts real batches through /api/v1/usage, and every event it
counts as accepted is stored (fresh ids on every request, none refused)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from console.usage.models import UsageEvent

pytestmark = pytest.mark.services


def test_bench_usage_ingests_through_the_real_server(postgres_tx):
    out = io.StringIO()
    call_command(
        "bench_usage",
        stdout=out,
        stderr=io.StringIO(),
        ingest_seconds=1.5,
        batch=50,
        threads=2,
        workers=1,
        skip=["rollup", "dashboard"],
    )
    result = json.loads(out.getvalue())
    ingest = result["ingest"]
    assert ingest["failed_requests"] == 0
    assert ingest["requests"] >= 2
    assert ingest["events"] == ingest["requests"] * 50
    assert ingest["events_per_s"] == pytest.approx(ingest["events"] / ingest["seconds"], rel=0.01)
    stored = UsageEvent.objects.filter(application__key__startswith="bench-ingest-")
    assert stored.count() == ingest["events"]
    assert stored.values("event_id").distinct().count() == ingest["events"]
    assert stored.filter(cost__gt=0).count() == ingest["events"]  # priced server-side
