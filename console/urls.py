from django.contrib import admin
from django.urls import include, path

from console.core import views as core_views

urlpatterns = [
    path("metrics", core_views.metrics, name="metrics"),
    path("", include("console.api.urls")),
    path("", include("console.accounts.urls")),
    path("audit/", include("console.audit.urls")),
    path("", include("console.datasets.urls")),
    path("", include("console.evals.urls")),
    path("", include("console.flags.urls")),
    path("", include("console.usage.urls")),
    path("", include("console.samples.urls")),
    path("", include("console.notifications.urls")),
    path("", include("console.releases.urls")),
    path("", include("console.experiments.urls")),
    path("", include("console.registry.urls")),
    path("django-admin/", admin.site.urls),
]

# The error pages render inside the console's layout and explain themselves.
handler403 = "console.accounts.views.permission_denied"
handler404 = "console.core.errors.page_not_found"
handler500 = "console.core.errors.server_error"
