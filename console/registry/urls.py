from django.urls import path, register_converter

from console.registry import views
from console.registry.kinds import KINDS


class KindConverter:
    regex = "|".join(KINDS)

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(KindConverter, "kind")

app_name = "registry"
urlpatterns = [
    path("", views.home, name="home"),
    path("apps/<slug:app>/", views.dashboard, name="dashboard"),
    path("apps/<slug:app>/environments/", views.environments, name="environments"),
    path("apps/<slug:app>/prompt-preview/", views.prompt_preview, name="prompt_preview"),
    path("apps/<slug:app>/<kind:kind>/", views.head_list, name="head_list"),
    path("apps/<slug:app>/<kind:kind>/new/", views.head_new, name="head_new"),
    path("apps/<slug:app>/<kind:kind>/<slug:key>/", views.head_detail, name="head_detail"),
    path("apps/<slug:app>/<kind:kind>/<slug:key>/edit/", views.head_edit, name="head_edit"),
    path("apps/<slug:app>/<kind:kind>/<slug:key>/diff/", views.diff, name="diff"),
    path("apps/<slug:app>/<kind:kind>/<slug:key>/bind/", views.bind, name="bind"),
    path(
        "apps/<slug:app>/<kind:kind>/<slug:key>/v<int:number>/",
        views.version_detail,
        name="version_detail",
    ),
]
