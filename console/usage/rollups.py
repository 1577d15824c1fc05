"""Folding hourly rollups into daily ones. Takes the model classes as arguments so the data
migration that backfills UsageDaily can call it with its historical models."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

DIMENSIONS = (
    "environment_id",
    "model",
    "prompt_version",
    "feature",
    "flag",
    "variant",
    "shadow",
    "source",
)
SUMS = (
    "requests",
    "errors",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "cost",
    "cost_squares",
    "cache_savings",
    "cache_hits",
    "thumbs_up",
    "thumbs_down",
)


def fold(
    hourly: Iterable[dict], dimensions: tuple = DIMENSIONS, sums: tuple = SUMS
) -> dict[tuple, dict]:
    """Sum hourly rows (dicts with `hour`, DIMENSIONS, SUMS and `latency_buckets`) per UTC day and
    dimensions. Latency histograms are summed bucket by bucket."""
    days: dict[tuple, dict] = {}
    for row in hourly:
        day = row["hour"].astimezone(UTC).date()
        key = (day, *(row[k] for k in dimensions))
        entry = days.get(key)
        if entry is None:
            entry = days[key] = {"day": day, **{k: row[k] for k in dimensions}}
            entry.update({k: 0 for k in sums})
            entry["cost"] = entry["cache_savings"] = Decimal(0)
            entry["latency_buckets"] = []
        for k in sums:
            entry[k] += row[k] or 0
        buckets = entry["latency_buckets"]
        for n, count in enumerate(row["latency_buckets"] or []):
            if n < len(buckets):
                buckets[n] += count
            else:
                buckets.append(count)
    return days


def rebuild_days(hourly_model, daily_model, application_id: int, days: Iterable[date]) -> int:
    """Replace the daily rows of these UTC days with the sum of their hourly rows."""
    days = sorted(set(days))
    # A data migration passes historical models, which may predate some columns.
    columns = {f.attname for f in hourly_model._meta.concrete_fields}
    dimensions = tuple(k for k in DIMENSIONS if k in columns)
    sums = tuple(k for k in SUMS if k in columns)
    written = 0
    for start in range(0, len(days), 31):
        chunk = days[start : start + 31]
        daily_model.objects.filter(application_id=application_id, day__in=chunk).delete()
        rows = []
        for first, last in _runs(chunk):
            hourly = hourly_model.objects.filter(
                application_id=application_id,
                hour__gte=datetime.combine(first, time.min, UTC),
                hour__lt=datetime.combine(last + timedelta(days=1), time.min, UTC),
            ).values("hour", *dimensions, *sums, "latency_buckets")
            for entry in fold(hourly.iterator(chunk_size=5000), dimensions, sums).values():
                rows.append(daily_model(application_id=application_id, **entry))
        daily_model.objects.bulk_create(rows, batch_size=2000)
        written += len(rows)
    return written


def _runs(days: list[date]) -> list[tuple[date, date]]:
    """Consecutive stretches of the sorted days, so each stretch is one range scan."""
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs
