"""notify(): in-app rows for the right people, email only after commit, webhook deliveries
queued; deliver(): HMAC-signed POSTs to a real local receiver, retried on 5xx and connection
errors, failed after MAX_ATTEMPTS."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import transaction

from console.accounts.roles import Role
from console.core.canonical import canonical_json
from console.notifications import services, tasks
from console.notifications.models import Notification, Webhook, WebhookDelivery
from tests.factories import make_application, make_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(application, member):
    users = {
        "admin": member(Role.ADMIN, "ada"),
        "engineer": member(Role.ENGINEER, "eve"),
        "approver": member(Role.APPROVER, "abe"),
        "viewer": member(Role.VIEWER, "vic"),
    }
    for name, user in users.items():
        user.email = f"{name}@example.com"
        user.save()
    nomail = member(Role.ADMIN, "nomail")  # an admin without an address: in-app only
    users["nomail"] = nomail
    other = make_application("other-app")
    users["outsider"] = make_member(other, Role.ADMIN, "outsider")
    return users


@pytest.fixture
def queued(monkeypatch):
    """Webhook delivery tasks queued (their delivery ids), instead of sent to a broker."""
    calls: list[int] = []
    monkeypatch.setattr(tasks.deliver_webhook, "delay", lambda pk: calls.append(pk))
    return calls


def test_notify_reaches_the_members_holding_the_roles(application, people, queued):
    notes = services.notify(
        application=application,
        kind="promotion.requested",
        title="Approval requested: answer@3 → prod",
        body="Please look",
        url="/apps/x/releases/1/",
        roles=("approver", "admin"),
        users=[people["engineer"], people["admin"], None],
    )
    assert len(notes) == 4
    rows = Notification.objects.filter(kind="promotion.requested")
    assert sorted(rows.values_list("user__username", flat=True)) == ["abe", "ada", "eve", "nomail"]
    row = rows.get(user=people["approver"])
    assert (row.title, row.body, row.url, row.application_id, row.read_at) == (
        "Approval requested: answer@3 → prod",
        "Please look",
        "/apps/x/releases/1/",
        application.pk,
        None,
    )
    assert services.unread(people["approver"]) == [row]
    assert services.mark_read(people["approver"]) == 1
    assert services.unread(people["approver"]) == []


def test_email_goes_out_only_after_commit(
    application, people, queued, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks(execute=True)
    with capture as callbacks, transaction.atomic():
        services.notify(
            application=application,
            kind="budget.threshold",
            title="Daily: 80% of the daily budget",
            body="Action taken: none",
            url="/apps/x/usage/",
            roles=("admin", "engineer"),
        )
        assert mail.outbox == []  # nothing leaves inside the transaction
    assert len(callbacks) == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "[Airlock] Daily: 80% of the daily budget"
    assert message.to == ["admin@example.com", "engineer@example.com"]
    assert message.body == "Action taken: none\n\n/apps/x/usage/"


def test_a_rolled_back_change_sends_nothing(
    application, people, queued, django_capture_on_commit_callbacks
):
    Webhook.objects.create(application=application, url="http://127.0.0.1:9/", secret="s")
    capture = django_capture_on_commit_callbacks(execute=True)
    with capture as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        services.notify(application=application, kind="x.y", title="t", roles=("admin",))
        raise RuntimeError("the change failed")
    assert callbacks == [] and mail.outbox == [] and queued == []
    assert not Notification.objects.exists() and not WebhookDelivery.objects.exists()


def test_a_mail_outage_does_not_break_the_change(
    application, people, queued, monkeypatch, django_capture_on_commit_callbacks
):
    def broken(*args, **kwargs):
        raise OSError("smtp down")

    monkeypatch.setattr(services, "send_mail", broken)
    hook = Webhook.objects.create(application=application, url="http://127.0.0.1:9/", secret="s")
    with django_capture_on_commit_callbacks(execute=True):
        services.notify(application=application, kind="x.y", title="t", roles=("admin",))
    assert Notification.objects.count() == 2
    assert queued == [WebhookDelivery.objects.get(webhook=hook).pk]  # webhooks still go


def test_webhook_deliveries_are_queued_for_matching_hooks(
    application, people, queued, django_capture_on_commit_callbacks
):
    budget_hook = Webhook.objects.create(
        application=application, url="http://127.0.0.1:9/b", secret="s1", events=["budget."]
    )
    every = Webhook.objects.create(application=application, url="http://127.0.0.1:9/a", secret="s2")
    Webhook.objects.create(
        application=application, url="http://127.0.0.1:9/p", secret="s3", events=["promotion."]
    )
    Webhook.objects.create(
        application=application, url="http://127.0.0.1:9/off", secret="s4", active=False
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.notify(
            application=application,
            kind="budget.threshold",
            title="Daily: 100%",
            roles=("admin",),
            data={"budget": "Daily", "threshold": 100},
        )
    deliveries = WebhookDelivery.objects.order_by("webhook_id")
    assert [d.webhook_id for d in deliveries] == [budget_hook.pk, every.pk]
    assert {d.status for d in deliveries} == {"pending"}
    payload = deliveries[0].payload
    assert payload["kind"] == "budget.threshold"
    assert payload["application"] == application.key
    assert payload["data"] == {"budget": "Daily", "threshold": 100}
    assert queued == []  # not before commit
    for callback in callbacks:
        callback()
    assert sorted(queued) == sorted(d.pk for d in deliveries)


class Receiver:
    """A tiny webhook endpoint on 127.0.0.1 answering with the statuses it is given."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/airlock"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(allow_loopback):
    made = []

    def make(statuses=()):
        r = Receiver(list(statuses))
        allow_loopback(r.server.server_address[1])
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def delivery_to(application, url: str, secret: str = "whsec-test-123") -> WebhookDelivery:
    hook = Webhook.objects.create(application=application, url=url, secret=secret)
    return WebhookDelivery.objects.create(
        webhook=hook,
        kind="rollout.halted",
        payload={"kind": "rollout.halted", "title": "Rollout halted: answer@3 → prod", "n": 1},
    )


