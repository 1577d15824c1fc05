"""POST /api/v1/samples — production applications send a sampled share of their requests
(inputs, output, retrieved context, versions, feedback) for quality review. Redacted by the
application's policy before anything is stored."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from console.accounts.models import ApiKeyScope
from console.api.auth import Caller
from console.api.runtime import _json, runtime_endpoint
from console.api.usage import MAX_BODY_BYTES, where
from console.core.jsoninput import JSONInputError, parse
from console.registry.models import Environment
from console.samples import services
from console.usage.services import BatchRejected


def _refused(message: str, status: int) -> HttpResponse:
    return _json({"errors": [{"index": None, "field": None, "message": message}]}, status=status)


@runtime_endpoint("POST", ApiKeyScope.SAMPLES_WRITE)
def ingest(request: HttpRequest, caller: Caller) -> HttpResponse:
    """A batch of up to 500 samples, accepted or refused whole; idempotent by sample_id and
    time (a retried batch is answered 200 with the duplicates counted)."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        return _refused("body over 2 MB: send fewer samples per batch", 413)
    try:
        body = parse(request.body or b"null", constants=True)
    except JSONInputError as exc:
        return _json({"errors": [where(exc, "samples")]}, status=400)
    except UnicodeDecodeError as exc:
        return _refused(f"not UTF-8 JSON: {exc}", 400)
    samples = body.get("samples") if isinstance(body, dict) else None
    environment = Environment.objects.select_related("application").get(pk=caller.environment_id)
    try:
        result = services.ingest(
            application=environment.application, environment=environment, samples=samples
        )
    except BatchRejected as exc:
        return _json({"errors": exc.errors}, status=exc.status)
    return _json(
        {"accepted": result.accepted, "duplicates": result.duplicates},
        status=202 if result.accepted else 200,
    )
