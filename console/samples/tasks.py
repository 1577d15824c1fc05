import logging

from celery import shared_task
from django.db import DatabaseError

from console.samples import services

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def judge_samples() -> dict:
    """Every minute from beat: judge waiting samples within each application's daily cap."""
    result = services.judge_pending()
    return {"judged": result.judged, "failed": result.failed, "capped": result.capped}


@shared_task(acks_late=True)
def maintain_partitions(older_than_days: int) -> int:
    """Hourly from beat: make the next days' partitions and drop those past retention."""
    return services.purge(older_than_days=older_than_days)


@shared_task(acks_late=True)
def check_monitors() -> dict:
    """Every minute from beat: fold the samples stored since the last minute into the hourly
    rollups, then evaluate the monitors; raise, escalate or hold back alerts. A fold that fails
    is logged and the sweep goes on: readings take what is not folded from the raw samples."""
    from console.samples import monitors, rollups

    try:
        rollups.rollup()
    except DatabaseError:
        log.exception("sample rollup failed; monitors read the raw samples meanwhile")
    return monitors.sweep()
