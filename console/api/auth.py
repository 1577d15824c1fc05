"""Who is calling the runtime API: key lookup, scope and environment checks, rate limiting,
and the throttled last-used stamp — all without writing to the database on the request path.

A presented key is hashed and looked up; the answer (including "no such key") is kept in this
process for at most `KEY_CACHE_SECONDS`, the same bound as any other runtime change, and a
revocation in this process drops it at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from django.core.cache import caches
from django.db import DatabaseError
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from console.accounts.keys import hash_key, key_revoked
from console.accounts.models import ApiKey

log = logging.getLogger(__name__)

KEY_CACHE_SECONDS = 1.0
KEY_CACHE_MAX = 10_000
LAST_USED_EVERY_SECONDS = 60
RATE_WINDOW_SECONDS = 60


class ApiError(Exception):
    """An authentication, authorisation or rate-limit refusal, with its HTTP status."""

    def __init__(self, status: int, error: str, details: str, headers: dict | None = None):
        self.status = status
        self.error = error
        self.details = details
        self.headers = headers or {}
        super().__init__(details)


@dataclass(frozen=True)
class Caller:
    key_id: int
    application_key: str
    environment_id: int
    environment_key: str
    scopes: frozenset[str]
    rate_limit_per_minute: int
    prefix: str = ""

    @property
    def pk(self) -> int:
        """The key's id, named like a row's (the access log reads `request.api_key.pk`)."""
        return self.key_id


_keys: dict[str, tuple[float, Caller | None]] = {}
_last_used_noted: dict[int, float] = {}
_lock = threading.Lock()


def _forget(sender, key_hash: str, **kwargs) -> None:
    _keys.pop(key_hash, None)


key_revoked.connect(_forget, dispatch_uid="api-auth-forget-revoked-key")


def forget_all() -> None:
    """Drop this process's key cache and rate-limit views (tests, and after bulk changes)."""
    with _lock:
        _keys.clear()
        _last_used_noted.clear()
    with _windows_lock:
        _windows.clear()


def presented_key(request: HttpRequest) -> str:
    # request.META, not request.headers: the latter copies every header on first use.
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.META.get("HTTP_X_API_KEY", "").strip()


STALE_KEY_SECONDS = 300.0


def _fetch(digest: str):
    return (
        ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True)
        # A rotated key works until the end of its grace period, then is unknown (401).
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .select_related("application", "environment")
        .only(
            "pk",
            "scopes",
            "rate_limit_per_minute",
            "prefix",
            "application__key",
            "environment__id",
            "environment__key",
        )
        .first()
    )


def _lookup(digest: str) -> Caller | None:
    now = time.monotonic()
    cached = _keys.get(digest)
    if cached is not None and cached[0] > now:
        return cached[1]
    try:
        row = _fetch(digest)
    except DatabaseError:
        # Database briefly away: keep honouring a key seen recently (within the stale limit).
        if cached is not None and cached[0] + STALE_KEY_SECONDS > now:
            return cached[1]
        raise
    caller = (
        Caller(
            key_id=row.pk,
            application_key=row.application.key,
            environment_id=row.environment.pk,
            environment_key=row.environment.key,
            scopes=frozenset(row.scopes or []),
            rate_limit_per_minute=row.rate_limit_per_minute,
            prefix=row.prefix,
        )
        if row is not None
        else None
    )
    with _lock:
        if len(_keys) >= KEY_CACHE_MAX:
            _keys.clear()
        _keys[digest] = (now + KEY_CACHE_SECONDS, caller)
    return caller


def authenticate(request: HttpRequest, scope: str) -> Caller:
    """The caller behind the request's key, or ApiError 401/403/429.

    401: no key, an unknown key or a revoked key. 403: a valid key without `scope`, or a key
    used against another environment or application than the one the client names in
    `X-Airlock-Environment` / `X-Airlock-Application` (optional safety nets for clients).
    """
    raw = presented_key(request)
    if not raw:
        raise ApiError(
            401,
            "unauthorized",
            "send an API key: Authorization: Bearer <key> (or X-API-Key: <key>)",
            {"WWW-Authenticate": 'Bearer realm="airlock"'},
        )
    caller = _lookup(hash_key(raw))
    if caller is None:
        raise ApiError(
            401,
            "unauthorized",
            "this API key is not valid (unknown or revoked)",
            {"WWW-Authenticate": 'Bearer realm="airlock", error="invalid_token"'},
        )
    query = request.GET if request.META.get("QUERY_STRING") else {}
    wanted_env = request.META.get("HTTP_X_AIRLOCK_ENVIRONMENT") or query.get("environment")
    if wanted_env and wanted_env != caller.environment_key:
        raise ApiError(403, "forbidden", "this API key belongs to another environment")
    wanted_app = request.META.get("HTTP_X_AIRLOCK_APPLICATION") or query.get("application")
    if wanted_app and wanted_app != caller.application_key:
        raise ApiError(403, "forbidden", "this API key belongs to another application")
    if scope not in caller.scopes:
        raise ApiError(403, "forbidden", f"this API key lacks the {scope} scope")
    _check_rate(caller)
    _note_used(caller)
    return caller


