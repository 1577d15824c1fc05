"""The runtime API for production applications: the config snapshot and OFREP evaluation.

Contract: DESIGN.md ("Runtime API") and, for OFREP, open-feature/protocol `service/openapi.yaml`.
Nothing here writes to the database; every answer comes from the environment's in-memory
snapshot (at most one second old).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from console.accounts.models import ApiKeyScope
from console.api.auth import ApiError, Caller, authenticate
from console.api.snapshot import (
    bulk_etag,
    failure_payload,
    if_none_match,
    ofrep_answer,
    snapshot_for,
)
from console.core.canonical import loads
from console.flags.evaluation import (
    FLAG_NOT_FOUND,
    GENERAL,
    INVALID_CONTEXT,
    PARSE_ERROR,
    EvaluationError,
    check_context,
)

JSON = "application/json"
MAX_BODY_BYTES = 64 * 1024


def _json(data: Any, status: int = 200, headers: dict | None = None) -> HttpResponse:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    response = HttpResponse(body, content_type=JSON, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _not_modified(etag: str) -> HttpResponse:
    """A 304 carries what RFC 9110 asks of it (the ETag and Cache-Control a 200 would have
    sent) and nothing else: no body, so no Content-Type either."""
    response = HttpResponse(status=304)
    del response["Content-Type"]
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


def runtime_endpoint(method: str, scope: str = ApiKeyScope.CONFIG_READ) -> Callable:
    """Method check, then the key (401/403/429) — before anything about data is looked at.

    The view is marked `lean_stack`: console.core.middleware.RuntimeApiMiddleware answers it
    without the console's middleware (sessions, CSRF, browser security headers, a log line
    per call)."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method != method:
                response = _json(
                    {"errorDetails": f"use {method}"}, status=405, headers={"Allow": method}
                )
                return response
            try:
                caller = authenticate(request, scope)
                request.api_key = caller  # for the access log and metrics
                return view(request, caller, *args, **kwargs)
            except ApiError as exc:
                return _json(
                    {"error": exc.error, "errorDetails": exc.details},
                    status=exc.status,
                    headers=exc.headers,
                )
            except DatabaseError:
                # No last good state to answer from (or it is too old): say so, retryably.
                return _json(
                    {
                        "error": "unavailable",
                        "errorDetails": "the configuration store is unreachable",
                    },
                    status=503,
                    headers={"Retry-After": "5"},
                )

        endpoint = csrf_exempt(wrapper)  # the full stack's CSRF check, if it is ever reached
        endpoint.lean_stack = True
        return endpoint

    return decorate


@runtime_endpoint("GET")
def config(request: HttpRequest, caller: Caller) -> HttpResponse:
    """The environment's resolved snapshot; strong ETag, 304 on a matching If-None-Match.

    The body and its ETag are built once per snapshot and shared by every request: a poll
    that matches is answered from a dictionary lookup and a string comparison (no query, no
    serialisation, no cache call once the key and the snapshot are warm)."""
    snapshot = snapshot_for(caller.environment_id)
    if if_none_match(request.META.get("HTTP_IF_NONE_MATCH", ""), snapshot.etag):
        return _not_modified(snapshot.etag)
    response = HttpResponse(snapshot.body, content_type=JSON)
    response["ETag"] = snapshot.etag
    response["Cache-Control"] = "private, no-cache"
    return response


def _context(request: HttpRequest) -> dict[str, Any]:
    """The OFREP request body's context. PARSE_ERROR for a body that is not a JSON object,
    INVALID_CONTEXT for a context that is not one (or a non-string targetingKey)."""
    raw = request.body
    if len(raw) > MAX_BODY_BYTES:
        raise EvaluationError(PARSE_ERROR, f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvaluationError(PARSE_ERROR, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise EvaluationError(PARSE_ERROR, 'request body must be a JSON object: {"context": {}}')
    if "context" in body and body["context"] is None:
        raise EvaluationError(INVALID_CONTEXT, "context must be a JSON object (omit it, not null)")
    return check_context(body.get("context"))


@runtime_endpoint("POST")
def ofrep_flag(request: HttpRequest, caller: Caller, key: str) -> HttpResponse:
    """OFREP single flag evaluation: 200 success, 400 failure, 404 FLAG_NOT_FOUND."""
    try:
        context = _context(request)
    except EvaluationError as exc:
        return _json(failure_payload(key, exc), status=400)
    snapshot = snapshot_for(caller.environment_id)
    if key not in snapshot.flags:
        return _json(
            {
                "key": key,
                "errorCode": FLAG_NOT_FOUND,
                "errorDetails": f"no flag {key!r} in {caller.application_key}/"
                f"{caller.environment_key}",
            },
            status=404,
        )
    payload, text = ofrep_answer(snapshot, key, context)
    status = 200
    if "errorCode" in payload:
        # GENERAL means the flag itself is broken, not the request: a server error.
        status = 500 if payload["errorCode"] == GENERAL else 400
    return HttpResponse(text, content_type=JSON, status=status)


@runtime_endpoint("POST")
def ofrep_bulk(request: HttpRequest, caller: Caller) -> HttpResponse:
    """OFREP bulk evaluation of every flag of the environment; ETag/If-None-Match → 304."""
    try:
        context = _context(request)
    except EvaluationError as exc:
        return _json({"errorCode": exc.code, "errorDetails": exc.details}, status=400)
    snapshot = snapshot_for(caller.environment_id)
    etag = bulk_etag(snapshot, context)
    if if_none_match(request.META.get("HTTP_IF_NONE_MATCH", ""), etag):
        return _not_modified(etag)
    # Each flag's answer is JSON text built once per outcome; the body is their join.
    parts = [ofrep_answer(snapshot, key, context)[1] for key in snapshot.flags]
    response = HttpResponse('{"flags":[' + ",".join(parts) + "]}", content_type=JSON)
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response
