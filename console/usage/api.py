"""POST /api/v1/usage — production applications report what each model call cost them."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from console.accounts.models import ApiKeyScope
from console.api.auth import Caller
from console.api.runtime import _json, runtime_endpoint
from console.registry.models import Environment
from console.usage import services

MAX_BODY_BYTES = 2 * 1024 * 1024


@runtime_endpoint("POST", ApiKeyScope.USAGE_WRITE)
def ingest(request: HttpRequest, caller: Caller) -> HttpResponse:
    """A batch of up to 1,000 events, accepted or rejected whole. Idempotent by event_id:
    a retried batch is answered 200 with the duplicates counted, never double-counted."""
    if len(request.body) > MAX_BODY_BYTES:
        return _json(
            {"errors": [{"index": None, "field": None, "message": "body over 2 MB"}]}, status=413
        )
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        return _json(
            {"errors": [{"index": None, "field": None, "message": f"not JSON: {exc}"}]}, status=400
        )
    events = body.get("events") if isinstance(body, dict) else None
    environment = Environment.objects.select_related("application").get(pk=caller.environment_id)
    try:
        with transaction.atomic():
            result = services.ingest(
                application=environment.application, environment=environment, events=events
            )
    except services.BatchRejected as exc:
        return _json({"errors": exc.errors}, status=422)
    return _json(
        {"accepted": result.accepted, "duplicates": result.duplicates},
        status=202 if result.accepted else 200,
    )
