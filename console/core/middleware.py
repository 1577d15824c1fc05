import re

from console.core.context import RequestContext, bound, new_request_id

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestContextMiddleware:
    """Give every request an id (honouring a sane incoming X-Request-ID) and remember the IP."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        request.request_id = request_id
        ctx = RequestContext(request_id=request_id, ip=request.META.get("REMOTE_ADDR") or None)
        with bound(ctx):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
