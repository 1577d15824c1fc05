from django.apps import AppConfig


class ReleasesConfig(AppConfig):
    name = "console.releases"
    label = "releases"

    def ready(self) -> None:
        # Budgets (console.usage, a layer below) ask the release policy where a breaker may fire.
        from console.releases.policies import breaker_allowed
        from console.usage.budgets import set_breaker_rule

        set_breaker_rule(breaker_allowed)

        from console.registry import dashboard
        from console.releases.dashboard import operations

        dashboard.register(operations)
