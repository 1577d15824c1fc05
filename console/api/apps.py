from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "console.api"
    label = "api"

    def ready(self) -> None:
        # Connect the cache-invalidation receivers (flag changes, key revocations).
        from console.api import auth, snapshot  # noqa: F401
