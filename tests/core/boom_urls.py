"""The console's URLs plus one view that fails, to see the 500 page through HTTP."""

from django.urls import path

from console.urls import handler403, handler404, handler500
from console.urls import urlpatterns as console_urlpatterns


def boom(request):
    raise RuntimeError("the kind of bug a 500 page is for")


urlpatterns = [path("boom/", boom), *console_urlpatterns]
__all__ = ["handler403", "handler404", "handler500", "urlpatterns"]
