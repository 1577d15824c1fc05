"""notify(): one call tells the right people in-app, by email and through webhooks."""

from __future__ import annotations

import hashlib
import hmac
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from console.core.canonical import canonical_json
from console.notifications.models import Notification, Webhook, WebhookDelivery

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 6


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notify(
    *,
    application,
    kind: str,
    title: str,
    body: str = "",
    url: str = "",
    roles: Iterable[str] = ("admin",),
    users: Iterable = (),
    data: dict | None = None,
) -> list[Notification]:
    """Notify members holding `roles` (plus `users`) in-app and by email, and queue a signed
    webhook delivery per matching webhook. Email and webhooks go out after commit."""
    from console.accounts.models import Membership

    recipients = {
        m.user
        for m in Membership.objects.filter(
            application=application, role__in=list(roles)
        ).select_related("user")
    }
    recipients.update(u for u in users if u is not None and getattr(u, "pk", None))
    notes = Notification.objects.bulk_create(
        [
            Notification(
                user=u, application=application, kind=kind, title=title[:200], body=body, url=url
            )
            for u in recipients
        ]
    )
    emails = sorted({u.email for u in recipients if u.email})
    payload = {
        "kind": kind,
        "application": application.key,
        "title": title,
        "body": body,
        "url": url,
        "at": timezone.now().isoformat(),
        "data": data or {},
    }
    deliveries = [
        WebhookDelivery(webhook=hook, kind=kind, payload=payload)
        for hook in Webhook.objects.filter(application=application, active=True)
        if hook.wants(kind)
    ]
    WebhookDelivery.objects.bulk_create(deliveries)

    def after_commit():
        if emails:
            try:
                send_mail(
                    f"[Airlock] {title}",
                    f"{body}\n\n{url}".strip(),
                    settings.DEFAULT_FROM_EMAIL,
                    emails,
                )
            except Exception:  # a mail outage must not undo or block the change itself
                log.exception("notification email failed: %s", kind)
        from console.notifications.tasks import deliver_webhook

        for delivery in deliveries:
            deliver_webhook.delay(delivery.pk)

    transaction.on_commit(after_commit)
    return notes


def deliver(delivery_id: int) -> WebhookDelivery:
    """POST the payload once; raises on a retryable failure so the task retries with backoff."""
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    if delivery.status != WebhookDelivery.Status.PENDING:
        return delivery
    body = canonical_json(delivery.payload).encode()
    request = urllib.request.Request(
        delivery.webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Airlock-Webhook/1",
            "X-Airlock-Event": delivery.kind,
            "X-Airlock-Delivery": str(delivery.pk),
            "X-Airlock-Signature": sign(delivery.webhook.secret, body),
        },
    )
    delivery.attempts += 1
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            delivery.response_status = response.status
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.last_error = ""
        delivery.save()
        return delivery
    except urllib.error.HTTPError as exc:
        delivery.response_status = exc.code
        delivery.last_error = f"HTTP {exc.code}"
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            # The receiver refuses this payload: retrying the same bytes will not help.
            delivery.status = WebhookDelivery.Status.FAILED
            delivery.save()
            return delivery
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        delivery.last_error = f"{type(exc).__name__}: {exc}"[:500]
    if delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
    delivery.save()
    if delivery.status == WebhookDelivery.Status.PENDING:
        raise RetryableDelivery(delivery.last_error)
    return delivery


class RetryableDelivery(Exception):
    pass


def unread(user, limit: int = 20) -> list[Notification]:
    return list(Notification.objects.filter(user=user, read_at__isnull=True)[:limit])


def mark_read(user, ids: list[int] | None = None) -> int:
    qs = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    return qs.update(read_at=timezone.now())
