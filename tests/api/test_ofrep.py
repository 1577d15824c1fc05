"""OFREP as open-feature/protocol service/openapi.yaml defines it: bodies, reasons, every error
code with its status, bulk ETag/304, and the auth statuses."""

from __future__ import annotations

import json

import pytest

from console.core.versioning import save_version
from console.flags import services
from tests.api.conftest import bearer

SINGLE = "/ofrep/v1/evaluate/flags/"
BULK = "/ofrep/v1/evaluate/flags"


def post(client, path, body, secret, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **bearer(secret), **extra)


@pytest.fixture
def secret(live_app, issue):
    return issue("prod")[1]


def test_single_success_has_key_value_reason_variant_metadata(client, secret):
    response = post(client, SINGLE + "answers-enabled", {"context": {"targetingKey": "u1"}}, secret)
    assert response.status_code == 200
    assert response.json() == {
        "key": "answers-enabled",
        "value": True,
        "reason": "STATIC",
        "variant": "on",
        "metadata": {"rulesVersion": 2},
    }
    number = post(client, SINGLE + "max-docs", {"context": {}}, secret).json()
    assert (number["value"], number["variant"]) == (3, "three")


def test_reasons_targeting_match_split_and_disabled(
    client, secret, live_app, engineer, django_capture_on_commit_callbacks
):
    staff = post(
        client,
        SINGLE + "support-prompt",
        {"context": {"targetingKey": "u1", "email": "zoe@acme.com"}},
        secret,
    ).json()
    assert (staff["variant"], staff["reason"], staff["metadata"]["ruleName"]) == (
        "canary",
        "TARGETING_MATCH",
        "Staff",
    )
    split = post(
        client, SINGLE + "support-prompt", {"context": {"targetingKey": "u1"}}, secret
    ).json()
    assert split["reason"] == "SPLIT" and split["value"] in {"answer@1", "answer@2"}
    prod = live_app["switch"].application.environments.get(key="prod")
    with django_capture_on_commit_callbacks(execute=True):
        services.kill_flag(actor=engineer, flag=live_app["switch"], environment=prod, reason="x")
    killed = post(client, SINGLE + "answers-enabled", {"context": {}}, secret).json()
    assert (killed["value"], killed["variant"], killed["reason"]) == (False, "off", "DISABLED")
    assert killed["metadata"]["killed"] is True


def test_flag_not_found_is_404(client, secret):
    response = post(client, SINGLE + "nope", {"context": {}}, secret)
    assert response.status_code == 404
    body = response.json()
    assert (body["key"], body["errorCode"]) == ("nope", "FLAG_NOT_FOUND") and body["errorDetails"]


def test_targeting_key_missing_is_400(client, secret):
    response = post(client, SINGLE + "support-prompt", {"context": {"plan": "pro"}}, secret)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "TARGETING_KEY_MISSING"
    assert response.json()["key"] == "support-prompt"


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"', '{"context": NaN}'])
def test_unparseable_body_is_parse_error_400(client, secret, body):
    response = post(client, SINGLE + "answers-enabled", body, secret)
    assert response.status_code == 400 and response.json()["errorCode"] == "PARSE_ERROR"
    bulk = post(client, BULK, body, secret)
    assert bulk.status_code == 400 and bulk.json()["errorCode"] == "PARSE_ERROR"
    assert "key" not in bulk.json()  # bulkEvaluationFailure has no key


@pytest.mark.parametrize("context", [[1], "u1", {"targetingKey": 42}])
def test_invalid_context_is_400(client, secret, context):
    response = post(client, SINGLE + "answers-enabled", {"context": context}, secret)
    assert response.status_code == 400 and response.json()["errorCode"] == "INVALID_CONTEXT"
    assert post(client, BULK, {"context": context}, secret).json()["errorCode"] == "INVALID_CONTEXT"


def test_a_broken_flag_definition_is_general_500(client, secret, live_app, engineer):
    from django.db import transaction

    head = live_app["docs"].rule_sets.get(environment__key="prod")
    with transaction.atomic():  # bypass the service's validation, as a corrupt row would
        save_version(
            head,
            {"enabled": True, "rules": [], "default": {"variant": "ghost"}},
            author=engineer,
            base_number=head.latest_number,
        )
    response = post(client, SINGLE + "max-docs", {"context": {}}, secret)
    assert response.status_code == 500
    assert response.json()["errorCode"] == "GENERAL" and "ghost" in response.json()["errorDetails"]
    bulk = post(client, BULK, {"context": {"targetingKey": "u"}}, secret).json()["flags"]
    broken = next(f for f in bulk if f["key"] == "max-docs")
    assert broken["errorCode"] == "GENERAL" and "value" not in broken


