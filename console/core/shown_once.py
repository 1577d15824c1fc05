"""Secrets shown once, across a Post/Redirect/Get.

A page that creates a secret (an API key, a webhook's signing secret) redirects after its POST,
so reloading the page never creates a second one. The secret crosses the redirect in the
server-side session — never in the URL — and is popped by the first page that shows it: a
reload, the back button or another tab finds nothing.
"""

from __future__ import annotations

from django.http import HttpRequest

_PREFIX = "shown-once:"


def keep(request: HttpRequest, slot: str, data: dict) -> None:
    """Hold `data` (holding the secret) for the next page that calls `take` with `slot`."""
    request.session[_PREFIX + slot] = data


def take(request: HttpRequest, slot: str) -> dict | None:
    """The data kept for `slot`, removed from the session as it is read (None if none)."""
    return request.session.pop(_PREFIX + slot, None)
