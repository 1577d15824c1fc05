"""What `collectstatic` gathers: the console's own files and plotly.js, not the rest of the
plotly package's data folder (its Jupyter widget bundle, sample datasets and templates)."""

from django.contrib.staticfiles.apps import StaticFilesConfig


class ConsoleStaticFilesConfig(StaticFilesConfig):
    ignore_patterns = [*StaticFilesConfig.ignore_patterns, "widgetbundle.js", "datasets", "templates"]
