"""Input bounds, under production settings (DEBUG off), through HTTP: every JSON body the
console or the runtime API reads passes one depth-limited parser, usage events are bounded to
what their columns hold, and a violation is a 4xx naming the field (and the event index or
file line) — never a 500, nor a 503 blaming the database. One tenant's bad usage row never
stops another tenant's rollups, and an event id is unique per application × environment."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.accounts.roles import Role
from console.api import auth, snapshot
from console.celery import app as celery_app
from console.datasets import services as datasets
from console.datasets.models import DatasetItem, ImportJob
from console.usage import services as usage
from console.usage.models import UsageEvent, UsageHourly
from tests.factories import make_application
from tests.usage.helpers import event, hour_ago, price

pytestmark = pytest.mark.django_db
USAGE = "/api/v1/usage"


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of `depth` nested arrays around `leaf`."""
    return "[" * depth + leaf + "]" * depth


@pytest.fixture(autouse=True)
def production(settings):
    """Production behaviour: DEBUG off, fast test passwords, caches and key state fresh, and
    Celery tasks (key last-used stamps) inline."""
    settings.DEBUG = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    auth.forget_all()
    snapshot.forget_all()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager
    auth.forget_all()
    snapshot.forget_all()


@pytest.fixture
def api():
    """A client that reports a server error as the 500 a caller would see (not a test error)."""
    return Client(raise_request_exception=False)


def issue(application, env_key: str = "prod", scopes=None) -> dict:
    environment = application.environments.get(key=env_key)
    issued = keys.create_api_key(
        actor=None,
        environment=environment,
        name=f"{env_key}-key",
        scopes=scopes or [ApiKeyScope.USAGE_WRITE],
    )
    return {"HTTP_AUTHORIZATION": f"Bearer {issued.secret}"}


def post_usage(client, headers: dict, body) -> object:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(USAGE, data=data, content_type="application/json", **headers)


def problems(response) -> list[tuple]:
    return [(e["index"], e["field"]) for e in response.json()["errors"]]


# ---------------------------------------------------------------- usage events: numbers


@pytest.mark.parametrize(
    "field, value",
    [
        ("input_tokens", 10**15),
        ("input_tokens", 10**19),
        ("output_tokens", 10**15),
        ("cached_tokens", 10**19),
    ],
)
def test_token_counts_beyond_the_bound_are_refused_naming_the_event_and_field(
    api, application, field, value
):
    headers = issue(application)
    at = hour_ago(2)
    fine = event("fine", at, input_tokens=10)
    huge = event("huge", at, **{field: value})
    if field == "cached_tokens":
        huge["input_tokens"] = value
    response = post_usage(api, headers, {"events": [fine, huge]})
    assert response.status_code == 400, response.content[:300]
    assert (1, field) in problems(response)
    assert "1,000,000,000" in json.dumps(response.json(), ensure_ascii=False)
    assert not UsageEvent.objects.filter(application=application).exists()


def test_an_event_whose_cost_would_overflow_its_column_is_refused(api, application):
    """10^9 tokens (within bounds) at a price near the highest a price point holds costs more
    than the cost column holds: a 422 naming the event (the batch is well formed; the price
    makes it impossible), instead of a database error or a stored row that stops rollups."""
    price(application, "gpt-4o-mini", timezone.now() - timedelta(days=30), "1", "1", "999999")
    headers = issue(application)
    at = hour_ago(2)
    response = post_usage(
        api, headers, {"events": [event("costly", at, output_tokens=1_000_000_000)]}
    )
    assert response.status_code == 422, response.content[:300]
    assert problems(response) == [(0, "cost")]
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_latency_must_be_a_finite_number(api, application, literal):
    headers = issue(application)
    raw = json.dumps({"events": [event("e1", hour_ago(2), latency_ms=12345)]})
    raw = raw.replace("12345", literal)
    response = post_usage(api, headers, raw)
    assert response.status_code == 400, response.content[:300]
    assert problems(response) == [(0, "latency_ms")]
    assert not UsageEvent.objects.exists()


# ---------------------------------------------------------------- usage events: text


@pytest.mark.parametrize(
    "field, value",
    [
        ("model", "m" * 5000),
        ("model", "m" * 201),
        ("event_id", "e" * 101),
        ("feature", "f" * 121),
        ("prompt_version", "p" * 121),
        ("variant", "v" * 121),
        ("user_id", "u" * 121),
        ("feature", "nul\u0000inside"),
        ("model", "lone \ud800 surrogate"),
    ],
    ids=lambda v: v if len(str(v)) < 20 else f"{len(v)}-chars",
)
def test_text_fields_are_bounded_and_storable(api, application, field, value):
    headers = issue(application)
    body = {"events": [event("ok-1", hour_ago(2)), {**event("e-2", hour_ago(2)), field: value}]}
    response = post_usage(api, headers, json.dumps(body))
    assert response.status_code == 400, response.content[:300]
    assert (1, field) in problems(response)
    assert not UsageEvent.objects.exists()


