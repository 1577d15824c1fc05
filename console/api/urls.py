from django.urls import path

from console.api import runtime, samples, usage, views

urlpatterns = [
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
    path("api/v1/config", runtime.config, name="api-config"),
    path("api/v1/usage", usage.ingest, name="api-usage"),
    path("api/v1/samples", samples.ingest, name="api-samples"),
    path("api/v1/openapi.json", views.openapi, name="api-openapi"),
    path("ofrep/v1/evaluate/flags", runtime.ofrep_bulk, name="ofrep-bulk"),
    path("ofrep/v1/evaluate/flags/<str:key>", runtime.ofrep_flag, name="ofrep-flag"),
]
