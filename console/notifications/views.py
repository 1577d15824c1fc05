"""The webhooks admin page: an application's outgoing webhooks with their recent deliveries;
add one (its signing secret shown once), disable/enable, delete."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, F, Q, Window
from django.db.models.functions import RowNumber
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.accounts.roles import ADMIN
from console.core import shown_once
from console.core.permissions import access_application
from console.notifications import services
from console.notifications.models import Webhook, WebhookDelivery

RECENT_DELIVERIES = 20  # per webhook, on the page
FAILURE_WINDOW = timedelta(days=7)


def _webhook_rows(application) -> list[Webhook]:
    """The application's webhooks, each with `recent` (its last deliveries, newest first),
    `failures` (failed deliveries in the last 7 days) and `delivery_count`: two queries."""
    since = timezone.now() - FAILURE_WINDOW
    hooks = list(
        Webhook.objects.filter(application=application)
        .defer("secret")
        .annotate(
            delivery_count=Count("deliveries"),
            failures=Count(
                "deliveries",
                filter=Q(
                    deliveries__status=WebhookDelivery.Status.FAILED,
                    deliveries__created_at__gte=since,
                ),
            ),
        )
        .order_by("-active", "created_at", "pk")
    )
    recent: dict[int, list[WebhookDelivery]] = defaultdict(list)
    if hooks:
        rows = (
            WebhookDelivery.objects.filter(webhook__application=application)
            .defer("payload")
            .annotate(
                rank=Window(
                    RowNumber(),
                    partition_by=[F("webhook_id")],
                    order_by=[F("created_at").desc(), F("pk").desc()],
                )
            )
            .filter(rank__lte=RECENT_DELIVERIES)
            .order_by("webhook_id", "rank")
        )
        for delivery in rows:
            recent[delivery.webhook_id].append(delivery)
    for hook in hooks:
        hook.recent = recent[hook.pk]
        hook.last = hook.recent[0] if hook.recent else None
    return hooks


def _page(
    request: HttpRequest,
    application,
    *,
    created: services.CreatedWebhook | None = None,
    errors: dict[str, str] | None = None,
    values: dict | None = None,
) -> HttpResponse:
    response = render(
        request,
        "notifications/webhooks.html",
        {
            "application": application,
            "webhooks": _webhook_rows(application),
            "created": created,
            "errors": errors or {},
            "values": values or {},
            "families": [f"{f}." for f in services.EVENT_FAMILIES],
            "recent_limit": RECENT_DELIVERIES,
            "max_webhooks": services.MAX_WEBHOOKS_PER_APPLICATION,
            "https_required": services.https_required(),
            "max_attempts": services.MAX_ATTEMPTS,
        },
    )
    # The page may hold a signing secret: never cache it anywhere.
    response["Cache-Control"] = "no-store"
    return response


def _slot(application) -> str:
    return f"webhook-secret:{application.pk}"


def _taken(request: HttpRequest, application) -> services.CreatedWebhook | None:
    """The webhook added just before this page and its secret, once."""
    kept = shown_once.take(request, _slot(application))
    if not kept:
        return None
    hook = Webhook.objects.filter(application=application, pk=kept["webhook"]).first()
    return services.CreatedWebhook(hook, kept["secret"]) if hook is not None else None


@login_required
def webhooks(request: HttpRequest, app: str) -> HttpResponse:
    """Admins list and add webhooks. A new secret is shown on the page the POST redirects to,
    once: reloading that page neither shows it again nor adds another webhook."""
    application = access_application(request, app, ADMIN)
    if request.method != "POST":
        return _page(request, application, created=_taken(request, application))
    values = {"url": request.POST.get("url", "").strip(), "events": request.POST.get("events", "")}
    try:
        created = services.create_webhook(
            actor=request.user, application=application, url=values["url"], events=values["events"]
        )
    except ValidationError as exc:
        errors = {k: " ".join(v) for k, v in exc.message_dict.items()}
        return _page(request, application, errors=errors, values=values)
    shown_once.keep(
        request, _slot(application), {"webhook": created.webhook.pk, "secret": created.secret}
    )
    return redirect("notifications:webhooks", app=app)


def _webhook(request: HttpRequest, app: str, hook_id: int) -> Webhook:
    application = access_application(request, app, ADMIN)
    hook = Webhook.objects.filter(application=application, pk=hook_id).defer("secret").first()
    if hook is None:
        raise Http404("No such webhook")
    return hook


def _set_active(request: HttpRequest, app: str, hook_id: int, active: bool) -> HttpResponse:
    hook = _webhook(request, app, hook_id)
    changed = services.set_webhook_active(actor=request.user, webhook=hook, active=active)
    if not changed:
        messages.info(request, f"{hook.url} was already {'enabled' if active else 'disabled'}.")
    elif active:
        messages.success(request, f"Enabled {hook.url}: it receives the next matching event.")
    else:
        messages.success(
            request, f"Disabled {hook.url}: nothing more is sent to it, queued retries included."
        )
    return redirect("notifications:webhooks", app=app)


@login_required
@require_POST
def webhook_disable(request: HttpRequest, app: str, hook_id: int) -> HttpResponse:
    return _set_active(request, app, hook_id, active=False)


@login_required
@require_POST
def webhook_enable(request: HttpRequest, app: str, hook_id: int) -> HttpResponse:
    return _set_active(request, app, hook_id, active=True)


@login_required
@require_POST
def webhook_delete(request: HttpRequest, app: str, hook_id: int) -> HttpResponse:
    hook = _webhook(request, app, hook_id)
    services.delete_webhook(actor=request.user, webhook=hook)
    messages.success(request, f"Deleted the webhook to {hook.url} and its delivery history.")
    return redirect("notifications:webhooks", app=app)


@login_required
@require_POST
def webhook_test(request: HttpRequest, app: str, hook_id: int) -> HttpResponse:
    """Send one signed test event to the webhook (queued: its result joins Recent deliveries)."""
    hook = _webhook(request, app, hook_id)
    try:
        delivery = services.send_test_delivery(actor=request.user, webhook=hook)
    except ValidationError as exc:
        messages.error(request, f"Cannot send a test to {hook.url}: {' '.join(exc.messages)}.")
    else:
        messages.success(
            request,
            f"Sent a test event to {hook.url} (delivery #{delivery.pk}, "
            f"X-Airlock-Event: {services.TEST_KIND}): its result appears under "
            "Recent deliveries within seconds.",
        )
    return redirect("notifications:webhooks", app=app)
