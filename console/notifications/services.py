"""notify(): one call tells the right people in-app, by email and through webhooks.

Also the webhook admin writes (create, enable/disable, delete), each with its audit event.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from console.audit import services as audit
from console.core import egress
from console.core.canonical import canonical_json
from console.notifications.models import Notification, Webhook, WebhookDelivery

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 6
# What a failed delivery shows: the same words whatever went wrong on the network, so the page
# cannot be used to tell an open port from a closed or filtered one. Details go to the log.
DELIVERY_FAILED = "delivery failed"


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
    if not delivery.webhook.active:
        # Disabled after this delivery was queued: an admin turned it off, so send nothing.
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.last_error = "webhook disabled before delivery"
        delivery.save(update_fields=["status", "last_error"])
        return delivery
    body = canonical_json(delivery.payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Airlock-Webhook/1",
        "X-Airlock-Event": delivery.kind,
        "X-Airlock-Delivery": str(delivery.pk),
        "X-Airlock-Signature": sign(delivery.webhook.secret, body),
    }
    delivery.attempts += 1
    try:
        # The guard checks the URL again here (a hook saved under other rules, or a name that
        # now resolves elsewhere), connects to the address it checked and follows no redirect.
        response = egress.client().post(
            delivery.webhook.url, content=body, headers=headers, timeout=10
        )
    except egress.EgressRefused:
        # Refused every time until the allowlist changes: stop instead of retrying.
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.last_error = f"{DELIVERY_FAILED}: {egress.REFUSED}"
        delivery.save()
        return delivery
    except egress.RedirectRefused as exc:
        delivery.response_status = exc.status
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.last_error = f"HTTP {exc.status}: redirects are not followed"
        delivery.save()
        return delivery
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        log.warning(
            "webhook delivery %s to %s failed: %s: %s",
            delivery.pk,
            delivery.webhook.url,
            type(exc).__name__,
            exc,
        )
        delivery.last_error = DELIVERY_FAILED
    else:
        delivery.response_status = response.status_code
        if response.status_code < 300:
            delivery.status = WebhookDelivery.Status.DELIVERED
            delivery.delivered_at = timezone.now()
            delivery.last_error = ""
            delivery.save()
            return delivery
        delivery.last_error = f"HTTP {response.status_code}"
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            # The receiver refuses this payload: retrying the same bytes will not help.
            delivery.status = WebhookDelivery.Status.FAILED
            delivery.save()
            return delivery
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


# ---------------------------------------------------------------------------------------------
# Webhook administration
# ---------------------------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"
MAX_WEBHOOKS_PER_APPLICATION = 20
MAX_EVENT_PREFIXES = 20
# The families of event kinds Airlock sends (the part before the first dot of `kind`).
EVENT_FAMILIES = ("promotion", "rollout", "flag", "budget", "usage")
_EVENT_PREFIX = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]*)*$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Names that can never receive a delivery: RFC 2606/6761 reserved names.
_UNDELIVERABLE_SUFFIXES = (".invalid", ".example", ".test")
_DOCUMENTATION_HOSTS = ("example.com", "example.net", "example.org")
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class CreatedWebhook:
    webhook: Webhook
    secret: str  # the signing secret: shown to the admin once, never logged or audited


def _url_error(message: str) -> ValidationError:
    return ValidationError({"url": message})


def validate_webhook_url(raw: str) -> str:
    """The URL a webhook may POST to, or ValidationError naming `url`.

    - http or https only, with a host name; no user name or password in the URL (the payload is
      authenticated by its signature, and credentials in a URL end up in logs);
    - no host that obviously cannot receive a delivery: reserved names (*.invalid, *.example,
      *.test, example.com/.net/.org), a name without a dot, the unspecified address 0.0.0.0 / ::,
      multicast or broadcast addresses;
    - in production (DEBUG off) https is required, unless the deployment sets
      AIRLOCK_WEBHOOK_ALLOW_HTTP (e.g. receivers inside a private network without TLS);
    - the destination passes the egress guard: listed in AIRLOCK_EGRESS_ALLOW, and this
      machine, private networks or metadata services only when listed exactly. The guard checks
      it again at every delivery.
    """
    url = (raw or "").strip()
    if not url:
        raise _url_error("enter the URL Airlock should POST events to")
    if len(url) > Webhook._meta.get_field("url").max_length:
        raise _url_error("at most 500 characters")
    if any(c.isspace() for c in url):
        raise _url_error("a URL cannot contain spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _url_error("this is not a valid URL (check the host and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _url_error("use an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise _url_error(
            "remove the user name/password from the URL: receivers verify the "
            "X-Airlock-Signature header instead"
        )
    if port == 0:
        raise _url_error("port 0 cannot receive anything")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _url_error("the URL needs a host name, e.g. https://hooks.example.org/airlock")
    if parts.fragment:
        raise _url_error("remove the #fragment: it is never sent to the receiver")
    _check_host(host)
    if scheme == "http" and https_required():
        raise _url_error(
            "use https:// — plain http is refused in production unless "
            "AIRLOCK_WEBHOOK_ALLOW_HTTP is set"
        )
    try:
        egress.check_url(url, unresolved_ok=True)
    except egress.EgressRefused:
        raise _url_error(
            "this destination is not allowed (operators list allowed receivers in "
            "AIRLOCK_EGRESS_ALLOW)"
        ) from None
    return url


def https_required() -> bool:
    """Production (DEBUG off) requires https, unless AIRLOCK_WEBHOOK_ALLOW_HTTP is set."""
    return not settings.DEBUG and not getattr(settings, "AIRLOCK_WEBHOOK_ALLOW_HTTP", False)


def _check_host(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
            raise _url_error(f"{host} is not an address a request can be sent to")
        return  # loopback, private, metadata: the egress guard decides
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _url_error(f"{host} is not a valid host name") from None
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise _url_error(f"{host} is not a valid host name")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return  # this machine: the egress guard decides
    if len(labels) < 2:
        raise _url_error(f"{host} is not a full host name (e.g. hooks.{host}.com)")
    if name.endswith(_UNDELIVERABLE_SUFFIXES) or any(
        name == d or name.endswith("." + d) for d in _DOCUMENTATION_HOSTS
    ):
        raise _url_error(f"{host} is a reserved example name that no server answers")


def parse_event_prefixes(raw: str | Iterable[str]) -> list[str]:
    """Event-kind prefixes from text (comma, space or newline separated) or a list; [] means
    every kind. ValidationError naming `events` for anything Airlock never sends."""
    items = raw.replace(",", " ").split() if isinstance(raw, str) else [str(x) for x in raw]
    prefixes: list[str] = []
    for item in (i.strip() for i in items):
        if not item or item in prefixes:
            continue
        if len(item) > 60 or not _EVENT_PREFIX.match(item):
            raise ValidationError(
                {"events": f"“{item[:60]}” is not an event kind prefix (lower case, e.g. budget.)"}
            )
        if item.split(".", 1)[0] not in EVENT_FAMILIES:
            raise ValidationError(
                {"events": f"Airlock sends no “{item}” events: use a prefix of "
                 + ", ".join(f"{f}." for f in EVENT_FAMILIES)}
            )  # fmt: skip
        prefixes.append(item)
    if len(prefixes) > MAX_EVENT_PREFIXES:
        raise ValidationError({"events": f"at most {MAX_EVENT_PREFIXES} prefixes"})
    return prefixes


def _describe(hook: Webhook) -> dict:
    return {"url": hook.url, "events": list(hook.events), "active": hook.active}


def create_webhook(
    *, actor: Any, application, url: str, events: str | Iterable[str] = ()
) -> CreatedWebhook:
    """Add an outgoing webhook with a fresh signing secret (returned once, never audited)."""
    url = validate_webhook_url(url)
    prefixes = parse_event_prefixes(events)
    with transaction.atomic():
        existing = list(
            Webhook.objects.select_for_update().filter(application=application).only("url")
        )
        if any(hook.url == url for hook in existing):
            raise _url_error("this application already has a webhook for this URL")
        if len(existing) >= MAX_WEBHOOKS_PER_APPLICATION:
            raise _url_error(
                f"an application can have at most {MAX_WEBHOOKS_PER_APPLICATION} webhooks: "
                "delete one first"
            )
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        hook = Webhook.objects.create(
            application=application, url=url, secret=secret, events=prefixes, active=True
        )
        audit.record(
            actor=actor,
            action="webhook.create",
            obj=hook,
            object_label=url,
            application=application,
            after=_describe(hook),
        )
    return CreatedWebhook(hook, secret)


def set_webhook_active(*, actor: Any, webhook: Webhook, active: bool) -> bool:
    """Enable or disable a webhook. Returns False (and records nothing) when it already was.

    A disabled webhook gets no new deliveries, and deliveries still waiting for a retry are
    dropped (marked failed) instead of being sent."""
    with transaction.atomic():
        hook = Webhook.objects.select_for_update().get(pk=webhook.pk)
        if hook.active == active:
            return False
        before = _describe(hook)
        hook.active = active
        hook.save(update_fields=["active"])
        audit.record(
            actor=actor,
            action="webhook.enable" if active else "webhook.disable",
            obj=hook,
            object_label=hook.url,
            application=hook.application_id,
            before=before,
            after=_describe(hook),
        )
    webhook.active = active
    return True


TEST_KIND = "webhook.test"


def send_test_delivery(*, actor: Any, webhook: Webhook) -> WebhookDelivery:
    """Queue one signed test event to `webhook`, whatever its event filter, through the same
    path as every delivery: signed with its secret, sent by the worker through the egress guard
    (allowlist, resolved address, no redirects), retried like the others. Refused for a disabled
    webhook, which receives nothing. Audited; sent after commit."""
    with transaction.atomic():
        hook = Webhook.objects.select_for_update().get(pk=webhook.pk)
        if not hook.active:
            raise ValidationError(
                "this webhook is disabled and receives nothing, test events included: "
                "enable it first"
            )
        application = hook.application
        title = f"Test delivery from Airlock for {application.name}"
        delivery = WebhookDelivery.objects.create(
            webhook=hook,
            kind=TEST_KIND,
            payload={
                "kind": TEST_KIND,
                "application": application.key,
                "title": title,
                "body": "A test event sent from the Webhooks page. Nothing happened in Airlock.",
                "url": "",
                "at": timezone.now().isoformat(),
                "data": {"test": True},
            },
        )
        audit.record(
            actor=actor,
            action="webhook.test",
            obj=hook,
            object_label=hook.url,
            application=application,
            after={"delivery": delivery.pk, "kind": TEST_KIND},
        )

        def after_commit():
            from console.notifications.tasks import deliver_webhook

            deliver_webhook.delay(delivery.pk)

        transaction.on_commit(after_commit)
    return delivery


def delete_webhook(*, actor: Any, webhook: Webhook) -> None:
    """Delete a webhook and its delivery history; queued deliveries are dropped."""
    with transaction.atomic():
        hook = Webhook.objects.select_for_update().filter(pk=webhook.pk).first()
        if hook is None:
            return
        audit.record(
            actor=actor,
            action="webhook.delete",
            obj=hook,
            object_label=hook.url,
            application=hook.application_id,
            before=_describe(hook) | {"deliveries": hook.deliveries.count()},
        )
        hook.delete()
