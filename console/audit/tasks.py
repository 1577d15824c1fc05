import logging

from celery import shared_task

from console.audit import anchors

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def anchor_audit_head() -> int | None:
    """Every minute from beat: publish the audit chain's head outside the database. Anchoring is
    off (logged, not an error) while AIRLOCK_AUDIT_ANCHOR_FILE is unset."""
    if anchors.configured_file() is None:
        log.info("audit anchoring off: AIRLOCK_AUDIT_ANCHOR_FILE is not set")
        return None
    head, _ = anchors.anchor_head()
    return head.seq if head else None
