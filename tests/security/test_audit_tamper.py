"""The audit chain survives the database's owner: someone who can write (and un-trigger) the
table but holds neither the key (AIRLOCK_AUDIT_KEYS) nor the anchor file. `audit_verify` exits 1
naming the seq where the evidence disagrees."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from console.audit import tasks
from console.audit.models import GENESIS_HASH, AuditEvent
from console.audit.services import Actor, legacy_event_hash
from tests.audit.helpers import (
    bypass_trigger,
    chain,
    delete_newest,
    last_seq,
    rechain_from,
    record_at,
    sql,
)

K2 = "k2-" + "a" * 40
K1 = "k1-" + "b" * 40


@pytest.fixture
def keyed(production, tmp_path):
    production.AIRLOCK_AUDIT_KEYS = {"k2": K2, "k1": K1}
    production.AIRLOCK_AUDIT_ANCHOR_FILE = tmp_path / "audit-anchors.jsonl"
    return production


def add_events(n: int, start: datetime | None = None) -> None:
    start = start or datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    for i in range(n):
        record_at(
            start + timedelta(minutes=i),
            actor=Actor("user", 100 + i, f"user{i}"), action="prompt.version.create",
            object_type="prompt", object_id=1, object_label=f"answer@{i + 2}",
            before={"v": i}, after={"v": i + 1}, reason=f"r{i}",
        )  # fmt: skip


@pytest.fixture
def events(postgres, keyed):
    add_events(8)
    bypass_trigger()  # the attacker owns the database (rolled back with the test)
    return chain()


def verify() -> str:
    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue().strip()


def anchor() -> str:
    out = StringIO()
    call_command("audit_anchor", stdout=out)
    return out.getvalue().strip()


def assert_broken_at(seq: int, why: str = "") -> str:
    with pytest.raises(CommandError) as failure:
        verify()
    message = str(failure.value)
    assert re.search(rf"^audit chain broken at seq {seq}\b", message), message
    assert why in message
    return message


# --- a deleted tail ---------------------------------------------------------------------------


def test_deleting_the_newest_events_after_an_anchor_names_the_first_missing_seq(events):
    assert anchor() == f"anchored seq 8 ({events[-1].hash[:12]}…, key k2)"
    first_deleted = delete_newest(3)
    assert first_deleted == 6
    message = assert_broken_at(6, "records the chain up to seq 8")
    assert "(5 events verified before it)" in message


def test_deleting_the_newest_events_and_writing_new_ones_is_caught_at_the_anchor(events):
    anchor()
    delete_newest(3)
    add_events(3, start=datetime(2024, 6, 1, tzinfo=UTC))  # a valid keyed chain to seq 8 again
    assert last_seq() == 8
    assert_broken_at(8, "hash differs from the anchor")


def test_every_anchor_is_checked_not_only_the_last(events):
    anchor()  # seq 8
    add_events(2, start=datetime(2024, 6, 1, tzinfo=UTC))
    anchor()  # seq 10
    assert verify() == "audit chain intact: 10 events, 2 anchors agree"
    rechain_from(5, key=("k2", K2.encode()))  # even with the real key (a stolen one) ...
    assert_broken_at(8, "anchor file line 1")  # ... the older anchor disagrees


def test_a_tail_deleted_before_any_anchor_is_not_detectable_by_the_chain_alone(events):
    """What anchors are for: without one, a shortened chain is still a valid chain."""
    delete_newest(3)
    assert verify() == "audit chain intact: 5 events, 0 anchors agree"


# --- a re-chain without the key ---------------------------------------------------------------


def test_rechain_with_the_old_unkeyed_formula_names_the_edited_seq(events):
    rechain_from(4, unkeyed=True)
    assert_broken_at(4, "unkeyed event after keyed ones")


def test_rechain_with_a_wrong_key_names_the_edited_seq(events):
    edited = rechain_from(4, key=("k2", b"not the key"))
    assert edited == 4
    assert_broken_at(4, "content does not match its hash")


def test_rechain_with_an_invented_key_id_names_the_edited_seq(events):
    rechain_from(4, key=("k9", b"x" * 40))
    assert_broken_at(4, "signed with key 'k9', which AIRLOCK_AUDIT_KEYS lacks")


def test_rewriting_the_whole_chain_as_unkeyed_is_caught_by_an_anchor(events):
    anchor()
    rechain_from(1, unkeyed=True)  # every event now a valid legacy (unkeyed) chain
    assert_broken_at(8, "hash differs from the anchor")


# --- keys: legacy events, rotation ------------------------------------------------------------


def test_legacy_unkeyed_events_still_verify_and_the_keyed_chain_continues_from_them(
    postgres, keyed
):
    # Rows written before the chain was keyed: key_id "" and the old sha256 formula.
    prev = GENESIS_HASH
    for seq in (1, 2, 3):
        event = AuditEvent(
            seq=seq, at=datetime(2024, 1, seq, tzinfo=UTC), actor_type="system",
            actor_label="system", action="legacy.event", object_type="x", object_id=str(seq),
            object_label=f"old {seq}", prev_hash=prev,
        )  # fmt: skip
        event.hash = prev = legacy_event_hash(prev, event.chained_fields())
        event.save()
    add_events(2)
    first_keyed = AuditEvent.objects.get(seq=4)
    assert (first_keyed.key_id, first_keyed.prev_hash) == ("k2", prev)
    assert verify() == "audit chain intact: 5 events, 0 anchors agree"


def test_rotation_keeps_old_events_verifiable_while_their_key_is_listed(postgres, keyed):
    keyed.AIRLOCK_AUDIT_KEYS = {"k1": K1}
    add_events(3)
    keyed.AIRLOCK_AUDIT_KEYS = {"k2": K2, "k1": K1}  # k2 now signs
    add_events(2, start=datetime(2024, 6, 1, tzinfo=UTC))
    assert [e.key_id for e in chain()] == ["k1"] * 3 + ["k2"] * 2
    assert verify() == "audit chain intact: 5 events, 0 anchors agree"
    keyed.AIRLOCK_AUDIT_KEYS = {"k2": K2}  # k1 dropped too early
    assert_broken_at(1, "signed with key 'k1', which AIRLOCK_AUDIT_KEYS lacks")


def test_a_wrong_key_in_the_settings_is_reported_not_ignored(events):
    settings.AIRLOCK_AUDIT_KEYS = {"k2": "k2-" + "z" * 40, "k1": K1}
    assert_broken_at(1, "content does not match its hash")


# --- the anchor file --------------------------------------------------------------------------


def test_audit_anchor_appends_one_json_line_per_new_head(events, keyed):
    path = keyed.AIRLOCK_AUDIT_ANCHOR_FILE
    anchor()
    assert anchor() == "seq 8 is already anchored"
    add_events(1, start=datetime(2024, 6, 1, tzinfo=UTC))
    assert tasks.anchor_audit_head() == 9  # what beat runs every minute
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    head = chain()[-1]
    assert [line["seq"] for line in lines] == [8, 9]
    assert lines[-1]["hash"] == head.hash and lines[-1]["key_id"] == "k2"
    assert lines[-1]["at"] == head.at.astimezone(UTC).isoformat(timespec="microseconds")
    assert set(lines[-1]) == {"seq", "hash", "at", "key_id", "anchored_at"}
    assert "audit-anchor" in settings.CELERY_BEAT_SCHEDULE
    assert settings.CELERY_BEAT_SCHEDULE["audit-anchor"]["schedule"] == 60.0


def test_a_damaged_anchor_file_fails_verification_naming_the_line(events, keyed):
    anchor()
    with keyed.AIRLOCK_AUDIT_ANCHOR_FILE.open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(CommandError, match=r"anchor file .*: line 2 is not an anchor"):
        verify()


def test_audit_anchor_without_a_file_configured_is_a_clear_error(events, keyed):
    keyed.AIRLOCK_AUDIT_ANCHOR_FILE = None
    with pytest.raises(CommandError, match="AIRLOCK_AUDIT_ANCHOR_FILE is not set"):
        anchor()
    assert tasks.anchor_audit_head() is None


def test_verify_can_check_a_copy_of_the_anchors_kept_elsewhere(events, keyed, tmp_path):
    anchor()
    copy = tmp_path / "copy.jsonl"
    copy.write_text(keyed.AIRLOCK_AUDIT_ANCHOR_FILE.read_text())
    keyed.AIRLOCK_AUDIT_ANCHOR_FILE.unlink()  # the attacker removed the local file
    sql("DELETE FROM audit_auditevent WHERE seq = 8")
    with pytest.raises(CommandError, match=r"seq 8: event seq 8 is missing"):
        call_command("audit_verify", anchor_file=copy, stdout=StringIO())
