"""`manage.py bench_samples` at a small scale: it starts the production web server against the
test database, posts real batches through /api/v1/samples, and checks that every accepted
sample was stored and every planted email or phone number redacted."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from console.samples.models import Sample

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
