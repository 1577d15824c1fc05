"""One egress guard for every outbound call: webhooks and HTTP eval targets reach only allowed
destinations, internal addresses in any spelling are refused before a socket opens, the address
checked is the address connected to, redirects are never followed, and what users see does not
reveal the internal network. Production settings throughout; nothing leaves 127.0.0.1."""

from __future__ import annotations

import pytest
from django.urls import reverse

from console.accounts.roles import Role
from console.core import egress
from console.evals import services as evals
from console.evals.models import EvalResult, EvalRun
from console.notifications import services as notifications
from console.notifications.models import Webhook, WebhookDelivery
from tests.evals.helpers import publish_items

pytestmark = pytest.mark.django_db

INTERNAL_SPELLINGS = [
    "https://0x7f.0.0.1/hook",
    "https://127.1/hook",
    "https://0177.0.0.1/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://2130706433/hook",
    "https://localhost./hook",
]
METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


def webhooks_url(application) -> str:
    return reverse("notifications:webhooks", kwargs={"app": application.key})


def post_hook(client, application, url: str):
    return client.post(webhooks_url(application), {"url": url, "events": ""})


def saved(response) -> bool:
    """The hook was added: the page redirects (Post/Redirect/Get) to the webhooks page that
    shows its secret once; a refusal answers 200 with the form's error."""
    return response.status_code == 302 and response["Location"].endswith("/webhooks/")


def field_errors(response, name: str) -> list[str]:
    return response.context["form"].errors.get(name, []) if response.context else []


# --- webhooks ----------------------------------------------------------------------------------


def test_webhook_urls_reaching_this_machine_or_metadata_are_refused_in_any_spelling(
    admin_client, application, production, network
):
    # Even with every public host allowed, internal addresses need an exact entry.
    production.AIRLOCK_EGRESS_ALLOW = ["*"]
    accepted = []
    for url in INTERNAL_SPELLINGS:
        response = admin_client.post(webhooks_url(application), {"url": url, "events": ""})
        if Webhook.objects.filter(url=url).exists():
            accepted.append(url)
        else:
            assert response.status_code == 200
    assert accepted == []
    assert network.refused == []


def test_the_guard_refuses_each_spelling_before_resolving_or_connecting(production, network):
    production.AIRLOCK_EGRESS_ALLOW = ["*"]
    for url in INTERNAL_SPELLINGS:
        with pytest.raises(egress.EgressRefused) as caught:
            egress.check_url(url)
        assert str(caught.value) == "destination not allowed"
    assert network.refused == []


def test_a_webhook_page_error_is_generic_and_names_the_field(
    admin_client, application, production, network
):
    response = post_hook(admin_client, application, "https://169.254.169.254/latest/")
    body = response.content.decode()
    assert "this destination is not allowed" in body
    assert "link-local" not in body and "metadata" not in body
    assert not Webhook.objects.exists()


def test_a_hook_saved_under_other_rules_is_checked_again_when_sending(
    admin_client, application, production, network, listener
):
    receiver = listener()
    # Saved while this loopback receiver was allowed (a laptop under DEBUG, say) ...
    production.DEBUG = True
    production.AIRLOCK_EGRESS_ALLOW = [f"127.0.0.1:{receiver.port}"]
    assert saved(post_hook(admin_client, application, receiver.url + "/hook"))
    hook = Webhook.objects.get()
    # ... then the deployment runs in production, where it is not.
    production.DEBUG = False
    production.AIRLOCK_EGRESS_ALLOW = []
    notifications.notify(application=application, kind="budget.threshold", title="t", roles=())
    delivery = notifications.deliver(WebhookDelivery.objects.get(webhook=hook).pk)
    assert receiver.requests == []
    assert delivery.status == "failed"
    assert delivery.last_error == "delivery failed: destination not allowed"
    page = admin_client.get(webhooks_url(application)).content.decode()
    assert "delivery failed: destination not allowed" in page


def test_a_wildcard_never_reaches_an_internal_address_even_at_save(
    admin_client, application, production, network, dns
):
    production.AIRLOCK_EGRESS_ALLOW = ["*"]
    dns["hooks.acme-corp.net"] = ["10.0.0.7"]
    response = post_hook(admin_client, application, "https://hooks.acme-corp.net/x")
    assert "this destination is not allowed" in response.content.decode()
    assert not Webhook.objects.exists()


def test_delivery_connects_to_the_address_it_checked_and_a_rebound_name_is_refused(
    admin_client, application, production, network, dns, listener
):
    """The name is resolved and checked when connecting, and that address is the one connected
    to (Host header kept). When the same name later resolves to the metadata service (DNS
    rebinding after the save-time check), the delivery is refused before any socket opens."""
    receiver = listener()
    production.AIRLOCK_WEBHOOK_ALLOW_HTTP = True
    production.AIRLOCK_EGRESS_ALLOW = [f"receiver.acme-corp.net:{receiver.port}"]
    dns["receiver.acme-corp.net"] = ["127.0.0.1"]
    url = f"http://receiver.acme-corp.net:{receiver.port}/hook"
    assert saved(post_hook(admin_client, application, url))
    hook = Webhook.objects.get()
    first = WebhookDelivery.objects.create(webhook=hook, kind="budget.threshold", payload={})
    assert notifications.deliver(first.pk).status == "delivered"
    [request] = receiver.requests
    assert request["headers"]["Host"] == f"receiver.acme-corp.net:{receiver.port}"
    assert [a for a in network.loopback if a[1] == receiver.port] == [("127.0.0.1", receiver.port)]

    dns["receiver.acme-corp.net"] = ["169.254.169.254"]
    egress.client().close()  # a fresh connection, as after the pool's keep-alive expired
    egress._shared = None
    second = WebhookDelivery.objects.create(webhook=hook, kind="budget.threshold", payload={})
    result = notifications.deliver(second.pk)
    assert (result.status, result.last_error) == (
        "failed",
        "delivery failed: destination not allowed",
    )
    assert network.refused == [] and len(receiver.requests) == 1