def test_a_model_name_at_the_column_size_is_accepted(api, application):
    headers = issue(application)
    body = {"events": [event("e-1", hour_ago(2), model="m" * 200, feature="f" * 120)]}
    response = post_usage(api, headers, body)
    assert response.status_code == 202, response.content[:300]
    assert UsageEvent.objects.get().model == "m" * 200


# ---------------------------------------------------------------- deep JSON


def test_a_100k_deep_usage_body_is_a_400_not_a_500(api, application):
    headers = issue(application)
    response = post_usage(api, headers, nested(100_000))
    assert response.status_code == 400, response.content[:300]
    assert "nested" in response.json()["errors"][0]["message"]


def test_deep_json_inside_an_event_names_the_event_and_field(api, application):
    headers = issue(application)
    events = [event("a", hour_ago(2)), event("b", hour_ago(2))]
    raw = json.dumps({"events": events})
    raw = raw.replace('"event_id": "b"', f'"metadata": {nested(200)}, "event_id": "b"')
    response = post_usage(api, headers, raw)
    assert response.status_code == 400, response.content[:300]
    assert problems(response) == [(1, "metadata")]
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize("depth", [65, 200])
def test_ofrep_refuses_a_deeply_nested_context_as_a_parse_error(api, application, depth):
    headers = issue(application, scopes=[ApiKeyScope.CONFIG_READ])
    body = '{"context": {"targetingKey": "u1", "deep": ' + nested(depth) + "}}"
    response = api.post(
        "/ofrep/v1/evaluate/flags", data=body, content_type="application/json", **headers
    )
    assert response.status_code == 400, response.content[:300]
    assert response.json()["errorCode"] == "PARSE_ERROR"
    assert "nested" in response.json()["errorDetails"]


@pytest.fixture
def curator_client(application):
    from tests.factories import make_member

    client = Client(raise_request_exception=False)
    client.force_login(make_member(application, Role.CURATOR, "cur"))
    return client


@pytest.fixture
def dataset(application):
    from console.audit.services import SYSTEM

    made = datasets.create_dataset(actor=SYSTEM, application=application, key="gold", name="G")
    datasets.add_item(actor=SYSTEM, dataset=made, values={"question": "Q1?", "id": "q1"})
    return made


def cell_url(dataset, item_id: str, field: str) -> str:
    return f"/apps/{dataset.application.key}/datasets/{dataset.key}/items/{item_id}/{field}/"


