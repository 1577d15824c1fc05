import logging
import re
import time

from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve

from console.core import metrics
from console.core.context import RequestContext, bound, client_ip, new_request_id

access_log = logging.getLogger("airlock.access")
RUNTIME_PREFIXES = ("/api/v1/", "/ofrep/")
MATCHES_KEPT = 1024

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


class RuntimeApiMiddleware:
    """The runtime API's own short stack, first in MIDDLEWARE.

    A runtime call (a view marked `lean_stack`, see console.api.runtime.runtime_endpoint) is
    answered here without the console's middleware: no session, CSRF, messages, htmx, CSP or
    frame options (the answer is JSON for a program, never a page a browser renders), and no
    access-log line per call. What it keeps:

    - the Host check against ALLOWED_HOSTS and the HTTPS redirect (SECURE_SSL_REDIRECT);
    - the request context (request id, client IP) that logs and audit events are stamped with;
    - `X-Content-Type-Options: nosniff` on every answer with a body, and `Content-Length`;
    - every call counted by route, status and key prefix, and timed, on /metrics
      (`metrics.RUNTIME_TALLY`); a refused or failed call (status >= 400) is also logged on its
      own line, with the request id it answers with in `X-Request-ID`.

    A client that sends its own `X-Request-ID` gets it back on every answer; otherwise a
    successful answer (200, 304) carries no request id: nothing was logged under it.
    Everything else (/api/v1/openapi.json, an unknown path under /api/v1/) goes down the full
    stack as before.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        # Only its HTTPS redirect is used (process_request), not its browser headers.
        self.security = SecurityMiddleware(get_response)
        # Resolved runtime paths (the config, OFREP bulk, OFREP per flag key): resolving one
        # walks the console's URL patterns on every call otherwise.
        self._matches: dict[str, object] = {}

    def __call__(self, request):
        path = request.path_info
        if not path.startswith(RUNTIME_PREFIXES):
            return self.get_response(request)
        match = self._matches.get(path)
        if match is None:
            try:
                match = resolve(path)
            except Resolver404:
                return self.get_response(request)
            if not getattr(match.func, "lean_stack", False):
                return self.get_response(request)
            if len(self._matches) >= MATCHES_KEPT:
                self._matches.clear()
            self._matches[path] = match  # routes do not change while the process runs
        return self.serve(request, match)

    def serve(self, request, match):
        started = time.perf_counter()
        request.get_host()  # DisallowedHost (400) for a Host not in ALLOWED_HOSTS
        redirect = self.security.process_request(request)
        if redirect is not None:
            return redirect
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        echoed = bool(incoming) and _REQUEST_ID.match(incoming) is not None
        request_id = incoming if echoed else new_request_id()
        request.request_id = request_id
        request.resolver_match = match
        status = 500
        try:
            with bound(RequestContext(request_id=request_id, ip=client_ip(request))):
                response = match.func(request, *match.args, **match.kwargs)
            status = response.status_code
        finally:
            # An exception becomes Django's 500 page further out; it is counted here.
            elapsed = time.perf_counter() - started
            api_key = getattr(request, "api_key", None)
            key = getattr(api_key, "prefix", None) or "anonymous"
            metrics.RUNTIME_TALLY.add(key, match.route, request.method, str(status), elapsed)
        if status >= 400:
            fields = {
                "method": request.method,
                "route": match.route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "user_id": None,
                "api_key_id": getattr(api_key, "pk", None),
            }
            access_log.info(
                "%s %s %s",
                request.method,
                match.route,
                status,
                extra={"fields": fields, "request_id": request_id},
            )
            # That line is the call's log: Django's own "Not Found"/"Unauthorized" warning for
            # it (django.request, without the request id) would only repeat it.
            response._has_been_logged = True
        if echoed or status >= 400:
            response["X-Request-ID"] = request_id
        if status != 304 and not response.streaming:
            response["Content-Length"] = str(len(response.content))
            response["X-Content-Type-Options"] = "nosniff"
        return response
