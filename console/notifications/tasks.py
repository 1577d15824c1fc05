from celery import shared_task

from console.notifications import services
from console.notifications.models import WebhookDelivery


@shared_task(
    acks_late=True,
    autoretry_for=(services.RetryableDelivery,),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=services.MAX_ATTEMPTS,
)
def deliver_webhook(delivery_id: int) -> str:
    try:
        return services.deliver(delivery_id).status
    except WebhookDelivery.DoesNotExist:
        return "deleted"  # its webhook was deleted while the delivery waited
