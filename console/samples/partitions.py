"""Day partitions of the samples table on PostgreSQL (range on `at`, one partition per UTC
day, named samples_sample_pYYYYMMDD). Ingestion makes sure the days of its batch exist; beat
makes the next days ahead of time and drops the days past retention, whole, without a DELETE.

Other databases (SQLite for `make run`) keep one plain table: there, `ensure` does nothing and
retention deletes rows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction

TABLE = "samples_sample"
NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")
# One lock id for partition changes, so two ingesting workers creating the same day queue up
# instead of one failing on "relation already exists".
LOCK = 0x5A4D_504C

_known: set[date] = set()


def partitioned() -> bool:
    return connection.vendor == "postgresql"


def _bounds(day: date) -> tuple[str, str]:
    start = datetime.combine(day, time.min, UTC)
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


def existing() -> set[date]:
    """The days that have a partition."""
    if not partitioned():
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    return {datetime.strptime(m.group(1), "%Y%m%d").date() for n in names if (m := NAME.match(n))}


def ensure(days: Iterable[date]) -> list[date]:
    """Create the partitions of these days that do not exist yet; returns those created."""
    if not partitioned():
        return []
    wanted = set(days) - _known
    if not wanted:
        return []
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK])
        have = existing()
        for day in sorted(wanted - have):
            start, end = _bounds(day)
            cursor.execute(
                f'CREATE TABLE "{TABLE}_p{day:%Y%m%d}" PARTITION OF "{TABLE}" '
                "FOR VALUES FROM (%s) TO (%s)",
                [start, end],
            )
            created.append(day)
    # Remembered only once the transaction that made them is over (the caller's, if any).
    transaction.on_commit(lambda: _known.update(wanted))
    return created


def drop_before(day: date) -> list[date]:
    """Drop the partitions of the days before `day` (retention); returns the days dropped."""
    if not partitioned():
        return []
    dropped = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK])
        for old in sorted(d for d in existing() if d < day):
            name = f"{TABLE}_p{old:%Y%m%d}"
            cursor.execute(f'ALTER TABLE "{TABLE}" DETACH PARTITION "{name}"')
            cursor.execute(f'DROP TABLE "{name}"')
            dropped.append(old)
    _known.difference_update(dropped)
    return dropped


def forget() -> None:
    """Clear the cache of days known to exist (tests that drop partitions behind its back)."""
    _known.clear()
