"""`manage.py bench_audit` on a small scale: it appends a valid chain, tops up instead of refilling,
measures every page and prints one JSON line."""

from __future__ import annotations

import json
from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command

from console.audit import selectors
from console.audit.models import AuditEvent
from console.audit.verify import verify_chain
from console.ops.management.commands.bench_audit import BENCH_TAG, READER

PAGES = {
    "unfiltered", "action", "action_rare", "action_prefix", "action_prefix_no_match", "actor",
    "application", "date_range", "date_range_oldest_week", "object_prefix",
    "object_prefix_no_match", "later_page", "tiny_app_member",
}  # fmt: skip
MEMBER_OF = {"bench-alpha", "bench-beta", "bench-gamma"}


def bench(**options) -> dict:
    out, err = StringIO(), StringIO()
    call_command("bench_audit", runs=1, chunk=400, stdout=out, stderr=err, **options)
    [line] = out.getvalue().splitlines()
    return json.loads(line)


def test_bench_fills_a_valid_chain_and_reports_every_page(application):
    before = AuditEvent.objects.count()
    result = bench(events=1000)
    assert result["bench_events"] == result["filled"] == 1000
    assert AuditEvent.objects.filter(request_id=BENCH_TAG).count() == 1000
    assert result["events_total"] == AuditEvent.objects.count() > before + 1000  # + setup events
    assert result["verify_ok"] is True
    assert result["verify"] == f"audit chain intact: {result['events_total']} events"
    verified = verify_chain()
    assert verified.ok and verified.count == result["events_total"]
    assert set(result["pages"]) == PAGES
    for name, page in result["pages"].items():
        assert page["ms"] > 0 and page["queries"] >= 3, name
    assert result["pages"]["unfiltered"]["rows"] == 50
    assert result["pages"]["later_page"]["rows"] == 50
    assert result["pages"]["object_prefix_no_match"]["rows"] == 0
    # spread over the applications; the reader belongs to three and never sees the others
    bench_events = AuditEvent.objects.filter(request_id=BENCH_TAG)
    spread = set(bench_events.values_list("application__key", flat=True))
    assert MEMBER_OF | {"bench-delta"} <= spread
    assert len(set(bench_events.values_list("action", flat=True))) >= 8
    assert len(set(bench_events.values_list("actor_label", flat=True))) >= 5
    reader = get_user_model().objects.get(username=READER)
    visible = selectors.search(reader, selectors.AuditFilters()).filter(request_id=BENCH_TAG)
    assert set(visible.values_list("application__key", flat=True)) == MEMBER_OF


def test_bench_does_not_refill_and_tops_up_a_shortfall(db):
    bench(events=600, no_verify=True)
    again = bench(events=600, no_verify=True)
    assert again["filled"] == 0 and again["bench_events"] == 600
    assert "verify_ms" not in again
    more = bench(events=900)
    assert more["filled"] == 300 and more["bench_events"] == 900
    assert more["verify_ok"] is True
    assert AuditEvent.objects.filter(request_id=BENCH_TAG).count() == 900
    assert get_user_model().objects.filter(username=READER).count() == 1
