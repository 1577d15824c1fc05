from django.apps import AppConfig


class FlagsConfig(AppConfig):
    name = "console.flags"
    label = "flags"
