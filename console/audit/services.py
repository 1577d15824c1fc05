"""Writing the audit log. Every service that changes something calls `record` in the same
transaction as the change, so a rolled-back change leaves no event behind."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from console.audit.models import GENESIS_HASH, ActorType, AuditEvent
from console.core import context
from console.core.canonical import canonical_json, normalise

# Any constant works: it names the one advisory lock that serialises appends to the chain.
_CHAIN_LOCK_ID = 0x41495244  # "AIRD"


@dataclass(frozen=True)
class Actor:
    type: str
    id: int | None
    label: str

    @classmethod
    def of(cls, who: Any) -> Actor:
        if isinstance(who, Actor):
            return who
        if who is None:
            return SYSTEM
        return cls(ActorType.USER, who.pk, who.get_username())


SYSTEM = Actor(ActorType.SYSTEM, None, "system")


def event_hash(prev_hash: str, fields: dict, key: bytes) -> str:
    """HMAC-SHA256 under `key` of the previous hash and the event's canonical fields."""
    return hmac.digest(key, (prev_hash + canonical_json(fields)).encode(), "sha256").hex()


def legacy_event_hash(prev_hash: str, fields: dict) -> str:
    """The unkeyed hash of events written before the chain was keyed (their key_id is "")."""
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


def signing_key() -> tuple[str, bytes]:
    """(key id, secret) of the newest AIRLOCK_AUDIT_KEYS entry: it signs every new event."""
    key_id, secret = next(iter(settings.AIRLOCK_AUDIT_KEYS.items()))
    return key_id, secret.encode()


def seal(event: AuditEvent, key: tuple[str, bytes] | None = None) -> AuditEvent:
    """Sign `event` (its prev_hash set) with the signing key: sets key_id and hash."""
    event.key_id, secret = key or signing_key()
    event.hash = event_hash(event.prev_hash, event.chained_fields(), secret)
    return event


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_ID])
    # SQLite: transactions start IMMEDIATE (see console.config), so writers are already serial.


def record(
    *,
    actor: Any,
    action: str,
    obj: Any = None,
    object_type: str | None = None,
    object_id: Any = None,
    object_label: str | None = None,
    application: Any = None,
    environment: Any = None,
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEvent:
    """Append one event to the chain. Must be called inside the change's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit.record must run inside the transaction of the change it records")
    who = Actor.of(actor)
    req = context.current()
    _lock_chain()
    last = AuditEvent.objects.order_by("-seq").only("seq", "hash").first()
    event = AuditEvent(
        seq=(last.seq + 1) if last else 1,
        at=timezone.now(),
        actor_type=who.type,
        actor_id=who.id,
        actor_label=who.label,
        action=action,
        object_type=object_type or (obj._meta.model_name if obj is not None else ""),
        object_id=str(object_id if object_id is not None else getattr(obj, "pk", "") or ""),
        object_label=(object_label if object_label is not None else str(obj or ""))[:300],
        application_id=getattr(application, "pk", application),
        environment_id=getattr(environment, "pk", environment),
        before=normalise(before) if before is not None else None,
        after=normalise(after) if after is not None else None,
        reason=reason,
        request_id=req.request_id,
        # Stored as the field normalises it (IPv6 canonical form), so the hash reads back equal.
        ip=AuditEvent._meta.get_field("ip").to_python(req.ip) if req.ip else None,
        prev_hash=last.hash if last else GENESIS_HASH,
    )
    seal(event)
    event.save(force_insert=True)
    return event
