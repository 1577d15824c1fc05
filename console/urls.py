from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("console.api.urls")),
    path("", include("console.accounts.urls")),
    path("audit/", include("console.audit.urls")),
    path("", include("console.datasets.urls")),
    path("", include("console.evals.urls")),
    path("", include("console.flags.urls")),
    path("", include("console.registry.urls")),
    path("django-admin/", admin.site.urls),
]
