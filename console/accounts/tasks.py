from celery import shared_task
from django.utils.dateparse import parse_datetime

from console.accounts import keys


@shared_task(ignore_result=True)
def record_key_use(key_id: int, at: str) -> None:
    """Store when a runtime API key was last used (throttled to once a minute by the caller)."""
    moment = parse_datetime(at)
    if moment is not None:
        keys.record_last_used(key_id=key_id, at=moment)
