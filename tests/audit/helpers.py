"""Helpers for the audit tests: events at chosen times, new-event capture, raw-SQL tampering."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models import Max

from console.audit import services as audit
from console.audit.models import GENESIS_HASH, AuditEvent
from console.audit.services import legacy_event_hash, seal
from console.core.canonical import normalise


def last_seq() -> int:
    return AuditEvent.objects.aggregate(m=Max("seq"))["m"] or 0


@contextmanager
def new_events() -> Iterator[list[AuditEvent]]:
    """Collect the events appended while the block runs (oldest first)."""
    start = last_seq()
    events: list[AuditEvent] = []
    yield events
    events.extend(AuditEvent.objects.filter(seq__gt=start).order_by("seq"))


def record_at(at: datetime, **kwargs) -> AuditEvent:
    """`audit.record` with the clock stopped at `at`, in its own (nested) transaction."""
    with mock.patch("django.utils.timezone.now", return_value=at), transaction.atomic():
        return audit.record(**kwargs)


def append_events(specs: list[dict]) -> list[AuditEvent]:
    """Bulk-append events (field dicts with an explicit `at`) to the chain, hashed like `record`
    does (signed with the newest key). Much faster than `record` one by one; used for large
    fixtures."""
    with transaction.atomic():
        last = AuditEvent.objects.order_by("-seq").only("seq", "hash").first()
        seq, prev = (last.seq, last.hash) if last else (0, GENESIS_HASH)
        events = []
        for spec in specs:
            seq += 1
            event = AuditEvent(seq=seq, prev_hash=prev, **spec)
            event.before = None if event.before is None else normalise(event.before)
            event.after = None if event.after is None else normalise(event.after)
            prev = seal(event).hash
            events.append(event)
        AuditEvent.objects.bulk_create(events)
    return events


def chain() -> list[AuditEvent]:
    return list(AuditEvent.objects.order_by("seq"))


# --- raw SQL tampering --------------------------------------------------------------------------


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def bypass_trigger() -> None:
    """What a superuser bent on rewriting history would do first (PostgreSQL; rolled back with
    the test transaction)."""
    sql("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")


def _json(param: str) -> str:
    return f"CAST({param} AS jsonb)" if is_postgres() else param


def edit_reason(seq: int) -> int:
    sql("UPDATE audit_auditevent SET reason = %s WHERE seq = %s", ["nothing to see here", seq])
    return seq


def edit_after(seq: int) -> int:
    sql(
        f'UPDATE audit_auditevent SET "after" = {_json("%s")} WHERE seq = %s',
        ['{"role": "admin", "user": "mallory"}', seq],
    )
    return seq


def edit_actor(seq: int) -> int:
    sql("UPDATE audit_auditevent SET actor_label = %s WHERE seq = %s", ["someone-else", seq])
    return seq


def delete_row(seq: int) -> int:
    sql("DELETE FROM audit_auditevent WHERE seq = %s", [seq])
    return seq  # verify reports the missing seq


def swap_with_next(seq: int) -> int:
    """Reorder two rows by exchanging their seq values (via a spare value: seq is the key)."""
    sql("UPDATE audit_auditevent SET seq = %s WHERE seq = %s", [-1, seq])
    sql("UPDATE audit_auditevent SET seq = %s WHERE seq = %s", [seq, seq + 1])
    sql("UPDATE audit_auditevent SET seq = %s WHERE seq = %s", [seq + 1, -1])
    return seq


def rehash_one(seq: int) -> int:
    """Edit a row and recompute its own hash locally (with the right key), leaving its successors
    alone."""
    edit_reason(seq)
    event = seal(AuditEvent.objects.get(seq=seq))
    sql("UPDATE audit_auditevent SET hash = %s WHERE seq = %s", [event.hash, seq])
    return seq + 1  # the row itself is consistent now; its successor's prev_hash is not


def rechain_from(seq: int, key: tuple[str, bytes] | None = None, *, unkeyed: bool = False) -> int:
    """Edit a row and recompute its hash and every later one, as someone who can write the table
    would: with `key` (a guessed or wrong one), or with the old unkeyed formula."""
    edit_reason(seq)
    events = list(AuditEvent.objects.filter(seq__gte=seq).order_by("seq"))
    prev = AuditEvent.objects.get(seq=seq - 1).hash if seq > 1 else GENESIS_HASH
    for event in events:
        event.prev_hash = prev
        if unkeyed:
            event.key_id, event.hash = "", legacy_event_hash(prev, event.chained_fields())
        else:
            seal(event, key)
        sql(
            "UPDATE audit_auditevent SET prev_hash = %s, hash = %s, key_id = %s WHERE seq = %s",
            [event.prev_hash, event.hash, event.key_id, event.seq],
        )
        prev = event.hash
    return seq


def delete_newest(count: int) -> int:
    """Delete the newest `count` events; returns the first deleted seq."""
    first = last_seq() - count + 1
    sql("DELETE FROM audit_auditevent WHERE seq >= %s", [first])
    return first


TAMPERING = [
    pytest.param(edit_reason, id="edited-reason"),
    pytest.param(edit_after, id="edited-after"),
    pytest.param(edit_actor, id="edited-actor"),
    pytest.param(delete_row, id="deleted-middle-row"),
    pytest.param(swap_with_next, id="reordered-rows"),
    pytest.param(rehash_one, id="rehashed-row-not-successors"),
]
