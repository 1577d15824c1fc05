"""Recompute the audit chain and find the first place it breaks."""

from __future__ import annotations

from dataclasses import dataclass

from console.audit.models import GENESIS_HASH, AuditEvent
from console.audit.services import event_hash


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    broken_seq: int | None = None
    problem: str = ""


def verify_chain(chunk_size: int = 5000) -> VerifyResult:
    """Walk every event in seq order. Catches edited rows (hash mismatch), deleted rows (a gap
    in seq or a prev_hash that no longer matches) and reordered rows (seq is hashed)."""
    prev_hash = GENESIS_HASH
    expected_seq = 1
    count = 0
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=chunk_size)
    for event in events:
        if event.seq != expected_seq:
            return VerifyResult(
                False,
                count,
                expected_seq,
                f"event seq {expected_seq} is missing (next is {event.seq})",
            )
        if event.prev_hash != prev_hash:
            return VerifyResult(
                False, count, event.seq, "prev_hash does not match the previous event's hash"
            )
        if event_hash(prev_hash, event.chained_fields()) != event.hash:
            return VerifyResult(False, count, event.seq, "content does not match its hash")
        prev_hash = event.hash
        expected_seq += 1
        count += 1
    return VerifyResult(True, count)
