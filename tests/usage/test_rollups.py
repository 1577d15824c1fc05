"""Hourly rollups against the raw events they summarise (requests, errors, tokens, cost, cache
hits, feedback, latency buckets), late events, idempotent re-runs, and raw-event retention."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections import defaultdict
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.db.models import Min, Sum
from django.utils import timezone

from console.usage import services
from console.usage.models import (
    LATENCY_BUCKETS_MS,
    RollupState,
    UsageDaily,
    UsageEvent,
    UsageHourly,
)
from tests.usage.helpers import event, hour_ago, ingest, price, rollup

pytestmark = pytest.mark.django_db
FEEDBACK = {"up": 1, "down": -1, "none": 0}


def random_events(rng: random.Random, n: int, hours: list, prefix: str) -> list[dict]:
    events = []
    for i in range(n):
        input_tokens = rng.randint(100, 5000)
        latency = rng.choice([None, 10, 24.9, 25, 99, 150, 400, 799.9, 3000, 12800, 40000])
        events.append(
            event(
                f"{prefix}-{i}",
                rng.choice(hours) + timedelta(minutes=rng.randint(0, 59), seconds=30),
                model=rng.choice(["gpt-4o-mini", "gpt-4o"]),
                prompt_version=rng.choice(["answer@1", "answer@2", ""]),
                feature=rng.choice(["answer", "summarise"]),
                input_tokens=input_tokens,
                cached_tokens=rng.choice([0, input_tokens // 2]),
                output_tokens=rng.randint(0, 800),
                latency_ms=latency,
                status=rng.choices(["ok", "error", "timeout"], [0.8, 0.15, 0.05])[0],
                cache_hit=rng.random() < 0.3,
                feedback=rng.choice(["up", "down", "none", None]),
            )
        )
    return events


def expected_rollups(application) -> dict[tuple, dict]:
    """Recompute every hourly row straight from the stored raw events, in Python."""
    rows: dict[tuple, dict] = defaultdict(
        lambda: {
            "requests": 0,
            "errors": 0,
            "input_tokens": 0,
            "cached_tokens": 0,
            "output_tokens": 0,
            "cost": Decimal(0),
            "cache_savings": Decimal(0),
            "cache_hits": 0,
            "thumbs_up": 0,
            "thumbs_down": 0,
            "latency_buckets": [0] * (len(LATENCY_BUCKETS_MS) + 1),
        }
    )
    for e in UsageEvent.objects.filter(application=application):
        hour = e.at.replace(minute=0, second=0, microsecond=0)
        row = rows[(hour, e.environment_id, e.model, e.prompt_version, e.feature, e.source)]
        row["requests"] += 1
        row["errors"] += e.status != "ok"
        row["input_tokens"] += e.input_tokens
        row["cached_tokens"] += e.cached_tokens
        row["output_tokens"] += e.output_tokens
        row["cost"] += e.cost
        row["cache_savings"] += e.savings
        row["cache_hits"] += e.cache_hit
        row["thumbs_up"] += e.feedback == 1
        row["thumbs_down"] += e.feedback == -1
        if e.latency_ms is not None:
            row["latency_buckets"][bisect_right(LATENCY_BUCKETS_MS, e.latency_ms)] += 1
    return dict(rows)


def daily_of(hourly: dict[tuple, dict]) -> dict[tuple, dict]:
    """The expected daily rows: hourly rows summed per UTC day, buckets element-wise."""
    days: dict[tuple, dict] = {}
    for (hour, *dims), values in hourly.items():
        key = (hour.astimezone(UTC).date(), *dims)
        if key not in days:
            days[key] = {**values, "latency_buckets": list(values["latency_buckets"])}
            continue
        for name, value in values.items():
            if name == "latency_buckets":
                days[key][name] = [a + b for a, b in zip(days[key][name], value, strict=True)]
            else:
                days[key][name] += value
    return days


def stored_daily(application) -> dict[tuple, dict]:
    return _stored(UsageDaily.objects.filter(application=application), "day")


ROLLUP_FIELDS = (
    "requests",
    "errors",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "cost",
    "cache_savings",
    "cache_hits",
    "thumbs_up",
    "thumbs_down",
    "latency_buckets",
)


def assert_rollups_match_events(application) -> None:
    expected = expected_rollups(application)
    assert stored_rollups(application) == expected
    assert stored_daily(application) == daily_of(expected)


def stored_rollups(application) -> dict[tuple, dict]:
    return _stored(UsageHourly.objects.filter(application=application), "hour")


def _stored(rows, period: str) -> dict[tuple, dict]:
    return {
        (getattr(r, period), r.environment_id, r.model, r.prompt_version, r.feature, r.source): {
            name: getattr(r, name) for name in ROLLUP_FIELDS
        }
        for r in rows
    }


@pytest.fixture
def priced(application):
    start = timezone.now() - timedelta(days=400)
    price(application, "gpt-4o-mini", start, "0.15", "0.075", "0.60")
    price(application, "gpt-4o", start, "2.5", "1.25", "10")
    return application


def test_rollups_equal_the_raw_events_they_summarise(priced):
    rng = random.Random(7)
    hours = [hour_ago(h) for h in (1, 2, 5, 26, 49)]
    ingest(priced, "prod", random_events(rng, 300, hours, "prod"))
    ingest(priced, "staging", random_events(rng, 120, hours, "staging"))
    services.ingest(
        application=priced,
        environment=None,
        events=random_events(rng, 40, hours, "eval"),
        source="eval",
    )
    result = rollup()
    assert result["events"] == 460
    assert result["hours"] == 5
    expected = expected_rollups(priced)
    stored = stored_rollups(priced)
    assert result["rows"] == len(stored) == len(expected)
    assert stored == expected
    assert stored_daily(priced) == daily_of(expected)
    assert len(stored_daily(priced)) < len(stored)  # five hours span at most three days
    # A spot check with numbers worked out by hand, independent of the loop above.
    ingest(
        priced,
        "prod",
        [
            event("hand-1", hour_ago(3) + timedelta(minutes=1), model="gpt-4o", feature="hand",
                  input_tokens=1_000_000, output_tokens=100_000, latency_ms=30, feedback="up"),
            event("hand-2", hour_ago(3) + timedelta(minutes=2), model="gpt-4o", feature="hand",
                  input_tokens=1_000_000, cached_tokens=1_000_000, latency_ms=900,
                  status="timeout", cache_hit=True, feedback="down"),
        ],
    )  # fmt: skip
    rollup()
    row = UsageHourly.objects.get(feature="hand")
    assert (row.requests, row.errors, row.cache_hits, row.thumbs_up, row.thumbs_down) == (
        2, 1, 1, 1, 1,
    )  # fmt: skip
    assert (row.input_tokens, row.cached_tokens, row.output_tokens) == (
        2_000_000,
        1_000_000,
        100_000,
    )
    assert row.cost == Decimal("2.5") + Decimal("1") + Decimal("1.25")
    assert row.cache_savings == Decimal("1.25")
    assert row.latency_buckets == [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert row.environment.key == "prod" and row.hour == hour_ago(3)


def test_late_events_fold_into_hours_already_rolled_up(priced):
    rng = random.Random(11)
    hours = [hour_ago(1), hour_ago(6)]
    ingest(priced, "prod", random_events(rng, 50, hours, "first"))
    rollup()
    before = UsageHourly.objects.aggregate(n=Sum("requests"))["n"]
    assert before == 50
    # Late: one into an hour already rolled up, one into an hour seen for the first time.
    ingest(
        priced,
        "prod",
        [
            event("late-1", hour_ago(6) + timedelta(minutes=5), input_tokens=1000),
            event("late-2", hour_ago(30) + timedelta(minutes=5), input_tokens=1000),
        ],
    )
    result = rollup()
    assert result["events"] == 2 and result["hours"] == 2
    assert UsageHourly.objects.aggregate(n=Sum("requests"))["n"] == 52
    assert_rollups_match_events(priced)


def test_rollup_reruns_are_idempotent(priced):
    rng = random.Random(3)
    ingest(priced, "prod", random_events(rng, 80, [hour_ago(2), hour_ago(4)], "x"))
    rollup()
    first = stored_rollups(priced)
    assert rollup() == {"events": 0, "hours": 0, "rows": 0, "failed_applications": []}
    assert stored_rollups(priced) == first
    # Even a full rebuild from the beginning (watermark reset) lands on the same rows.
    RollupState.objects.filter(name="usage").update(last_event_id=0)
    assert rollup()["events"] == 80
    assert stored_rollups(priced) == first


def test_rollup_in_slices_catches_up_to_the_same_rows(priced):
    rng = random.Random(5)
    ingest(priced, "prod", random_events(rng, 90, [hour_ago(1), hour_ago(2), hour_ago(8)], "s"))
    # The watermark sits just below the batch (as after the previous pass); slices are id ranges.
    first = UsageEvent.objects.aggregate(m=Min("pk"))["m"]
    RollupState.objects.create(name="usage", last_event_id=first - 1)
    passes = 0
    while services.rollup(max_events=25, settle=timedelta(0))["events"]:
        passes += 1
    assert passes == 4
    assert_rollups_match_events(priced)


def test_events_still_settling_wait_for_the_next_pass(priced):
    ingest(priced, "prod", [event("fresh", hour_ago(1))])
    assert services.rollup()["events"] == 0  # received < 10 s ago
    assert not UsageHourly.objects.exists() and not UsageDaily.objects.exists()
    assert rollup()["events"] == 1


def test_retention_purges_only_rolled_up_events(priced, settings):
    settings.USAGE_RETENTION_DAYS = 365  # accepted when it arrived; the purge below is at 90
    old = timezone.now() - timedelta(days=100)
    ingest(priced, "prod", [event(f"old-{i}", old - timedelta(hours=i)) for i in range(5)])
    ingest(priced, "prod", [event("recent", hour_ago(2))])
    rollup()
    # Arrives after the rollup pass: old, but not yet in any rollup.
    ingest(priced, "prod", [event("old-unrolled", old - timedelta(hours=10))])
    totals = UsageHourly.objects.aggregate(n=Sum("requests"))["n"]
    assert totals == 6

    deleted = services.purge_raw_events(older_than_days=90)

    assert deleted == 5
    left = set(UsageEvent.objects.values_list("event_id", flat=True))
    assert left == {"recent", "old-unrolled"}
    assert UsageHourly.objects.aggregate(n=Sum("requests"))["n"] == 6  # history kept
    rollup()
    assert UsageHourly.objects.aggregate(n=Sum("requests"))["n"] == 7
    assert services.purge_raw_events(older_than_days=90) == 1


def test_a_late_event_for_a_purged_hour_keeps_the_hours_history(priced, settings):
    settings.USAGE_RETENTION_DAYS = 365
    old = (timezone.now() - timedelta(days=100)).replace(minute=0, second=0, microsecond=0)
    ingest(priced, "prod", [event(f"old-{i}", old + timedelta(minutes=i)) for i in range(3)])
    rollup()
    settings.USAGE_RETENTION_DAYS = 90
    services.purge_raw_events(older_than_days=90)
    # An event for a purged hour is older than the retention period: refused, by field, so
    # rebuilding that hour from raw events can never wipe its history.
    with pytest.raises(services.BatchRejected) as refused:
        ingest(priced, "prod", [event("straggler", old + timedelta(minutes=30))])
    assert refused.value.errors[0]["field"] == "time"
    assert "retention" in refused.value.errors[0]["message"]
    rollup()
    assert UsageHourly.objects.get(hour=old).requests == 3
