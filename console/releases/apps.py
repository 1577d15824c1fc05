from django.apps import AppConfig


class ReleasesConfig(AppConfig):
    name = "console.releases"
    label = "releases"
