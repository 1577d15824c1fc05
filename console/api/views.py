"""Process health for load balancers and orchestrators."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from kombu import Connection


@csrf_exempt  # so an unknown method gets 405 from require_GET, not a CSRF 403
@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving; touches nothing else."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=2,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


CHECKS = {"database": _check_database, "broker": _check_broker}


@csrf_exempt
@never_cache
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    """Database and broker reachable → 200; otherwise 503 naming each failing check."""
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
    failing = [name for name, result in results.items() if result != "ok"]
    body = {"status": "ready" if not failing else "unavailable", "checks": results}
    from console.api.snapshot import degraded

    if degraded["since"] is not None:
        # Not a failure: the runtime API is answering from its last good snapshot.
        body["runtime_api"] = {
            "serving_last_good_snapshot_since": degraded["since"],
            "error": degraded["error"],
        }
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)


@csrf_exempt
@require_GET
def openapi(request: HttpRequest) -> JsonResponse:
    """The OpenAPI document of the runtime API (public: it describes, it holds no data)."""
    from console.api.openapi import document

    return JsonResponse(document(), json_dumps_params={"ensure_ascii": False})
