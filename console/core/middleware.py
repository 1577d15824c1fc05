import logging
import re
import time

from console.core import metrics
from console.core.context import RequestContext, bound, client_ip, new_request_id

access_log = logging.getLogger("airlock.access")
RUNTIME_PREFIXES = ("/api/v1/", "/ofrep/")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestContextMiddleware:
    """Give every request an id (honouring a sane incoming X-Request-ID) and remember the IP."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        request.request_id = request_id
        ctx = RequestContext(request_id=request_id, ip=client_ip(request))
        with bound(ctx):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class AccessLogMiddleware:
    """One structured line per request (route, status, duration, user or API key id — never
    the body or query string), and the request latency histogram."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        route = match.route if match else "(unmatched)"
        status = response.status_code
        api_key = getattr(request, "api_key", None)
        user = getattr(request, "user", None)
        fields = {
            "method": request.method,
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "user_id": user.pk if user is not None and user.is_authenticated else None,
            "api_key_id": getattr(api_key, "pk", None),
        }
        access_log.info("%s %s %s", request.method, route, status, extra={"fields": fields})
        metrics.REQUEST_SECONDS.labels(route, request.method, str(status)).observe(elapsed)
        if request.path.startswith(RUNTIME_PREFIXES):
            key = getattr(api_key, "prefix", None) or "anonymous"
            metrics.RUNTIME_CALLS.labels(key, route, str(status)).inc()
        return response
