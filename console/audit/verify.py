"""Recompute the audit chain and find the first place it breaks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from console.audit.anchors import Anchor
from console.audit.models import GENESIS_HASH, AuditEvent
from console.audit.services import event_hash, legacy_event_hash


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    broken_seq: int | None = None
    problem: str = ""
    anchors: int = 0


def verify_chain(chunk_size: int = 5000, anchors: Iterable[Anchor] = ()) -> VerifyResult:
    """Walk every event in seq order. Catches edited rows (hash mismatch), deleted rows (a gap
    in seq or a prev_hash that no longer matches), reordered rows (seq is hashed), a chain
    recomputed without the key (HMAC mismatch, unknown key id, or unkeyed events after keyed
    ones) and, given anchors, a deleted or rewritten tail (an anchored seq missing, or a stored
    hash that differs from its anchor)."""
    keys = {key_id: secret.encode() for key_id, secret in settings.AIRLOCK_AUDIT_KEYS.items()}
    by_seq: dict[int, list[Anchor]] = {}
    for anchor in anchors:
        by_seq.setdefault(anchor.seq, []).append(anchor)
    n_anchors = sum(len(found) for found in by_seq.values())
    prev_hash = GENESIS_HASH
    expected_seq = 1
    count = 0
    keyed = False

    def broken(seq: int, problem: str) -> VerifyResult:
        return VerifyResult(False, count, seq, problem, n_anchors)

    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=chunk_size)
    for event in events:
        seq = event.seq
        if seq != expected_seq:
            return broken(expected_seq, f"event seq {expected_seq} is missing (next is {seq})")
        if event.prev_hash != prev_hash:
            return broken(seq, "prev_hash does not match the previous event's hash")
        if event.key_id:
            key = keys.get(event.key_id)
            if key is None:
                return broken(
                    seq, f"signed with key {event.key_id!r}, which AIRLOCK_AUDIT_KEYS lacks"
                )
            keyed = True
            expected = event_hash(prev_hash, event.chained_fields(), key)
        elif keyed:
            return broken(seq, "an unkeyed event after keyed ones (the chain was recomputed)")
        else:
            expected = legacy_event_hash(prev_hash, event.chained_fields())
        if expected != event.hash:
            return broken(seq, "content does not match its hash")
        for anchor in by_seq.get(seq, ()):
            if anchor.hash != event.hash:
                return broken(
                    seq,
                    f"hash differs from the anchor of {anchor.anchored_at} "
                    f"(anchor file line {anchor.line})",
                )
        prev_hash = event.hash
        expected_seq += 1
        count += 1
    beyond = [a for found in by_seq.values() for a in found if a.seq >= expected_seq]
    if beyond:
        latest = max(beyond, key=lambda a: a.seq)
        return broken(
            expected_seq,
            f"event seq {expected_seq} is missing: the anchor of {latest.anchored_at} "
            f"(anchor file line {latest.line}) records the chain up to seq {latest.seq}",
        )
    return VerifyResult(True, count, anchors=n_anchors)