def _shared_cache_down(what: str, exc: Exception) -> None:
    """The shared cache (Redis) is unreachable. Rate limits and last-used stamps are bookkeeping,
    not the answer: the call goes on, and the outage is logged at most every few seconds."""
    now = time.monotonic()
    if now >= _cache_warned.get("next", 0.0):
        _cache_warned["next"] = now + 5.0
        log.warning("shared cache unavailable (%s skipped): %s", what, exc)


_cache_warned: dict[str, float] = {}


# Rate limits: one-minute windows per key, counted in the shared cache (Redis in production)
# — but not with a network call per request. Each process keeps its own view of the key's
# window: the count across processes as of its last sync with the cache, plus what it has let
# through since. It syncs (one INCRBY of what it let through, which answers the new total) at
# least every SYNC_SECONDS and at least every max(1, limit // SYNC_SHARE) calls it lets
# through, whichever comes first; it refuses as soon as its view reaches the limit.
#
# The view can only fall short of the true count (by what other processes let through since
# they last synced), never exceed it, so nothing under the limit is refused. Overshoot bound:
# after the window's true count reaches the limit, each process lets through at most what it
# can before its next sync shows it — at most 2 × max(1, limit // SYNC_SHARE) calls (one batch
# being synced, one accumulating) — so a window admits at most
#     limit + 2 × processes × max(1, limit // SYNC_SHARE)
# calls: 4% over with 2 gunicorn workers (2 % per process), and exact to within 2 calls per
# process for limits under SYNC_SHARE a minute, where every admitted call syncs.
SYNC_SECONDS = 1.0
SYNC_SHARE = 100


@dataclass
class _Window:
    """This process's view of one key's current window."""

    number: int
    shared: int = 0  # the window's count across processes, as the last sync answered it
    syncing: int = 0  # let through here, being added to the shared count right now
    pending: int = 0  # let through here since, not yet sent
    next_sync: float = 0.0


_windows: dict[int, _Window] = {}
_windows_lock = threading.Lock()


def _check_rate(caller: Caller) -> None:
    """Admit or refuse (429) one call against the key's per-minute limit; see above. While the
    cache is down the limit is not enforced (fail open): refusing every flag read because the
    counter is unreachable would turn a Redis blip into an outage of every application."""
    limit = caller.rate_limit_per_minute
    now = time.time()
    number = int(now // RATE_WINDOW_SECONDS)
    with _windows_lock:
        window = _windows.get(caller.key_id)
        if window is None or window.number != number:
            if len(_windows) >= KEY_CACHE_MAX:
                _windows.clear()
            window = _windows[caller.key_id] = _Window(number)
        refused = window.shared + window.syncing + window.pending >= limit
        if not refused:
            window.pending += 1
        if window.syncing or not window.pending:
            sync = False
        elif refused:
            sync = True  # what it let through before the limit, so other processes see it
        else:
            sync = window.pending >= max(1, limit // SYNC_SHARE) or now >= window.next_sync
        if sync:
            # This thread syncs; the others go on counting into `pending` meanwhile.
            delta, window.syncing, window.pending = window.pending, window.pending, 0
            window.next_sync = now + SYNC_SECONDS
    if sync:
        total = _sync(caller.key_id, number, delta)
        with _windows_lock:
            window.syncing = 0
            if total is not None:
                window.shared = max(window.shared, total)
    if refused:
        retry_after = max(1, math.ceil((number + 1) * RATE_WINDOW_SECONDS - now))
        raise ApiError(
            429,
            "rate_limited",
            f"this API key is limited to {limit} requests a minute",
            {"Retry-After": str(retry_after)},
        )


def _sync(key_id: int, number: int, delta: int) -> int | None:
    """Add `delta` calls to the key's shared count for window `number`; the new total, or None
    with the cache down (the calls are then not counted anywhere: fail open)."""
    cache = caches["default"]
    slot = f"airlock:rate:{key_id}:{number}"
    try:
        try:
            return cache.incr(slot, delta)
        except ValueError:
            if cache.add(slot, delta, RATE_WINDOW_SECONDS + 5):
                return delta
            return cache.incr(slot, delta)
    except Exception as exc:  # redis.ConnectionError, TimeoutError, ...: the backend's own
        _shared_cache_down("rate limit", exc)
        return None


def _note_used(caller: Caller) -> None:
    """Record last use at most once a minute per key, through a Celery task (no DB write here).

    A per-process memo saves the shared-cache round trip on almost every request; `cache.add`
    makes the once-a-minute hold across processes.
    """
    now = time.monotonic()
    if _last_used_noted.get(caller.key_id, 0.0) > now:
        return
    _last_used_noted[caller.key_id] = now + LAST_USED_EVERY_SECONDS
    try:
        first = caches["default"].add(
            f"airlock:key-used:{caller.key_id}", 1, LAST_USED_EVERY_SECONDS
        )
    except Exception as exc:  # the shared cache is down: skip this stamp, try next minute
        _shared_cache_down("last-used stamp", exc)
        return
    if not first:
        return
    from console.accounts.tasks import record_key_use

    try:
        record_key_use.apply_async(
            args=[caller.key_id, timezone.now().isoformat()], retry=False, ignore_result=True
        )
    except Exception:  # a broker outage must not fail flag evaluation
        log.warning("could not queue last-used update for API key %s", caller.key_id)