def test_a_900_deep_variables_cell_is_refused_naming_the_field(curator_client, dataset):
    item = DatasetItem.objects.get(dataset=dataset, item_id="q1")
    response = curator_client.post(
        cell_url(dataset, "q1", "variables"),
        {"value": '{"a": ' + nested(900) + "}", "base": "{}"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200, response.content[:300]
    body = response.content.decode()
    assert "variables" in body and "nested deeper than 64" in body
    item.refresh_from_db()
    assert item.variables == {}


def test_a_deep_base_value_in_the_editor_is_not_a_500(curator_client, dataset):
    response = curator_client.post(
        cell_url(dataset, "q1", "note"),
        {"value": "a note", "base": nested(100_000)},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200, response.content[:300]
    assert DatasetItem.objects.get(dataset=dataset, item_id="q1").note == ""


def import_file(client, dataset, name: str, data: bytes) -> ImportJob:
    url = f"/apps/{dataset.application.key}/datasets/{dataset.key}/import/"
    file = SimpleUploadedFile(name, data)
    response = client.post(url, {"file": file, "mode": "merge"})
    assert response.status_code == 302, response.content[:300]
    return ImportJob.objects.filter(dataset=dataset).latest("pk")


def test_a_900_deep_jsonl_line_is_reported_by_line(curator_client, dataset):
    lines = [
        json.dumps({"question": "fine"}),
        '{"question": "deep", "variables": {"a": ' + nested(900) + "}}",
    ]
    job = import_file(curator_client, dataset, "deep.jsonl", "\n".join(lines).encode())
    assert job.status == ImportJob.Status.FAILED, job.status
    assert any(p["line"] == 2 and "nested" in p["message"] for p in job.report["problems"]), (
        job.report
    )
    page = curator_client.get(
        f"/apps/{dataset.application.key}/datasets/{dataset.key}/import/{job.pk}/"
    )
    assert page.status_code == 200
    assert DatasetItem.objects.filter(dataset=dataset).count() == 1


def test_a_900_deep_csv_cell_is_reported_by_line_and_field(curator_client, dataset):
    data = 'question,variables\nfine,\ndeep,"{""a"": ' + nested(900) + '}"\n'
    job = import_file(curator_client, dataset, "deep.csv", data.encode())
    assert job.status == ImportJob.Status.FAILED, job.status
    assert any(
        p["line"] == 3 and p["field"] == "variables" and "nested" in p["message"]
        for p in job.report["problems"]
    ), job.report


# ---------------------------------------------------------------- event ids per environment


def test_a_dev_key_cannot_make_a_prod_event_vanish_as_a_duplicate(api, application):
    dev, prod = issue(application, "dev"), issue(application, "prod")
    at = hour_ago(2)
    first = post_usage(api, dev, {"events": [event("call-1", at, input_tokens=5)]})
    assert first.status_code == 202
    second = post_usage(api, prod, {"events": [event("call-1", at, input_tokens=7)]})
    assert second.status_code == 202, second.content
    assert second.json() == {"accepted": 1, "duplicates": 0}
    stored = {
        e.environment.key: e.input_tokens
        for e in UsageEvent.objects.filter(application=application, event_id="call-1")
    }
    assert stored == {"dev": 5, "prod": 7}
    # Still idempotent inside an environment.
    again = post_usage(api, prod, {"events": [event("call-1", at, input_tokens=7)]})
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 1}


# ---------------------------------------------------------------- rollups isolate a bad row


def poison(application, at) -> None:
    """Raw rows (as if written before these bounds, or by hand) whose hourly sum no rollup
    column can hold: a numeric overflow on PostgreSQL, an integer overflow on SQLite."""
    env = application.environments.get(key="prod")
    common = dict(application=application, environment=env, at=at, model="poison")
    if connection.vendor == "postgresql":
        rows = [
            UsageEvent(event_id=f"p-{n}", cost=Decimal("999999.99999999"), **common)
            for n in range(101)
        ]
    else:
        rows = [UsageEvent(event_id=f"p-{n}", input_tokens=2**62, **common) for n in range(2)]
    UsageEvent.objects.bulk_create(rows)


def test_one_tenants_bad_row_never_stops_another_tenants_rollups(api, application, caplog):
    other = make_application("other-tenant")
    at = hour_ago(2)
    poison(application, at)
    response = post_usage(api, issue(other), {"events": [event("fine", at, input_tokens=10)]})
    assert response.status_code == 202

    with caplog.at_level(logging.ERROR, logger="console.usage"):
        result = usage.rollup(settle=timedelta(0))

    assert UsageHourly.objects.filter(application=other).get().requests == 1
    assert not UsageHourly.objects.filter(application=application).exists()
    assert result["failed_applications"] == [application.pk]
    assert any(str(application.pk) in r.getMessage() for r in caplog.records)
    # The next pass goes on with new events; the failed application is not retried forever.
    post_usage(api, issue(other, "dev"), {"events": [event("later", at, input_tokens=1)]})
    usage.rollup(settle=timedelta(0))
    assert sum(h.requests for h in UsageHourly.objects.filter(application=other)) == 2
    # Once the bad rows are dealt with, the skipped application's rollups are rebuilt.
    UsageEvent.objects.filter(application=application, model="poison").delete()
    post_usage(api, issue(application), {"events": [event("good", at, input_tokens=3)]})
    call_command("usage_rollup_repair", application.key, stdout=io.StringIO())
    assert UsageHourly.objects.get(application=application).input_tokens == 3


def test_the_openapi_document_states_the_bounds_ingestion_enforces(api):
    document = api.get("/api/v1/openapi.json").json()
    schema = document["components"]["schemas"]["usageBatch"]["properties"]["events"]["items"]
    fields = schema["properties"]
    for name in ("input_tokens", "cached_tokens", "output_tokens"):
        assert fields[name]["maximum"] == usage.MAX_TOKENS
    assert fields["latency_ms"]["maximum"] == usage.MAX_LATENCY_MS
    assert {n: fields[n]["maxLength"] for n in usage.TEXT_LIMITS} == usage.TEXT_LIMITS
    assert "400" in document["paths"]["/api/v1/usage"]["post"]["responses"]
