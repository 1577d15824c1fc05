"""API key rotation: a new key with the same name, environment and scopes (shown once), the old
one retired at once or after a grace period the runtime API honours; admins only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKey
from console.accounts.roles import Role
from console.api import auth, snapshot
from console.audit.models import AuditEvent
from console.celery import app as celery_app
from tests.factories import make_application, make_member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def runtime(settings):
    """Cheap password hashes; empty runtime caches; the last-used task runs inline."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    auth.forget_all()
    snapshot.forget_all()
    caches["default"].clear()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager
    auth.forget_all()
    snapshot.forget_all()


@pytest.fixture
def admin(member):
    return member(Role.ADMIN, "boss")


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


@pytest.fixture
def issued(application):
    return keys.create_api_key(
        actor=None,
        environment=application.environments.get(key="prod"),
        name="web-prod",
        scopes=["config:read", "usage:write"],
        rate_limit_per_minute=120,
    )


def rotate_url(application, key) -> str:
    return reverse("accounts:api_key_rotate", kwargs={"app": application.key, "key_id": key.pk})


def config_status(client, secret: str) -> int:
    return client.get("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-seq").first()


# --- service ---------------------------------------------------------------------------------


def test_rotate_now_issues_a_copy_and_revokes_the_old_key(admin, issued, client):
    old = issued.api_key
    rotated = keys.rotate_api_key(actor=admin, api_key=old, grace_seconds=0)
    new = rotated.issued.api_key
    assert new.pk != old.pk and rotated.issued.secret != issued.secret
    assert (new.name, new.environment_id, new.scopes, new.rate_limit_per_minute) == (
        "web-prod",
        old.environment_id,
        ["config:read", "usage:write"],
        120,
    )
    assert new.key_hash == keys.hash_key(rotated.issued.secret) and new.created_by == admin
    old.refresh_from_db()
    assert old.revoked_at is not None and old.revoked_by == admin and old.replaced_by == new
    assert old.expires_at is None and not old.active and new.active
    assert config_status(client, issued.secret) == 401
    assert config_status(client, rotated.issued.secret) == 200


def test_rotate_writes_one_audit_event_naming_both_keys_and_no_secret(admin, issued):
    before = AuditEvent.objects.count()
    rotated = keys.rotate_api_key(actor=admin, api_key=issued.api_key, grace_seconds=3600)
    assert AuditEvent.objects.count() == before + 1
    event = last_event()
    old, new = issued.api_key, rotated.issued.api_key
    assert event.action == "api_key.rotate" and event.actor_label == "boss"
    assert event.object_id == str(old.pk) and event.environment_id == old.environment_id
    assert event.after["old"]["id"] == old.pk and event.after["old"]["prefix"] == old.prefix
    assert event.after["new"]["id"] == new.pk and event.after["new"]["prefix"] == new.prefix
    assert event.after["grace_seconds"] == 3600 and event.after["old"]["expires_at"]
    text = f"{event.before} {event.after} {event.object_label}"
    for secret in (issued.secret, rotated.issued.secret):
        assert secret not in text and keys.hash_key(secret) not in text


