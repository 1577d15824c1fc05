"""`manage.py audit_verify`: silent success on an intact chain, and the first broken seq for every
kind of tampering (raw SQL on SQLite; on PostgreSQL by someone who first disables the trigger)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.utils import DatabaseError

from console.audit.models import AuditEvent
from console.audit.services import Actor
from console.audit.verify import verify_chain
from tests.audit.helpers import (
    TAMPERING,
    bypass_trigger,
    chain,
    delete_row,
    edit_reason,
    record_at,
    rehash_one,
    swap_with_next,
)

TAMPERED_SEQ = 4  # a row in the middle of the 8-event chain


@pytest.fixture
def sqlite(db):
    if connection.vendor != "sqlite":
        pytest.skip("raw tampering on PostgreSQL is covered by the trigger-bypass variant")
    return connection


@pytest.fixture
def events(application):
    """Eight events: the application fixture's own, then seven more at distinct times."""
    start = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    for i in range(7):
        record_at(
            start + timedelta(minutes=i, microseconds=i * 7),
            actor=Actor("user", 100 + i, f"user{i}"), action="prompt.version.create",
            object_type="prompt", object_id=1, object_label=f"answer@{i + 2}",
            application=application, before={"v": i}, after={"v": i + 1, "t": 0.5}, reason=f"r{i}",
        )  # fmt: skip
    assert [e.seq for e in chain()] == list(range(1, 9))
    return chain()


def verify() -> str:
    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def assert_broken_at(seq: int) -> None:
    with pytest.raises(CommandError) as failure:
        verify()
    message = str(failure.value)
    assert re.search(rf"\bseq {seq}\b", message), message
    assert f"({seq - 1} events verified before it)" in message


def test_intact_chain_exits_zero_printing_the_count(events):
    assert verify().strip() == f"audit chain intact: {len(events)} events"


def test_empty_log_is_intact(db):
    assert verify().strip() == f"audit chain intact: {AuditEvent.objects.count()} events"


def test_verify_reads_in_chunks(events):
    for chunk_size in (1, 3, 8, 100):
        result = verify_chain(chunk_size=chunk_size)
        assert (result.ok, result.count) == (True, 8)


@pytest.mark.parametrize("tamper", TAMPERING)
def test_raw_sql_tampering_is_caught_at_the_first_broken_seq(sqlite, events, tamper):
    broken = tamper(TAMPERED_SEQ)
    assert_broken_at(broken)


@pytest.mark.parametrize("tamper", TAMPERING)
def test_tampering_that_bypasses_the_trigger_is_caught(postgres, events, tamper):
    bypass_trigger()
    broken = tamper(TAMPERED_SEQ)
    assert_broken_at(broken)


def test_postgres_trigger_blocks_the_same_tampering_when_not_bypassed(postgres, events):
    for tamper in (edit_reason, delete_row, swap_with_next, rehash_one):
        with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
            tamper(TAMPERED_SEQ)
    assert verify().strip() == "audit chain intact: 8 events"


@pytest.fixture
def tamperable(db):
    if connection.vendor == "postgresql":
        bypass_trigger()
    return connection


@pytest.mark.parametrize(
    ("tamper", "seq", "problem"),
    [
        (edit_reason, 1, "content does not match its hash"),
        (edit_reason, 8, "content does not match its hash"),
        (delete_row, 1, "event seq 1 is missing (next is 2)"),
        (delete_row, TAMPERED_SEQ, f"event seq {TAMPERED_SEQ} is missing"),
        (swap_with_next, 1, "prev_hash does not match"),
        (swap_with_next, 7, "prev_hash does not match"),
        (rehash_one, TAMPERED_SEQ, "prev_hash does not match"),
    ],
    ids=[
        "first-edited", "last-edited", "first-deleted", "middle-deleted", "first-two-swapped",
        "last-two-swapped", "rehashed",
    ],
)  # fmt: skip
def test_verify_names_the_first_broken_seq_and_why(tamperable, events, tamper, seq, problem):
    broken = tamper(seq)
    result = verify_chain()
    assert (result.ok, result.broken_seq, result.count) == (False, broken, broken - 1)
    assert problem in result.problem


def test_only_the_first_break_is_reported(tamperable, events):
    edit_reason(6)
    edit_reason(3)
    assert_broken_at(3)
