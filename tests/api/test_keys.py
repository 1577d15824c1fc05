"""API key admin page and scripts: shown once, stored hashed, revocable, admins only."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from console.accounts.keys import hash_key
from console.accounts.models import ApiKey
from console.accounts.roles import Role
from console.audit.models import AuditEvent
from tests.api.conftest import bearer


def keys_url(application) -> str:
    return f"/apps/{application.key}/keys/"


@pytest.fixture
def admin_client(client, member):
    client.force_login(member(Role.ADMIN, "boss"))
    return client


def test_admin_creates_a_key_shown_once_and_stored_hashed(admin_client, application):
    posted = admin_client.post(
        keys_url(application),
        {"name": "web-prod", "environment": "prod", "scopes": ["config:read"]},
    )
    # Post/Redirect/Get: the secret is not in the redirect's URL, it waits in the session.
    assert posted.status_code == 302 and posted["Location"] == keys_url(application)
    response = admin_client.get(posted["Location"])
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    secret = response.context["issued"].secret
    assert secret.encode() in response.content and secret not in posted["Location"]
    assert b'data-copy="#new-key"' in response.content
    key = ApiKey.objects.get(name="web-prod")
    assert key.key_hash == hash_key(secret) and key.environment.key == "prod"
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.action == "api_key.create" and secret not in str(event.after)
    # Never again: reloading the page shows only the prefix, and creates no second key.
    listing = admin_client.get(keys_url(application))
    assert secret.encode() not in listing.content and key.prefix.encode() in listing.content
    assert ApiKey.objects.count() == 1
    assert AuditEvent.objects.filter(action="api_key.create").count() == 1
    assert "shown-once:" not in " ".join(admin_client.session.keys())


def test_a_key_waiting_to_be_shown_is_shown_only_on_its_own_application(admin_client, application):
    from django.contrib.auth import get_user_model

    from console.accounts.services import grant_role
    from console.audit.services import SYSTEM
    from tests.factories import make_application

    other = make_application("other")
    boss = get_user_model().objects.get(username="boss")  # admin of both applications
    grant_role(actor=SYSTEM, user=boss, application=other, role=Role.ADMIN)
    admin_client.post(
        keys_url(application), {"name": "a", "environment": "prod", "scopes": ["config:read"]}
    )
    assert admin_client.get(keys_url(other)).context["issued"] is None
    assert admin_client.get(keys_url(application)).context["issued"] is not None


def test_form_errors_are_shown_and_nothing_is_created(admin_client, application):
    response = admin_client.post(keys_url(application), {"name": "", "environment": "prod"})
    assert response.status_code == 200 and not ApiKey.objects.exists()
    assert b"name the key" in response.content
    no_env = admin_client.post(keys_url(application), {"name": "x", "environment": "nope"})
    assert b"choose the environment" in no_env.content


def test_revoke_from_the_page(
    admin_client, application, client, issue, live_app, django_capture_on_commit_callbacks
):
    key, secret = issue("prod")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"{keys_url(application)}{key.pk}/revoke/")
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.order_by("-seq").first().action == "api_key.revoke"
    assert client.get("/api/v1/config", **bearer(secret)).status_code == 401


def test_only_admins_manage_keys_and_outsiders_get_404(application, member, client, issue):
    from tests.factories import make_application, make_member

    key, _ = issue("prod")
    for role in (Role.VIEWER, Role.ENGINEER, Role.APPROVER):
        client.force_login(member(role, f"as-{role}"))
        assert client.get(keys_url(application)).status_code == 403
        assert client.post(f"{keys_url(application)}{key.pk}/revoke/").status_code == 403
    other = make_application("other")
    client.force_login(make_member(other, Role.ADMIN, "other-admin"))
    assert client.get(keys_url(application)).status_code == 404
    # Another application's key id under your own application: not found either.
    assert client.post(f"{keys_url(other)}{key.pk}/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_create_api_key_command_prints_the_key_alone_on_the_last_line(
    application, client, live_app
):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", application.key, "staging", "worker", stdout=out, stderr=err)
    lines = out.getvalue().strip().splitlines()
    secret = lines[-1]
    assert secret.startswith("alk_") and " " not in secret
    assert "Shown once" in err.getvalue()
    assert client.get("/api/v1/config", **bearer(secret)).json()["environment"] == "staging"
    event = AuditEvent.objects.order_by("-seq").first()
    assert (event.action, event.actor_type) == ("api_key.create", "system")
    with pytest.raises(CommandError):
        call_command("create_api_key", application.key, "nope", "x", stdout=io.StringIO())
