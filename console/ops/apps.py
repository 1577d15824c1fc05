from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Commands that work across every app: the demo seed, `runconsole` and the benches.

    The top layer: it may import any app, and no app imports it (docs/architecture.md, Layers)."""

    name = "console.ops"
    label = "ops"
