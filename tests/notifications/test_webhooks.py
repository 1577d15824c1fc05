"""The webhooks admin page and its services: create (secret shown once), validate the URL and
the event filter, disable/enable, delete — each audited once, admins only, no N+1 queries."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from console.accounts.roles import Role
from console.audit.models import AuditEvent
from console.notifications import services, tasks
from console.notifications.models import Webhook, WebhookDelivery
from tests.factories import make_application, make_member
from tests.notifications.test_notifications import Receiver

pytestmark = pytest.mark.django_db

HOOK = "https://hooks.acme-corp.net/airlock"


@pytest.fixture
def admin(member):
    return member(Role.ADMIN, "ada")


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


# The receivers these tests register, listed as an operator would in AIRLOCK_EGRESS_ALLOW
# (internal ones by their exact name or address).
RECEIVERS = [
    "*.acme-corp.net",
    "10.1.2.3",
    "[2001:db8::1]:8443",
    "hooks.internal.svc.cluster.local",
    "xn--bcher-kva.de",
]


@pytest.fixture(autouse=True)
def receivers_allowed(settings):
    settings.AIRLOCK_EGRESS_ALLOW = [*settings.AIRLOCK_EGRESS_ALLOW, *RECEIVERS]


@pytest.fixture
def production(settings):
    """Production mode for URL rules (pytest-django runs with DEBUG off anyway: be explicit)."""
    settings.DEBUG = False
    settings.AIRLOCK_WEBHOOK_ALLOW_HTTP = False
    return settings


def page_url(application) -> str:
    return reverse("notifications:webhooks", kwargs={"app": application.key})


def action_url(application, hook, action: str) -> str:
    return reverse(
        f"notifications:webhook_{action}", kwargs={"app": application.key, "hook_id": hook.pk}
    )


def state() -> tuple:
    """Everything a refused write must leave unchanged."""
    return (
        sorted(Webhook.objects.values_list("pk", "url", "events", "active", "secret")),
        WebhookDelivery.objects.count(),
        AuditEvent.objects.count(),
    )


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-seq").first()


# --- services: create ------------------------------------------------------------------------


def test_create_makes_a_secret_and_audits_without_it(admin, application, production):
    created = services.create_webhook(
        actor=admin, application=application, url=HOOK, events="promotion., budget.threshold"
    )
    hook = created.webhook
    assert created.secret.startswith("whsec_") and len(created.secret) > 40
    assert Webhook.objects.get(pk=hook.pk).secret == created.secret
    assert (hook.url, hook.events, hook.active) == (HOOK, ["promotion.", "budget.threshold"], True)
    event = last_event()
    assert (event.action, event.object_id, event.application_id) == (
        "webhook.create",
        str(hook.pk),
        application.pk,
    )
    assert event.after == {
        "url": HOOK,
        "events": ["promotion.", "budget.threshold"],
        "active": True,
    }
    assert created.secret not in f"{event.before} {event.after} {event.object_label}"
    other = services.create_webhook(actor=admin, application=application, url=HOOK + "/2")
    assert other.secret != created.secret and other.webhook.events == []


def test_the_secret_shown_verifies_real_deliveries(admin, application, settings, allow_loopback):
    settings.DEBUG = True  # a local receiver on 127.0.0.1 over http
    receiver = Receiver([200])
    allow_loopback(receiver.server.server_address[1])
    try:
        created = services.create_webhook(actor=admin, application=application, url=receiver.url)
        services.notify(application=application, kind="budget.threshold", title="t", roles=())
        delivery = WebhookDelivery.objects.get(webhook=created.webhook)
        assert services.deliver(delivery.pk).status == "delivered"
    finally:
        receiver.close()
    [request] = receiver.requests
    expected = hmac.new(created.secret.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-Airlock-Signature"] == f"sha256={expected}"


BAD_URLS = [
    ("", "enter the URL"),
    ("   ", "enter the URL"),
    ("hooks.acme-corp.net/airlock", "http:// or https://"),
    ("ftp://hooks.acme-corp.net/x", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("https://user:pw@hooks.acme-corp.net/x", "user name/password"),
    ("https://token@hooks.acme-corp.net/x", "user name/password"),
    ("https:///path-only", "needs a host name"),
    ("https://hooks.acme-corp.net:99999/x", "not a valid URL"),
    ("https://hooks.acme-corp.net:0/x", "port 0"),
    ("https://hooks acme.net/x", "spaces"),
    ("https://hooks.acme-corp.net/x#frag", "#fragment"),
    ("https://intranet/x", "not a full host name"),
    ("https://under_score.acme.net/x", "not a valid host name"),
    ("https://-bad.acme.net/x", "not a valid host name"),
    ("https://hooks.example.com/x", "reserved example name"),
    ("https://example.org/x", "reserved example name"),
    ("https://receiver.invalid/x", "reserved example name"),
    ("https://receiver.test/x", "reserved example name"),
    ("https://0.0.0.0/x", "not an address"),
    ("https://[::]/x", "not an address"),
    ("https://224.0.0.1/x", "not an address"),
    ("https://255.255.255.255/x", "not an address"),
    ("https://localhost/x", "this destination is not allowed"),
    ("https://127.0.0.1:8000/x", "this destination is not allowed"),
    ("https://[::1]/x", "this destination is not allowed"),
    ("https://api.localhost/x", "this destination is not allowed"),
    ("https://10.1.2.4/x", "this destination is not allowed"),
    ("https://hooks.partner.io/x", "this destination is not allowed"),
    ("http://hooks.acme-corp.net/x", "use https://"),
    ("https://hooks.acme-corp.net/" + "x" * 500, "at most 500 characters"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_urls_are_refused_naming_the_field(admin, application, production, url, message):
    before = state()
    with pytest.raises(ValidationError) as exc:
        services.create_webhook(actor=admin, application=application, url=url)
    assert list(exc.value.message_dict) == ["url"]
    assert message in exc.value.message_dict["url"][0]
    assert state() == before


@pytest.mark.parametrize(
    "url",
    [
        HOOK,
        "https://HOOKS.Acme-Corp.net:8443/a/b?token=abc",
        "https://10.1.2.3/hook",
        "https://[2001:db8::1]:8443/hook",
        "https://hooks.internal.svc.cluster.local/x",
        "https://bücher.de/hook",
    ],
)
def test_good_urls_are_accepted_in_production(admin, application, production, url):
    assert services.create_webhook(actor=admin, application=application, url=url).webhook.pk


def test_http_needs_debug_or_the_allow_http_setting(admin, application, production):
    url = "http://hooks.acme-corp.net/x"
    with pytest.raises(ValidationError, match="AIRLOCK_WEBHOOK_ALLOW_HTTP"):
        services.create_webhook(actor=admin, application=application, url=url)
    production.AIRLOCK_WEBHOOK_ALLOW_HTTP = True
    assert services.create_webhook(actor=admin, application=application, url=url)
    # Loopback stays refused in production even with plain http allowed.
    with pytest.raises(ValidationError, match="this destination is not allowed"):
        services.create_webhook(actor=admin, application=application, url="http://127.0.0.1/x")
    production.AIRLOCK_WEBHOOK_ALLOW_HTTP = False
    production.DEBUG = True  # a laptop: http is fine, loopback still only where it is listed
    with pytest.raises(ValidationError, match="this destination is not allowed"):
        services.create_webhook(actor=admin, application=application, url="http://127.0.0.1:9000/x")
    production.AIRLOCK_EGRESS_ALLOW = [
        *production.AIRLOCK_EGRESS_ALLOW,
        "127.0.0.1:9000",
        "localhost:9000",
    ]
    for local in ("http://127.0.0.1:9000/x", "http://localhost:9000/x"):
        assert services.create_webhook(actor=admin, application=application, url=local)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ("Promotion.", "not an event kind prefix"),
        ("promotion.*", "not an event kind prefix"),
        (".budget", "not an event kind prefix"),
        ("promotion;drop", "not an event kind prefix"),
        ("budget." + "x" * 60, "not an event kind prefix"),
        ("promtion.", "Airlock sends no “promtion.” events"),
        ("budget. deploy.", "Airlock sends no “deploy.” events"),
        (" ".join(f"budget.k{n}" for n in range(21)), "at most 20 prefixes"),
    ],
)
def test_bad_event_prefixes_are_refused_naming_the_field(
    admin, application, production, events, message
):
    before = state()
    with pytest.raises(ValidationError) as exc:
        services.create_webhook(actor=admin, application=application, url=HOOK, events=events)
    assert list(exc.value.message_dict) == ["events"]
    assert message in exc.value.message_dict["events"][0]
    assert state() == before


def test_event_prefixes_are_split_and_deduplicated(admin, application, production):
    hook = services.create_webhook(
        actor=admin, application=application, url=HOOK, events="budget.,promotion.\nbudget. flag"
    ).webhook
    assert hook.events == ["budget.", "promotion.", "flag"]
    assert hook.wants("flag.kill") and hook.wants("budget.threshold")
    assert not hook.wants("usage.anomaly")


def test_a_duplicate_url_and_too_many_webhooks_are_refused(admin, application, production):
    services.create_webhook(actor=admin, application=application, url=HOOK)
    with pytest.raises(ValidationError, match="already has a webhook for this URL"):
        services.create_webhook(actor=admin, application=application, url=HOOK)
    # The same URL in another application is that application's business.
    services.create_webhook(actor=admin, application=make_application("elsewhere"), url=HOOK)
    for n in range(2, services.MAX_WEBHOOKS_PER_APPLICATION + 1):
        services.create_webhook(actor=admin, application=application, url=f"{HOOK}/{n}")
    before = state()
    with pytest.raises(ValidationError, match="at most 20 webhooks") as exc:
        services.create_webhook(actor=admin, application=application, url=f"{HOOK}/one-more")
    assert list(exc.value.message_dict) == ["url"]
    assert state() == before


# --- services: enable, disable, delete -------------------------------------------------------


@pytest.fixture
def hook(admin, application, production):
    return services.create_webhook(actor=admin, application=application, url=HOOK).webhook


def test_disable_and_enable_are_audited_once_each(admin, hook):
    assert services.set_webhook_active(actor=admin, webhook=hook, active=False) is True
    event = last_event()
    assert event.action == "webhook.disable" and event.object_id == str(hook.pk)
    assert (event.before["active"], event.after["active"]) == (True, False)
    assert not Webhook.objects.get(pk=hook.pk).active
    events = AuditEvent.objects.count()
    assert services.set_webhook_active(actor=admin, webhook=hook, active=False) is False
    assert AuditEvent.objects.count() == events  # nothing changed, nothing recorded
    assert services.set_webhook_active(actor=admin, webhook=hook, active=True) is True
    assert last_event().action == "webhook.enable"
    assert Webhook.objects.get(pk=hook.pk).active


def test_a_disabled_webhook_gets_nothing_not_even_queued_retries(
    admin, application, settings, allow_loopback
):
    settings.DEBUG = True
    receiver = Receiver([])
    allow_loopback(receiver.server.server_address[1])
    try:
        created = services.create_webhook(actor=admin, application=application, url=receiver.url)
        services.notify(application=application, kind="flag.kill", title="t", roles=())
        queued = WebhookDelivery.objects.get()
        services.set_webhook_active(actor=admin, webhook=created.webhook, active=False)
        services.notify(application=application, kind="flag.kill", title="t2", roles=())
        assert WebhookDelivery.objects.count() == 1  # no new delivery for a disabled hook
        result = services.deliver(queued.pk)
    finally:
        receiver.close()
    assert (result.status, result.last_error) == ("failed", "webhook disabled before delivery")
    assert receiver.requests == []


def test_delete_is_audited_and_takes_its_deliveries(admin, application, hook):
    delivery = WebhookDelivery.objects.create(webhook=hook, kind="flag.kill", payload={})
    services.delete_webhook(actor=admin, webhook=hook)
    assert not Webhook.objects.filter(pk=hook.pk).exists()
    assert not WebhookDelivery.objects.exists()
    event = last_event()
    assert (event.action, event.object_id, event.application_id) == (
        "webhook.delete",
        str(hook.pk),
        application.pk,
    )
    assert event.before == {"url": HOOK, "events": [], "active": True, "deliveries": 1}
    assert hook.secret not in str(event.before)
    # A delivery task still queued for it finds nothing and ends quietly.
    assert tasks.deliver_webhook.run(delivery.pk) == "deleted"


# --- views -----------------------------------------------------------------------------------


def test_admin_adds_a_webhook_and_sees_the_secret_once(admin_client, application, production):
    posted = admin_client.post(page_url(application), {"url": HOOK, "events": "promotion. budget."})
    # Post/Redirect/Get: the secret waits in the session, never in the URL.
    assert posted.status_code == 302 and posted["Location"] == page_url(application)
    response = admin_client.get(posted["Location"])
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    secret = response.context["created"].secret
    hook = Webhook.objects.get()
    assert hook.secret == secret and hook.events == ["promotion.", "budget."]
    body = response.content.decode()
    assert secret in body and "X-Airlock-Signature: sha256=&lt;hex&gt;" in body
    assert 'data-copy="#new-secret"' in body and "js/copy.js" in body
    assert last_event().action == "webhook.create"
    # A reload shows the secret no more and adds no second webhook.
    listing = admin_client.get(page_url(application))
    assert listing.status_code == 200 and listing["Cache-Control"] == "no-store"
    assert secret not in listing.content.decode() and HOOK in listing.content.decode()
    assert Webhook.objects.count() == 1
    assert AuditEvent.objects.filter(action="webhook.create").count() == 1


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"url": "", "events": ""}, "url", "enter the URL"),
        ({"url": "http://hooks.acme-corp.net/x"}, "url", "use https://"),
        ({"url": "https://me:pw@hooks.acme-corp.net/x"}, "url", "user name/password"),
        ({"url": HOOK, "events": "deploys."}, "events", "Airlock sends no"),
    ],
)
def test_form_errors_name_the_field_and_keep_the_input(
    admin_client, application, production, data, field, message
):
    before = state()
    response = admin_client.post(page_url(application), data)
    assert response.status_code == 200
    assert list(response.context["errors"]) == [field]
    assert message in response.context["errors"][field]
    body = response.content.decode()
    assert 'class="field has-error"' in body and message in body
    assert response.context["values"]["url"] == data["url"]
    assert state() == before


def test_disable_enable_and_delete_from_the_page(admin_client, application, hook):
    response = admin_client.post(action_url(application, hook, "disable"), follow=True)
    assert response.redirect_chain == [(page_url(application), 302)]
    assert b"Disabled" in response.content and b"pill-removed" in response.content
    assert not Webhook.objects.get(pk=hook.pk).active
    again = admin_client.post(action_url(application, hook, "disable"), follow=True)
    assert b"was already disabled" in again.content
    admin_client.post(action_url(application, hook, "enable"))
    assert Webhook.objects.get(pk=hook.pk).active
    admin_client.post(action_url(application, hook, "delete"))
    assert not Webhook.objects.exists()
    actions = list(
        AuditEvent.objects.filter(action__startswith="webhook.")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["webhook.create", "webhook.disable", "webhook.enable", "webhook.delete"]


def test_only_admins_and_other_applications_ids_are_not_found(client, member, application, hook):
    users = [member(role, f"as-{role}") for role in (Role.VIEWER, Role.CURATOR, Role.ENGINEER)]
    users.append(member(Role.APPROVER, "as-approver"))
    other = make_application("other")
    outsider = make_member(other, Role.ADMIN, "other-admin")
    before = state()
    for user in users:
        client.force_login(user)
        assert client.get(page_url(application)).status_code == 403
        assert client.post(page_url(application), {"url": HOOK + "/x"}).status_code == 403
        for action in ("disable", "enable", "delete"):
            assert client.post(action_url(application, hook, action)).status_code == 403
    client.force_login(outsider)
    assert client.get(page_url(application)).status_code == 404
    for action in ("disable", "enable", "delete"):
        # Not a member of the webhook's application: it "does not exist".
        assert client.post(action_url(application, hook, action)).status_code == 404
        # Its id under the caller's own application: not found either.
        assert client.post(action_url(other, hook, action)).status_code == 404
    assert client.get(page_url(other)).status_code == 200
    assert HOOK.encode() not in client.get(page_url(other)).content
    client.logout()
    assert client.get(page_url(application)).status_code == 302
    assert state() == before


def test_writes_are_post_only(admin_client, application, hook):
    for action in ("disable", "enable", "delete"):
        assert admin_client.get(action_url(application, hook, action)).status_code == 405
    assert Webhook.objects.get(pk=hook.pk).active


def test_the_nav_links_the_page_for_admins_only(client, admin, member, application):
    client.force_login(admin)
    keys_page = client.get(reverse("accounts:api_keys", kwargs={"app": application.key}))
    assert page_url(application).encode() in keys_page.content
    client.force_login(member(Role.ENGINEER, "eng"))
    dashboard = client.get(reverse("registry:dashboard", kwargs={"app": application.key}))
    assert dashboard.status_code == 200 and page_url(application).encode() not in dashboard.content


def _deliveries(hook, n: int, start) -> None:
    statuses = ["delivered", "failed", "pending"]
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            webhook=hook,
            kind="budget.threshold",
            payload={"n": i},
            status=statuses[i % 3],
            attempts=1 if statuses[i % 3] != "pending" else 0,
            response_status=200 if statuses[i % 3] == "delivered" else 503,
            last_error="" if statuses[i % 3] == "delivered" else "HTTP 503",
            created_at=start + timedelta(minutes=i),
        )
        for i in range(n)
    )


def test_page_shows_status_failures_and_the_last_deliveries(admin_client, admin, application, hook):
    quiet = services.create_webhook(
        actor=admin, application=application, url=HOOK + "/quiet", events=["promotion."]
    ).webhook
    now = timezone.now()
    _deliveries(hook, 30, now - timedelta(hours=1))
    # Old failures fall outside the 7-day window.
    WebhookDelivery.objects.create(
        webhook=hook,
        kind="flag.kill",
        payload={},
        status="failed",
        created_at=now - timedelta(days=8),
    )
    response = admin_client.get(page_url(application))
    rows = {h.pk: h for h in response.context["webhooks"]}
    busy = rows[hook.pk]
    assert len(busy.recent) == 20 and busy.delivery_count == 31
    assert [d.created_at for d in busy.recent] == sorted(
        (d.created_at for d in busy.recent), reverse=True
    )
    assert busy.last.created_at == now - timedelta(hours=1) + timedelta(minutes=29)
    assert busy.failures == 10  # i % 3 == 1 for i < 30, not the 8-day-old one
    assert rows[quiet.pk].recent == [] and rows[quiet.pk].last is None
    body = response.content.decode()
    assert "last 20 of 31" in body and "none yet" in body and "Every event" in body
    assert "<code>promotion.</code>" in body


def test_webhooks_page_queries_do_not_grow_with_webhooks_or_deliveries(
    admin_client, admin, application, production, django_assert_max_num_queries
):
    first = services.create_webhook(actor=admin, application=application, url=HOOK).webhook
    _deliveries(first, 5, timezone.now() - timedelta(hours=1))
    # Session, user, application, permissions, webhooks, deliveries: about six.
    with django_assert_max_num_queries(8) as small:
        admin_client.get(page_url(application))
    for n in range(2, 11):
        hook = services.create_webhook(actor=admin, application=application, url=f"{HOOK}/{n}")
        _deliveries(hook.webhook, 40, timezone.now() - timedelta(hours=2))
    with django_assert_max_num_queries(len(small.captured_queries)) as large:
        response = admin_client.get(page_url(application))
    assert len(response.context["webhooks"]) == 10
    assert sum(len(h.recent) for h in response.context["webhooks"]) == 5 + 9 * 20
    assert len(large.captured_queries) == len(small.captured_queries)


# --- test delivery ---------------------------------------------------------------------------


@pytest.fixture
def eager_tasks():
    from console.celery import app as celery_app

    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager


def test_send_test_delivery_reaches_a_loopback_receiver_signed(
    admin_client, admin, application, settings, allow_loopback, eager_tasks,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    settings.DEBUG = True  # a local receiver on 127.0.0.1 over http
    receiver = Receiver([200])
    allow_loopback(receiver.server.server_address[1])  # the only address this test may reach
    try:
        # The filter does not apply to a test: an admin checks the endpoint, not the filter.
        created = services.create_webhook(
            actor=admin, application=application, url=receiver.url, events="budget."
        )
        page = admin_client.get(page_url(application))
        assert action_url(application, created.webhook, "test").encode() in page.content
        assert b"Send test delivery" in page.content
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                action_url(application, created.webhook, "test"), follow=True
            )
    finally:
        receiver.close()
    assert response.redirect_chain == [(page_url(application), 302)]
    assert b"Sent a test event to" in response.content
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["x-airlock-event"] == "webhook.test"
    expected = (
        "sha256=" + hmac.new(created.secret.encode(), request["body"], hashlib.sha256).hexdigest()
    )
    assert hmac.compare_digest(headers["x-airlock-signature"], expected)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.kind, delivery.status, delivery.attempts) == ("webhook.test", "delivered", 1)
    assert headers["x-airlock-delivery"] == str(delivery.pk)
    event = last_event()
    assert (event.action, event.object_id, event.after["delivery"]) == (
        "webhook.test",
        str(created.webhook.pk),
        delivery.pk,
    )
    # The page shows it among the recent deliveries.
    assert b"webhook.test" in admin_client.get(page_url(application)).content


def test_a_test_delivery_goes_through_the_egress_guard(
    admin, application, production, eager_tasks, django_capture_on_commit_callbacks
):
    # Allowed when saved; the allowlist since changed. The guard refuses before any socket.
    hook = services.create_webhook(actor=admin, application=application, url=HOOK).webhook
    production.AIRLOCK_EGRESS_ALLOW = []
    with django_capture_on_commit_callbacks(execute=True):
        delivery = services.send_test_delivery(actor=admin, webhook=hook)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "delivery failed" in delivery.last_error


def test_a_disabled_webhook_gets_no_test(admin_client, admin, application, hook):
    services.set_webhook_active(actor=admin, webhook=hook, active=False)
    before = state()
    response = admin_client.post(action_url(application, hook, "test"), follow=True)
    assert b"Cannot send a test" in response.content and b"enable it first" in response.content
    assert state() == before


def test_only_admins_send_test_deliveries(client, member, application, hook):
    users = [member(role, f"t-{role}") for role in (Role.VIEWER, Role.ENGINEER, Role.APPROVER)]
    admin = member(Role.ADMIN, "t-admin")
    before = state()
    for user in users:
        client.force_login(user)
        assert client.post(action_url(application, hook, "test")).status_code == 403
    client.force_login(admin)
    assert client.get(action_url(application, hook, "test")).status_code == 405
    assert state() == before
