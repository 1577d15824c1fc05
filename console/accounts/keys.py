"""Runtime API keys: create (shown once), revoke, and recognise a presented key.

A key is `alk_` + 40 random URL-safe characters. Only its sha256 is stored (a fast hash is right
here: the key has ~240 bits of entropy, so there is nothing to brute-force, and the runtime API
checks it on every request).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from console.accounts.models import ApiKey, ApiKeyScope
from console.audit import services as audit
from console.registry.models import Environment

KEY_PREFIX = "alk_"
SHOWN_PREFIX_LENGTH = 10

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
    secret = KEY_PREFIX + secrets.token_urlsafe(30)
    with transaction.atomic():
        key = ApiKey(
            application_id=environment.application_id,
            environment=environment,
            name=name,
            prefix=secret[:SHOWN_PREFIX_LENGTH],
            key_hash=hash_key(secret),
            scopes=scopes,
            created_by=actor if getattr(actor, "_meta", None) else None,
        )
        if rate_limit_per_minute is not None:
            if rate_limit_per_minute < 1:
                raise ValidationError({"rate_limit_per_minute": "must be at least 1"})
            key.rate_limit_per_minute = rate_limit_per_minute
        key.save()
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


def revoke_api_key(*, actor: Any, api_key: ApiKey) -> ApiKey:
    """Revoke a key: from then on the runtime API treats it as unknown (401)."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().select_related("environment").get(pk=api_key.pk)
        if key.revoked_at is not None:
            return key
        key.revoked_at = timezone.now()
        key.revoked_by = actor if getattr(actor, "_meta", None) else None
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


def record_last_used(*, key_id: int, at: datetime) -> None:
    """Move `last_used_at` forward (never back). Called from a task, never from a request."""
    ApiKey.objects.filter(pk=key_id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=at)
    ).update(last_used_at=at)
