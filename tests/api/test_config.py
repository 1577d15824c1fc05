"""GET /api/v1/config: the resolved snapshot, strong ETag/304, freshness, and key scoping."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from console.accounts import keys
from console.accounts.models import ApiKey, ApiKeyScope
from console.api import auth
from console.flags import services
from tests.api.conftest import bearer
from tests.flags.helpers import set_rules, split

CONFIG = "/api/v1/config"


def test_config_is_the_resolved_snapshot_of_the_keys_environment(client, live_app, issue):
    _, secret = issue("prod")
    response = client.get(CONFIG, **bearer(secret))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert (body["environment"], body["application"]) == (
        "prod",
        live_app["prompt"].application.key,
    )
    prompt = body["prompts"]["answer"]
    assert prompt["version"] == 1 and prompt["variables"] == ["context", "question"]
    assert prompt["system"].startswith("You answer questions") and prompt["params"] == {"top_k": 5}
    model = body["model_configs"]["main"]
    assert model["api_key_env"] == "" and model["model"] == "gpt-4o-mini"
    assert not any("secret" in k or k == "api_key" for k in model)
    flag = body["flags"]["support-prompt"]
    assert flag["enabled"] and not flag["killed"] and flag["rules"][0]["name"] == "Staff"
    assert flag["default"]["rollout"] == [
        {"variant": "stable", "weight": 75},
        {"variant": "canary", "weight": 25},
    ]
    assert flag["salt"] == live_app["canary"].salt
    # The canary's prompt version is included even though prod serves v1.
    assert body["prompt_versions"]["answer@2"]["system"] == "v2 {{ context }}"
    assert body["flags"]["max-docs"]["default"] == {"variant": "three"}


def test_strong_etag_and_304(client, live_app, issue):
    _, secret = issue("prod")
    first = client.get(CONFIG, **bearer(secret))
    etag = first["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = client.get(CONFIG, HTTP_IF_NONE_MATCH=etag, **bearer(secret))
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    listed = client.get(CONFIG, HTTP_IF_NONE_MATCH=f'"nope", W/{etag}', **bearer(secret))
    assert listed.status_code == 304
    stale = client.get(CONFIG, HTTP_IF_NONE_MATCH='"old"', **bearer(secret))
    assert stale.status_code == 200 and stale["ETag"] == etag


def test_a_change_is_visible_to_the_next_poll(
    client, live_app, issue, engineer, django_capture_on_commit_callbacks
):
    _, secret = issue("prod")
    first = client.get(CONFIG, **bearer(secret))
    prod = live_app["switch"].application.environments.get(key="prod")
    with django_capture_on_commit_callbacks(execute=True):
        services.kill_flag(actor=engineer, flag=live_app["switch"], environment=prod, reason="x")
    second = client.get(CONFIG, HTTP_IF_NONE_MATCH=first["ETag"], **bearer(secret))
    assert second.status_code == 200 and second["ETag"] != first["ETag"]
    assert second.json()["flags"]["answers-enabled"]["killed"] is True
    with django_capture_on_commit_callbacks(execute=True):
        set_rules(live_app["canary"], "prod", split(("stable", 50), ("canary", 50)), engineer)
    third = client.get(CONFIG, **bearer(secret))
    assert third.json()["flags"]["support-prompt"]["default"]["rollout"][1]["weight"] == 50


def test_a_binding_change_is_visible_within_one_second(
    client, live_app, issue, engineer, monkeypatch
):
    from console.api import snapshot
    from console.registry import services as registry

    _, secret = issue("dev")
    client.get(CONFIG, **bearer(secret))
    dev = live_app["prompt"].application.environments.get(key="dev")
    registry.bind_version(
        actor=engineer, environment=dev, version=live_app["prompt"].versions.get(number=2)
    )
    # The registry sends no signal: the snapshot's age bound (≤ 1 s) is what makes it visible.
    monkeypatch.setattr(snapshot, "MAX_AGE_SECONDS", 0.0)
    assert client.get(CONFIG, **bearer(secret)).json()["prompts"]["answer"]["version"] == 2


def test_snapshot_cache_is_at_most_one_second_old():
    from console.api import snapshot

    assert snapshot.MAX_AGE_SECONDS <= 1.0 and auth.KEY_CACHE_SECONDS <= 1.0


@pytest.mark.parametrize(
    "header", [{}, {"HTTP_AUTHORIZATION": "Bearer alk_wrong"}, {"HTTP_AUTHORIZATION": "Basic abc"}]
)
def test_missing_or_unknown_key_is_401_with_no_data(client, live_app, header):
    response = client.get(CONFIG, **header)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized" and "flags" not in response.content.decode()
    assert "Bearer" in response["WWW-Authenticate"]


def test_x_api_key_header_works_too(client, live_app, issue):
    _, secret = issue("prod")
    assert client.get(CONFIG, HTTP_X_API_KEY=secret).status_code == 200


def test_revoked_key_is_refused_at_once(
    client, live_app, issue, django_capture_on_commit_callbacks
):
    key, secret = issue("prod")
    assert client.get(CONFIG, **bearer(secret)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        keys.revoke_api_key(actor=None, api_key=key)
    response = client.get(CONFIG, **bearer(secret))
    assert response.status_code == 401 and b"support-prompt" not in response.content


def test_each_key_sees_only_its_own_environment(client, live_app, issue):
    _, dev_secret = issue("dev")
    body = client.get(CONFIG, **bearer(dev_secret)).json()
    assert body["environment"] == "dev"
    assert body["flags"]["support-prompt"]["enabled"] is False  # prod's split is not visible
    # A client that names the environment it expects is refused with another env's key.
    wrong = client.get(CONFIG, HTTP_X_AIRLOCK_ENVIRONMENT="prod", **bearer(dev_secret))
    assert wrong.status_code == 403 and b"support-prompt" not in wrong.content
    assert client.get(CONFIG + "?environment=prod", **bearer(dev_secret)).status_code == 403
    assert (
        client.get(CONFIG, HTTP_X_AIRLOCK_ENVIRONMENT="dev", **bearer(dev_secret)).status_code
        == 200
    )
    assert (
        client.get(CONFIG, HTTP_X_AIRLOCK_APPLICATION="other", **bearer(dev_secret)).status_code
        == 403
    )


def test_a_key_of_another_application_never_sees_this_one(client, live_app, issue):
    from tests.factories import make_application

    other = make_application("other-app")
    _, secret = issue("prod", app=other)
    body = client.get(CONFIG, **bearer(secret)).json()
    assert body["application"] == "other-app" and body["flags"] == {} and body["prompts"] == {}


def test_a_key_without_the_scope_is_403(client, live_app, issue):
    _, usage_only = issue("prod", scopes=[ApiKeyScope.USAGE_WRITE])
    response = client.get(CONFIG, **bearer(usage_only))
    assert response.status_code == 403 and "config:read" in response.json()["errorDetails"]


def test_rate_limit_answers_429_with_retry_after(client, live_app, issue):
    _, secret = issue("prod", rate=3)
    statuses = [client.get(CONFIG, **bearer(secret)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get(CONFIG, **bearer(secret))
    assert limited.status_code == 429 and 1 <= int(limited["Retry-After"]) <= 60
    assert limited.json()["error"] == "rate_limited"
    # Another key is not affected.
    _, other = issue("prod")
    assert client.get(CONFIG, **bearer(other)).status_code == 200


def test_last_used_is_recorded_at_most_once_a_minute_by_a_task(
    client, live_app, issue, monkeypatch
):
    from console.accounts import tasks

    key, secret = issue("prod")
    calls: list = []
    monkeypatch.setattr(tasks.record_key_use, "apply_async", lambda args, **kw: calls.append(args))
    for _ in range(5):
        assert client.get(CONFIG, **bearer(secret)).status_code == 200
    assert len(calls) == 1 and calls[0][0] == key.pk
    tasks.record_key_use(*calls[0])
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_the_request_path_never_writes_to_the_database(client, live_app, issue, monkeypatch):
    from console.accounts import tasks

    _, secret = issue("prod")
    monkeypatch.setattr(tasks.record_key_use, "apply_async", lambda *a, **k: None)
    auth.forget_all()
    with CaptureQueriesContext(connection) as queries:
        for path, method in (
            (CONFIG, "get"),
            ("/ofrep/v1/evaluate/flags", "post"),
            ("/ofrep/v1/evaluate/flags/max-docs", "post"),
        ):
            response = getattr(client, method)(
                path,
                content_type="application/json",
                data={} if method == "post" else None,
                **bearer(secret),
            )
            assert response.status_code == 200
    sql = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert sql and set(sql) <= {"SELECT"}, sql


def test_eager_task_updates_last_used(client, live_app, issue):
    key, secret = issue("prod")
    assert client.get(CONFIG, **bearer(secret)).status_code == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None


def test_keys_are_stored_as_sha256_only(live_app, issue):
    key, secret = issue("prod")
    row = ApiKey.objects.get(pk=key.pk)
    assert secret.startswith("alk_") and len(secret) > 40
    assert row.key_hash == keys.hash_key(secret) and secret not in str(row.__dict__)
    assert row.prefix == secret[:10]
