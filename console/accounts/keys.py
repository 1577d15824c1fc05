"""Runtime API keys: create (shown once), revoke, rotate, and recognise a presented key.

A key is `alk_` + 40 random URL-safe characters. Only its sha256 is stored (a fast hash is right
here: the key has ~240 bits of entropy, so there is nothing to brute-force, and the runtime API
checks it on every request).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from console.accounts.models import ApiKey, ApiKeyScope
from console.audit import services as audit
from console.core.versioning import acting_user
from console.registry.models import Environment

KEY_PREFIX = "alk_"
SHOWN_PREFIX_LENGTH = 10
# How long a rotated key may keep working while its users switch to the new one.
MAX_ROTATION_GRACE_SECONDS = 7 * 24 * 3600

# Sent after a revocation commits, so this process's key cache forgets the key at once.
key_revoked = Signal()


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the key itself: give it to the caller once, never store it


def _describe(key: ApiKey) -> dict:
    return {
        "name": key.name,
        "environment": key.environment.key,
        "prefix": key.prefix,
        "scopes": key.scopes,
    }


def create_api_key(
    *,
    actor: Any,
    environment: Environment,
    name: str,
    scopes: list[str] | None = None,
    rate_limit_per_minute: int | None = None,
) -> IssuedKey:
    """Issue a key for one environment. The returned secret is the only copy there will be."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "name the key after what uses it, e.g. web-prod"})
    if len(name) > 100:
        raise ValidationError({"name": "at most 100 characters"})
    scopes = sorted(set(scopes if scopes is not None else [ApiKeyScope.CONFIG_READ]))
    unknown = [s for s in scopes if s not in ApiKeyScope.values]
    if unknown or not scopes:
        raise ValidationError({"scopes": f"choose at least one of {', '.join(ApiKeyScope.values)}"})
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        raise ValidationError({"rate_limit_per_minute": "must be at least 1"})
    with transaction.atomic():
        key, secret = _new_key(
            actor=actor,
            environment=environment,
            name=name,
            scopes=scopes,
            rate_limit_per_minute=rate_limit_per_minute,
        )
        audit.record(
            actor=actor,
            action="api_key.create",
            obj=key,
            object_label=f"{key.name} ({key.prefix}…) for {environment.key}",
            application=environment.application_id,
            environment=environment,
            after=_describe(key),
        )
    return IssuedKey(key, secret)


def _new_key(
    *,
    actor: Any,
    environment: Environment,
    name: str,
    scopes: list[str],
    rate_limit_per_minute: int | None,
) -> tuple[ApiKey, str]:
    """Save a fresh key row (inside the caller's transaction); return it with its secret."""
    secret = KEY_PREFIX + secrets.token_urlsafe(30)
    key = ApiKey(
        application_id=environment.application_id,
        environment=environment,
        name=name,
        prefix=secret[:SHOWN_PREFIX_LENGTH],
        key_hash=hash_key(secret),
        scopes=scopes,
        created_by=acting_user(actor),
    )
    if rate_limit_per_minute is not None:
        key.rate_limit_per_minute = rate_limit_per_minute
    key.save()
    return key, secret


def revoke_api_key(*, actor: Any, api_key: ApiKey) -> ApiKey:
    """Revoke a key: from then on the runtime API treats it as unknown (401)."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().select_related("environment").get(pk=api_key.pk)
        if key.revoked_at is not None:
            return key
        key.revoked_at = timezone.now()
        key.revoked_by = acting_user(actor)
        key.save(update_fields=["revoked_at", "revoked_by"])
        audit.record(
            actor=actor,
            action="api_key.revoke",
            obj=key,
            object_label=f"{key.name} ({key.prefix}…) for {key.environment.key}",
            application=key.application_id,
            environment=key.environment_id,
            before=_describe(key),
        )
        transaction.on_commit(lambda: key_revoked.send(sender=ApiKey, key_hash=key.key_hash))
    return key


@dataclass(frozen=True)
class RotatedKey:
    old: ApiKey  # revoked now, or working until `old.expires_at`
    issued: IssuedKey  # the replacement and its secret (shown once)


def rotate_api_key(*, actor: Any, api_key: ApiKey, grace_seconds: int = 0) -> RotatedKey:
    """Replace a key in one step: issue a new key with the same name, environment, scopes and
    rate limit, and retire the old one — at once (`grace_seconds=0`) or after a grace period
    during which both keys work, so deployed clients can switch without an outage.

    One audit event (`api_key.rotate`) names both keys by id and prefix, never a secret.
    """
    if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, int):
        raise ValidationError({"grace_seconds": "a whole number of seconds"})
    if not 0 <= grace_seconds <= MAX_ROTATION_GRACE_SECONDS:
        raise ValidationError(
            {"grace_seconds": f"between 0 and {MAX_ROTATION_GRACE_SECONDS} seconds (7 days)"}
        )
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().select_related("environment").get(pk=api_key.pk)
        if old.revoked_at is not None:
            raise ValidationError(
                {"api_key": f"{old.name} ({old.prefix}…) is revoked: create a new key instead"}
            )
        if old.expired:
            raise ValidationError(
                {"api_key": f"{old.name} ({old.prefix}…) has expired: create a new key instead"}
            )
        if old.replaced_by_id is not None:
            raise ValidationError(
                {"api_key": f"{old.name} ({old.prefix}…) was already rotated: rotate its "
                 "replacement instead"}
            )  # fmt: skip
        before = _describe(old) | {"id": old.pk}
        new, secret = _new_key(
            actor=actor,
            environment=old.environment,
            name=old.name,
            scopes=list(old.scopes),
            rate_limit_per_minute=old.rate_limit_per_minute,
        )
        now = timezone.now()
        old.replaced_by = new
        fields = ["replaced_by"]
        if grace_seconds == 0:
            old.revoked_at = now
            old.revoked_by = acting_user(actor)
            fields += ["revoked_at", "revoked_by"]
        else:
            old.expires_at = now + timedelta(seconds=grace_seconds)
            fields.append("expires_at")
        old.save(update_fields=fields)
        audit.record(
            actor=actor,
            action="api_key.rotate",
            obj=old,
            object_label=f"{old.name} ({old.prefix}… → {new.prefix}…) for {old.environment.key}",
            application=old.application_id,
            environment=old.environment_id,
            before=before,
            after={
                "old": {
                    "id": old.pk,
                    "prefix": old.prefix,
                    "revoked_at": _iso(old.revoked_at),
                    "expires_at": _iso(old.expires_at),
                },
                "new": _describe(new) | {"id": new.pk},
                "grace_seconds": grace_seconds,
            },
        )
        if grace_seconds == 0:
            digest = old.key_hash
            transaction.on_commit(lambda: key_revoked.send(sender=ApiKey, key_hash=digest))
    return RotatedKey(old=old, issued=IssuedKey(new, secret))


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def record_last_used(*, key_id: int, at: datetime) -> None:
    """Move `last_used_at` forward (never back). Called from a task, never from a request."""
    ApiKey.objects.filter(pk=key_id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=at)
    ).update(last_used_at=at)
