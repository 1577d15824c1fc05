"""The Celery application: evals, rollups, scheduled rollouts and budget checks run here."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("airlock")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

import console.core.celery_context  # noqa: E402,F401  (connects the request-id signals)


@worker_init.connect
def _survive_broker_restarts(**kwargs) -> None:
    """Only workers consume and acknowledge messages, so only they pay for importing the Redis
    transport to patch it (see console/core/broker.py)."""
    from console.core import broker

    broker.install()


@worker_init.connect
def _load_tls_roots(**kwargs) -> None:
    """Load the CA bundle once at start, not on a run's first model call (see
    console.core.egress.ssl_context)."""
    from console.core import egress

    egress.ssl_context()
