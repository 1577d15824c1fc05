from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "console.experiments"
    label = "experiments"
    verbose_name = "Online experiments"
