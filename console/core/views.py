"""Operational endpoints that are not part of the console UI."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from console.core import metrics as airlock_metrics


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, for a scraper holding METRICS_TOKEN (disabled without one)."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("metrics are disabled: set METRICS_TOKEN")
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(presented.encode(), token.encode()):
        return HttpResponse(
            "a valid bearer token is required\n", status=401, content_type="text/plain"
        )
    return HttpResponse(airlock_metrics.render(), content_type=CONTENT_TYPE_LATEST)