def test_webhook_delivery_does_not_follow_redirects(
    admin_client, application, production, network, listener
):
    inside = listener(body={"AccessKeyId": "ASIA-secret"})
    receiver = listener(status=302, headers={"Location": inside.url + "/latest/meta-data/"})
    production.AIRLOCK_WEBHOOK_ALLOW_HTTP = True
    production.AIRLOCK_EGRESS_ALLOW = [f"127.0.0.1:{receiver.port}"]
    assert saved(post_hook(admin_client, application, receiver.url + "/hook"))
    delivery = WebhookDelivery.objects.create(
        webhook=Webhook.objects.get(), kind="budget.threshold", payload={}
    )
    result = notifications.deliver(delivery.pk)
    assert len(receiver.requests) == 1 and inside.requests == []
    assert result.status == "failed"
    assert result.last_error == "HTTP 302: redirects are not followed"


def test_last_error_does_not_tell_a_closed_port_from_an_open_one(
    admin_client, application, production, network
):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    production.AIRLOCK_WEBHOOK_ALLOW_HTTP = True
    production.AIRLOCK_EGRESS_ALLOW = [f"127.0.0.1:{closed}"]
    assert saved(post_hook(admin_client, application, f"http://127.0.0.1:{closed}/x"))
    delivery = WebhookDelivery.objects.create(
        webhook=Webhook.objects.get(), kind="budget.threshold", payload={}
    )
    with pytest.raises(notifications.RetryableDelivery):
        notifications.deliver(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.last_error == "delivery failed"
    page = admin_client.get(webhooks_url(application)).content.decode().lower()
    assert "refused" not in page and "errno" not in page and "timed out" not in page


# --- HTTP eval targets -------------------------------------------------------------------------


@pytest.fixture
def golden(application, member):
    engineer = member(Role.ENGINEER, "eng")
    rows = [{"id": "q1", "question": "What is the refund window?", "expected_contains": ["30"]}]
    _, version = publish_items(application, engineer, "golden", rows)
    return engineer, version


def launch_form(version, url: str) -> dict:
    return {
        "target_type": "http",
        "dataset_version": str(version.pk),
        "prompt_version": "",
        "model_version": "",
        "scorers": ["contains_all"],
        "judge_model_version": "",
        "judge_faithfulness": "",
        "judge_relevance": "",
        "gates": "",
        "cost_cap": "",
        "concurrency": "",
        "http_url": url,
        "http_answer_path": "answer",
        "http_sources_path": "sources",
    }


@pytest.mark.parametrize(
    "url",
    [METADATA, "http://127.0.0.1:6379/", "http://[::ffff:127.0.0.1]:8100/", "http://10.0.0.5/ask"],
)
def test_an_http_eval_target_must_be_an_allowed_destination(
    client, application, golden, production, network, url
):
    engineer, version = golden
    client.force_login(engineer)
    production.AIRLOCK_EGRESS_ALLOW = ["*"]
    response = client.post(
        reverse("evals:new", kwargs={"app": application.key}), launch_form(version, url)
    )
    assert response.status_code == 200
    assert field_errors(response, "http_url") == [
        "this destination is not allowed (operators list allowed hosts in AIRLOCK_EGRESS_ALLOW)"
    ]
    assert not EvalRun.objects.exists()
    assert network.refused == []


def test_an_http_eval_target_never_follows_a_redirect_to_show_what_is_inside(
    client, application, golden, production, network, listener
):
    engineer, version = golden
    client.force_login(engineer)
    inside = listener(body={"answer": "AccessKeyId=ASIA-secret", "sources": []})
    target = listener(status=302, headers={"Location": inside.url + "/latest/meta-data/"})
    production.AIRLOCK_EGRESS_ALLOW = [f"127.0.0.1:{target.port}"]
    run = evals.launch_run(
        actor=engineer,
        application=application,
        dataset_version=version,
        http_target={"url": target.url + "/ask", "answer_path": "answer"},
        scorers=["contains_all"],
    )
    evals.execute_run(run.pk, owner="test")
    [result] = EvalResult.objects.filter(run=run)
    assert inside.requests == [] and len(target.requests) == 1
    assert result.status == "error" and result.error == "HTTP 302: redirects are not followed"
    page = client.get(reverse("evals:run", kwargs={"app": application.key, "pk": run.pk}))
    assert "ASIA-secret" not in page.content.decode()


def test_a_queued_http_run_whose_target_is_no_longer_allowed_sends_nothing(
    client, application, golden, production, network, listener
):
    engineer, version = golden
    target = listener(body={"answer": "30 days", "sources": []})
    production.AIRLOCK_EGRESS_ALLOW = [f"127.0.0.1:{target.port}"]
    run = evals.launch_run(
        actor=engineer,
        application=application,
        dataset_version=version,
        http_target={"url": target.url + "/ask"},
        scorers=["contains_all"],
    )
    production.AIRLOCK_EGRESS_ALLOW = []
    evals.execute_run(run.pk, owner="test")
    [result] = EvalResult.objects.filter(run=run)
    assert target.requests == []
    assert (result.status, result.error) == ("error", "destination not allowed")
