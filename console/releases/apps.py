from django.apps import AppConfig


class ReleasesConfig(AppConfig):
    name = "console.releases"
    label = "releases"

    def ready(self) -> None:
        from console.registry import dashboard
        from console.releases.dashboard import operations

        dashboard.register(operations)