def test_old_key_works_during_its_grace_and_stops_after_it(
    admin, issued, client, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        rotated = keys.rotate_api_key(actor=admin, api_key=issued.api_key, grace_seconds=3600)
    old = ApiKey.objects.get(pk=issued.api_key.pk)
    assert old.revoked_at is None and old.active
    assert timedelta(minutes=59) < old.expires_at - timezone.now() <= timedelta(hours=1)
    # During the grace period both keys read the environment.
    assert config_status(client, issued.secret) == 200
    assert config_status(client, rotated.issued.secret) == 200
    # An hour and a second later (past the one-second key cache too) the old key is unknown.
    later = timezone.now() + timedelta(hours=1, seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    auth.forget_all()
    response = client.get("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert config_status(client, rotated.issued.secret) == 200
    assert ApiKey.objects.get(pk=old.pk).expired


def test_revoked_expired_or_already_rotated_keys_cannot_be_rotated(admin, issued, application):
    rotated = keys.rotate_api_key(actor=admin, api_key=issued.api_key, grace_seconds=60)
    count, events = ApiKey.objects.count(), AuditEvent.objects.count()
    with pytest.raises(ValidationError, match="already rotated"):
        keys.rotate_api_key(actor=admin, api_key=issued.api_key, grace_seconds=0)
    newest = rotated.issued.api_key
    keys.revoke_api_key(actor=admin, api_key=newest)
    events += 1
    with pytest.raises(ValidationError, match="is revoked") as revoked:
        keys.rotate_api_key(actor=admin, api_key=newest)
    assert "api_key" in revoked.value.message_dict
    expired = keys.create_api_key(
        actor=None, environment=application.environments.get(key="dev"), name="old"
    ).api_key
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ValidationError, match="has expired"):
        keys.rotate_api_key(actor=admin, api_key=expired)
    assert ApiKey.objects.count() == count + 1  # only the "old" key made above
    assert AuditEvent.objects.count() == events + 1  # its api_key.create


@pytest.mark.parametrize("grace", [-1, 7 * 24 * 3600 + 1, 1.5, "3600", True])
def test_grace_must_be_whole_seconds_up_to_seven_days(admin, issued, grace):
    count, events = ApiKey.objects.count(), AuditEvent.objects.count()
    with pytest.raises(ValidationError) as exc:
        keys.rotate_api_key(actor=admin, api_key=issued.api_key, grace_seconds=grace)
    assert "grace_seconds" in exc.value.message_dict
    assert (ApiKey.objects.count(), AuditEvent.objects.count()) == (count, events)
    assert ApiKey.objects.get(pk=issued.api_key.pk).active


# --- views -----------------------------------------------------------------------------------


def keys_url(application) -> str:
    return reverse("accounts:api_keys", kwargs={"app": application.key})


def test_admin_rotates_from_the_page_and_sees_the_new_key_once(admin_client, application, issued):
    page = admin_client.get(keys_url(application))
    assert rotate_url(application, issued.api_key).encode() in page.content
    # Post/Redirect/Get: the POST answers with a redirect that carries no secret.
    posted = admin_client.post(rotate_url(application, issued.api_key), {"grace": "24h"})
    assert posted.status_code == 302 and posted["Location"] == keys_url(application)
    new = ApiKey.objects.exclude(pk=issued.api_key.pk).get()
    response = admin_client.get(posted["Location"])
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    secret = response.context["issued"].secret
    assert keys.hash_key(secret) == new.key_hash and secret.encode() in response.content
    body = response.content.decode()
    assert "Rotated web-prod" in body and "keeps working until" in body
    assert 'data-copy="#new-key"' in body and "js/copy.js" in body
    assert f'action="/apps/{application.key}/keys/"' in body
    old = ApiKey.objects.get(pk=issued.api_key.pk)
    assert timedelta(hours=23, minutes=59) < old.expires_at - timezone.now() <= timedelta(hours=24)
    assert last_event().action == "api_key.rotate"
    # A reload shows it no more and rotates nothing again.
    count, events = ApiKey.objects.count(), AuditEvent.objects.count()
    listing = admin_client.get(posted["Location"])
    assert secret.encode() not in listing.content and b"Replaced by" in listing.content
    assert (ApiKey.objects.count(), AuditEvent.objects.count()) == (count, events)


def test_rotate_now_from_the_page(admin_client, application, issued, client):
    response = admin_client.post(
        rotate_url(application, issued.api_key), {"grace": "now"}, follow=True
    )
    assert response.redirect_chain == [(keys_url(application), 302)]
    assert b"is revoked: it stops working within a second" in response.content
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None


@pytest.mark.parametrize("grace", ["", "2h", "3600"])
def test_a_bad_grace_choice_changes_nothing(admin_client, application, issued, grace):
    count, events = ApiKey.objects.count(), AuditEvent.objects.count()
    response = admin_client.post(
        rotate_url(application, issued.api_key), {"grace": grace}, follow=True
    )
    assert response.redirect_chain[-1][0] == f"/apps/{application.key}/keys/"
    assert b"grace" in response.content and b"choose when the old key stops working" in (
        response.content
    )
    assert (ApiKey.objects.count(), AuditEvent.objects.count()) == (count, events)


def test_rotating_a_revoked_key_is_refused_with_a_message(admin_client, admin, application, issued):
    keys.revoke_api_key(actor=admin, api_key=issued.api_key)
    count, events = ApiKey.objects.count(), AuditEvent.objects.count()
    response = admin_client.post(
        rotate_url(application, issued.api_key), {"grace": "now"}, follow=True
    )
    assert response.status_code == 200
    assert b"Cannot rotate" in response.content and b"is revoked" in response.content
    assert (ApiKey.objects.count(), AuditEvent.objects.count()) == (count, events)


def test_only_admins_rotate_and_other_applications_keys_are_not_found(
    client, member, application, issued
):
    for role in (Role.VIEWER, Role.CURATOR, Role.ENGINEER, Role.APPROVER):
        client.force_login(member(role, f"as-{role}"))
        assert (
            client.post(rotate_url(application, issued.api_key), {"grace": "now"}).status_code
            == 403
        )
    other = make_application("other")
    outsider = make_member(other, Role.ADMIN, "other-admin")
    client.force_login(outsider)
    # Not a member of the key's application: the application "does not exist".
    assert client.post(rotate_url(application, issued.api_key), {"grace": "now"}).status_code == 404
    # The key's id under the caller's own application: not found either.
    assert client.post(rotate_url(other, issued.api_key), {"grace": "now"}).status_code == 404
    assert ApiKey.objects.count() == 1 and ApiKey.objects.get().active
    assert not AuditEvent.objects.filter(action="api_key.rotate").exists()


def test_rotate_is_post_only(admin_client, application, issued):
    assert admin_client.get(rotate_url(application, issued.api_key)).status_code == 405
