"""Per-request facts (request id, client IP) that services stamp on audit events.

Set by RequestContextMiddleware for web requests; management commands and Celery tasks run
with the defaults (no request) unless they set their own.
"""

from __future__ import annotations

import contextvars
import uuid
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    ip: str | None = None


_NO_REQUEST = RequestContext()
_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "airlock_request", default=None
)


def current() -> RequestContext:
    return _current.get() or _NO_REQUEST


@contextmanager
def bound(ctx: RequestContext):
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def client_ip(request) -> str | None:
    """The client's address as Airlock records it (audit events, sign-in throttling): the peer
    address the WSGI server reports. Behind a reverse proxy that is the proxy's address."""
    return request.META.get("REMOTE_ADDR") or None


def new_request_id() -> str:
    return uuid.uuid4().hex
