from django.apps import AppConfig


class SamplesConfig(AppConfig):
    name = "console.samples"
    label = "samples"