def test_empty_body_and_no_context_are_fine(client, secret):
    assert post(client, SINGLE + "answers-enabled", "", secret).status_code == 200
    assert post(client, SINGLE + "answers-enabled", {}, secret).status_code == 200


def test_bulk_evaluates_every_flag_with_per_flag_failures(client, secret):
    response = post(client, BULK, {"context": {"plan": "pro"}}, secret)
    assert response.status_code == 200
    flags = {f["key"]: f for f in response.json()["flags"]}
    assert set(flags) == {"answers-enabled", "support-prompt", "max-docs"}
    assert flags["answers-enabled"]["value"] is True
    assert flags["support-prompt"]["errorCode"] == "TARGETING_KEY_MISSING"  # no targetingKey
    with_key = post(client, BULK, {"context": {"targetingKey": "u1"}}, secret).json()["flags"]
    assert all("value" in f and "reason" in f and "variant" in f for f in with_key)


def test_bulk_etag_and_304_depend_on_snapshot_and_context(
    client, secret, live_app, engineer, django_capture_on_commit_callbacks
):
    ctx = {"context": {"targetingKey": "u1"}}
    first = post(client, BULK, ctx, secret)
    etag = first["ETag"]
    assert etag.startswith('"')
    same = post(client, BULK, ctx, secret, HTTP_IF_NONE_MATCH=etag)
    assert same.status_code == 304 and same["ETag"] == etag
    other_context = post(
        client, BULK, {"context": {"targetingKey": "u2"}}, secret, HTTP_IF_NONE_MATCH=etag
    )
    assert other_context.status_code == 200 and other_context["ETag"] != etag
    prod = live_app["switch"].application.environments.get(key="prod")
    with django_capture_on_commit_callbacks(execute=True):
        services.kill_flag(actor=engineer, flag=live_app["switch"], environment=prod, reason="x")
    changed = post(client, BULK, ctx, secret, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag


def test_auth_statuses_401_403_429_on_ofrep(client, live_app, issue):
    from console.accounts.models import ApiKeyScope

    assert post(client, SINGLE + "answers-enabled", {}, "alk_bad").status_code == 401
    assert client.post(BULK, data="{}", content_type="application/json").status_code == 401
    _, usage = issue("prod", scopes=[ApiKeyScope.USAGE_WRITE])
    assert post(client, BULK, {}, usage).status_code == 403
    _, dev = issue("dev")
    assert post(client, BULK, {}, dev, HTTP_X_AIRLOCK_ENVIRONMENT="prod").status_code == 403
    _, limited = issue("prod", rate=2)
    codes = [post(client, SINGLE + "answers-enabled", {}, limited).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert int(post(client, BULK, {}, limited)["Retry-After"]) >= 1


def test_wrong_method_is_405(client, secret):
    response = client.get(SINGLE + "answers-enabled", **bearer(secret))
    assert response.status_code == 405 and response["Allow"] == "POST"


def test_dev_key_evaluates_dev_rules(client, live_app, issue):
    _, dev = issue("dev")
    body = post(client, SINGLE + "support-prompt", {"context": {"targetingKey": "u1"}}, dev).json()
    assert (body["variant"], body["reason"]) == ("stable", "DISABLED")  # off in dev


def test_openapi_document_describes_only_what_exists(client):
    from django.urls import Resolver404, resolve

    doc = client.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    paths = set(doc["paths"])
    assert {"/api/v1/config", "/ofrep/v1/evaluate/flags/{key}", "/ofrep/v1/evaluate/flags"} <= paths
    for path in paths:
        try:
            resolve(path.replace("{key}", "some-flag"))
        except Resolver404:  # pragma: no cover - the assertion below explains
            pytest.fail(f"openapi.json documents {path}, which does not exist")
    single = doc["paths"]["/ofrep/v1/evaluate/flags/{key}"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "429"} <= set(single)
    bulk = doc["paths"]["/ofrep/v1/evaluate/flags"]["post"]["responses"]
    assert {"200", "304", "400", "401", "403", "429"} <= set(bulk)
    reasons = doc["components"]["schemas"]["evaluationSuccess"]["properties"]["reason"]["enum"]
    assert reasons == ["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"]


def test_absurdly_nested_body_is_parse_error_400_not_500(client, secret):
    nested = '{"context": ' + "[" * 30_000 + "]" * 30_000 + "}"  # under the 64 KB body limit
    for url in (SINGLE + "answers-enabled", BULK):
        response = post(client, url, nested, secret)
        assert response.status_code == 400 and response.json()["errorCode"] == "PARSE_ERROR"
