"""The Celery application: evals, rollups, scheduled rollouts and budget checks run here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("airlock")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

import console.core.celery_context  # noqa: E402,F401  (connects the request-id signals)
from console.core import broker  # noqa: E402

broker.install()  # workers survive a Redis restart (see console/core/broker.py)
