"""bin/web's workers compile every console template and import every view before their first
request (console/gunicorn_conf.py: post_worker_init → warm_up)."""

import sys
from pathlib import Path

from django.conf import settings
from django.template import engines

from console import gunicorn_conf


def cached_loader():
    """django's cached loader, inside django-template-partials' wrapping loader."""
    loader = engines["django"].engine.template_loaders[0]
    while not hasattr(loader, "get_template_cache"):
        (loader,) = loader.loaders
    return loader


def cached_names() -> set[str]:
    return {key.split("-")[0] for key in cached_loader().get_template_cache}


def test_warm_up_compiles_every_console_template_into_the_workers_cache():
    cached_loader().reset()
    assert "evals/compare.html" not in cached_names()
    folder = Path(settings.TEMPLATES[0]["DIRS"][0])
    templates = {str(p.relative_to(folder)) for p in folder.rglob("*.html")}

    assert gunicorn_conf.warm_up() == len(templates) >= 60
    assert templates <= cached_names()
    assert {"evals/compare.html", "usage/dashboard.html", "base.html"} <= templates
    assert "console.evals.views" in sys.modules and "console.usage.views" in sys.modules
