"""The console's 404 and 500 pages, rendered inside its layout (templates/base.html).

Django shows its technical 404 page (which lists every URL pattern) under DEBUG; the console's
own "not found" answers — an application you are not a member of, a version that does not
exist — go through `NotFoundMiddleware` instead, so they read the same in every mode. Only a
URL that matches no route still gets the technical page under DEBUG, where it helps developers.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.template import loader
from django.views.decorators.csrf import requires_csrf_token

from console.core.middleware import RUNTIME_PREFIXES


@requires_csrf_token
def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # The same words whatever was missing and whatever was asked for: something that exists
    # elsewhere reads exactly like something that exists nowhere, and no input is echoed.
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """No request context: context processors, the session and the database may be what broke."""
    return HttpResponseServerError(loader.get_template("500.html").render())


class NotFoundMiddleware:
    """Render the console's own Http404s as its 404 page, under DEBUG too. The runtime API
    (/api/v1/, /ofrep/) keeps its own answers."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, Http404) and not request.path.startswith(RUNTIME_PREFIXES):
            return page_not_found(request, exception)
        return None
