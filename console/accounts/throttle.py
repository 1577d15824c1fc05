"""Sign-in throttling, shared by the console login and the Django admin login.

Failures are counted in the shared cache (Redis in production, so every web process sees the
same counts) under two keys: the username+address pair (LOGIN_FAILURE_LIMIT) and the address
alone, whatever usernames it tries (LOGIN_ADDRESS_FAILURE_LIMIT). Reaching a limit locks that
key for LOGIN_FAILURE_WINDOW_S; while any key of an attempt is locked the password is not even
checked.

The username is keyed the way Django matches it (`AbstractBaseUser.normalize_username`, NFKC,
then casefolded): `ｃurator` (fullwidth c) signs in as `curator`, so it must count as `curator`.
The address is the one the audit log records (`console.core.context.client_ip`).
"""

from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.http import HttpRequest

from console.core.context import client_ip


def normalise_username(raw: str | None) -> str:
    """The identity Django authenticates for `raw`, casefolded: one lockout for every spelling."""
    return AbstractBaseUser.normalize_username((raw or "").strip()).strip().casefold()


def _key(scope: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return f"login-throttle:{scope}:{digest}"


def _scopes(request: HttpRequest | None, username: str | None) -> list[tuple[str, int]]:
    address = (client_ip(request) if request is not None else None) or ""
    return [
        (_key("pair", normalise_username(username), address), settings.LOGIN_FAILURE_LIMIT),
        (_key("address", address), settings.LOGIN_ADDRESS_FAILURE_LIMIT),
    ]


def retry_after(request: HttpRequest | None, username: str | None) -> int:
    """Seconds until this username may be tried from this address again; 0: try now."""
    locks = cache.get_many([f"{key}:locked" for key, _ in _scopes(request, username)])
    if not locks:
        return 0
    return max(0, math.ceil(max(locks.values()) - time.time()))


def record_failure(request: HttpRequest | None, username: str | None) -> None:
    if request is None:  # authenticate() outside a web request (a script): nothing to throttle
        return
    window = settings.LOGIN_FAILURE_WINDOW_S
    for key, limit in _scopes(request, username):
        cache.add(key, 0, window)  # the count lives one window from its first failure
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, window)
            count = 1
        if count >= limit:
            cache.add(f"{key}:locked", time.time() + window, window)


def record_success(request: HttpRequest | None, username: str | None) -> None:
    """A right password clears the pair's count, not the address's: an attacker signing in to
    their own account between guesses must not reset their budget."""
    pair_key, _ = _scopes(request, username)[0]
    cache.delete(pair_key)


def refusal_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def on_login_failed(sender, credentials: dict, request: HttpRequest | None = None, **kwargs):
    """`user_login_failed`: every failed `authenticate()` counts, whichever form called it."""
    record_failure(request, credentials.get("username"))


def on_logged_in(sender, request: HttpRequest | None, user, **kwargs):
    record_success(request, user.get_username())
