"""POST /api/v1/usage — production applications report what each model call cost them."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from console.accounts.models import ApiKeyScope
from console.api.auth import Caller
from console.api.runtime import _json, runtime_endpoint
from console.core.jsoninput import JSONInputError, parse
from console.registry.models import Environment
from console.samples import services as samples
from console.usage import services

MAX_BODY_BYTES = 2 * 1024 * 1024


@runtime_endpoint("POST", ApiKeyScope.USAGE_WRITE)
def ingest(request: HttpRequest, caller: Caller) -> HttpResponse:
    """A batch of up to 1,000 events, accepted or rejected whole. Idempotent by event_id:
    a retried batch is answered 200 with the duplicates counted, never double-counted. Shadow
    calls' answers (`output`) are stored, redacted, in the same transaction."""
    if len(request.body) > MAX_BODY_BYTES:
        return _json(
            {"errors": [{"index": None, "field": None, "message": "body over 2 MB"}]}, status=413
        )
    try:
        # NaN and Infinity parse (as floats) so the event's own check names their field.
        body = parse(request.body or b"null", constants=True)
    except JSONInputError as exc:
        return _json({"errors": [where(exc, "events")]}, status=400)
    except UnicodeDecodeError as exc:
        return _json(
            {"errors": [{"index": None, "field": None, "message": f"not UTF-8 JSON: {exc}"}]},
            status=400,
        )
    events = body.get("events") if isinstance(body, dict) else None
    environment = Environment.objects.select_related("application").get(pk=caller.environment_id)
    application = environment.application
    # A shadow call may carry its answer (`output`, kept by the samples app for the shadow
    # comparison): checked before anything is stored, with the rest of the batch, so a bad
    # output refuses the whole batch and the refusal lists every problem.
    answers_allowed = ApiKeyScope.SAMPLES_WRITE in caller.scopes
    if problems := samples.shadow_output_problems(events, answers_allowed):
        try:
            services.validate_batch(application, environment, events)
        except services.BatchRejected as exc:
            problems = sorted([*problems, *exc.errors], key=lambda p: p["index"] or 0)
        return _json({"errors": problems}, status=400)
    try:
        with transaction.atomic():
            result = services.ingest(
                application=application, environment=environment, events=events
            )
            samples.store_shadow_answers(
                application=application, environment=environment, events=events
            )
    except services.BatchRejected as exc:
        return _json({"errors": exc.errors}, status=exc.status)
    return _json(
        {"accepted": result.accepted, "duplicates": result.duplicates},
        status=202 if result.accepted else 200,
    )


def where(exc: JSONInputError, items: str) -> dict:
    """A body refused by the parser, named by item and field when the problem lies inside
    one (`events[3].metadata` nested too deeply)."""
    path = exc.path
    index = path[1] if len(path) > 1 and path[0] == items and isinstance(path[1], int) else None
    field = path[2] if index is not None and len(path) > 2 else (path[0] if path else None)
    return {"index": index, "field": field, "message": f"not JSON we accept: {exc}"}
