from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "console.evals"
    label = "evals"