def test_deliver_posts_the_body_signed_with_hmac_sha256(application, receiver):
    r = receiver()
    delivery = delivery_to(application, r.url)
    result = services.deliver(delivery.pk)
    assert result.status == WebhookDelivery.Status.DELIVERED
    assert (result.attempts, result.response_status, result.last_error) == (1, 200, "")
    assert result.delivered_at is not None
    [request] = r.requests
    body = request["body"]
    assert json.loads(body) == delivery.payload
    assert body == canonical_json(delivery.payload).encode()
    expected = "sha256=" + hmac.new(b"whsec-test-123", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Airlock-Signature"], expected)
    wrong = "sha256=" + hmac.new(b"another-secret", body, hashlib.sha256).hexdigest()
    assert request["headers"]["X-Airlock-Signature"] != wrong
    assert request["headers"]["X-Airlock-Event"] == "rollout.halted"
    assert request["headers"]["X-Airlock-Delivery"] == str(delivery.pk)
    assert request["headers"]["Content-Type"] == "application/json"
    # A delivered delivery is never sent twice (a redelivered task is a no-op).
    services.deliver(delivery.pk)
    assert len(r.requests) == 1


def test_a_5xx_is_retried_until_it_succeeds(application, receiver):
    r = receiver([503, 502])
    delivery = delivery_to(application, r.url)
    for attempt in (1, 2):
        with pytest.raises(services.RetryableDelivery, match=r"HTTP 50[23]"):
            services.deliver(delivery.pk)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("pending", attempt)
    assert delivery.response_status == 502 and delivery.last_error == "HTTP 502"
    assert services.deliver(delivery.pk).status == "delivered"
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status, delivery.last_error) == (3, 200, "")
    assert len(r.requests) == 3


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_errors_retry_and_fail_after_max_attempts(application, allow_loopback):
    port = closed_port()
    allow_loopback(port)
    delivery = delivery_to(application, f"http://127.0.0.1:{port}/hook")
    for attempt in range(1, services.MAX_ATTEMPTS):
        with pytest.raises(services.RetryableDelivery):
            services.deliver(delivery.pk)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("pending", attempt)
        # The same words for a refused, filtered or timed-out port: no port scanning from here.
        assert delivery.last_error == "delivery failed"
    final = services.deliver(delivery.pk)  # the last attempt: no retry left, marked failed
    assert (final.status, final.attempts) == ("failed", services.MAX_ATTEMPTS)
    assert services.deliver(delivery.pk).attempts == services.MAX_ATTEMPTS  # no further tries


def test_the_task_retries_on_retryable_failures_with_backoff():
    task = tasks.deliver_webhook
    assert services.RetryableDelivery in task.autoretry_for
    assert task.max_retries == services.MAX_ATTEMPTS
    assert task.retry_backoff and task.retry_jitter
