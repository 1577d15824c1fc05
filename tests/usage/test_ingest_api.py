"""POST /api/v1/usage with real API keys: idempotent by event id, accepted or rejected whole
(with index/field errors), cost computed server-side, and key scope enforced."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from console.accounts.models import ApiKeyScope
from console.usage.models import UsageEvent, UsageHourly
from tests.usage.helpers import USAGE, bearer, event, hour_ago, price, rollup

pytestmark = pytest.mark.django_db


def post(client, secret: str | None, body) -> object:
    headers = bearer(secret) if secret else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(USAGE, data=data, content_type="application/json", **headers)


@pytest.fixture
def priced(application):
    """gpt-4o-mini at $1 / $0.50 / $2 per million input / cached / output tokens."""
    price(application, "gpt-4o-mini", timezone.now() - timedelta(days=30), "1", "0.5", "2")
    return application


def batch(at, n: int = 3, prefix: str = "evt") -> list[dict]:
    return [
        event(
            f"{prefix}-{i}",
            at + timedelta(minutes=i),
            input_tokens=1000 * (i + 1),
            cached_tokens=500 if i == 0 else 0,
            output_tokens=100,
            latency_ms=120.5,
            status="ok",
            cost=999,  # never trusted: the server prices the event itself
        )
        for i in range(n)
    ]


def test_a_retried_batch_never_double_counts(client, priced, issue):
    secret = issue("prod")
    at = hour_ago(2)
    events = batch(at)

    first = post(client, secret, {"events": events})
    assert first.status_code == 202
    assert first.json() == {"accepted": 3, "duplicates": 0}

    again = post(client, secret, {"events": events})
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 3}

    # A retry that overlaps a new event stores only the new one.
    mixed = post(client, secret, {"events": [*events[1:], *batch(at, 1, prefix="late")]})
    assert mixed.status_code == 202
    assert mixed.json() == {"accepted": 1, "duplicates": 2}

    rows = UsageEvent.objects.filter(application=priced).order_by("event_id")
    assert [r.event_id for r in rows] == ["evt-0", "evt-1", "evt-2", "late-0"]
    assert {r.environment.key for r in rows} == {"prod"}  # from the key, not the body
    # Server-side cost: (500 × $1 + 500 × $0.50 + 100 × $2) / 1M for evt-0.
    assert rows.get(event_id="evt-0").cost == Decimal("0.00095000")
    assert rows.get(event_id="evt-1").cost == Decimal("0.00220000")
    assert rows.get(event_id="evt-0").savings == Decimal("0.00025000")

    rollup()
    hourly = UsageHourly.objects.get(application=priced)
    assert hourly.requests == 4
    assert hourly.cost == Decimal("0.00095") + Decimal("0.0022") + Decimal("0.0032") + Decimal(
        "0.00095"
    )
    # Posting the whole thing a third time and rolling up again changes nothing.
    post(client, secret, {"events": events})
    rollup()
    assert UsageHourly.objects.get(application=priced).requests == 4


def test_the_same_event_id_from_another_environment_of_the_app_is_its_own_event(
    client, priced, issue
):
    """Event ids are unique per application × environment: a staging key reusing a prod id
    stores its own event instead of making the prod one look like a duplicate."""
    at = hour_ago(1)
    assert post(client, issue("prod"), {"events": batch(at, 1)}).json()["accepted"] == 1
    answer = post(client, issue("staging"), {"events": batch(at, 1)})
    assert answer.status_code == 202 and answer.json() == {"accepted": 1, "duplicates": 0}
    keys = sorted(e.environment.key for e in UsageEvent.objects.all())
    assert keys == ["prod", "staging"]


def test_a_bad_batch_is_rejected_whole_with_index_and_field(client, priced, issue):
    at = hour_ago(1)
    events = [
        event("ok-0", at, input_tokens=10),  # valid, yet not stored: the batch fails whole
        event("bad-1", at, status="crashed", input_tokens=-5),
        {"event_id": "bad-2", "time": "yesterday", "model": "gpt-4o-mini"},
        event("ok-0", at),  # repeats index 0
        event("bad-4", at, input_tokens=10, cached_tokens=20, feedback="meh", cache_hit="yes"),
        {"event_id": "bad-5", "time": (timezone.now() + timedelta(hours=1)).isoformat()},
        "not an object",
    ]
    response = post(client, issue(), {"events": events})
    # 400: some events break the documented schema (types, bounds), not only business rules.
    assert response.status_code == 400
    errors = {(e["index"], e["field"]) for e in response.json()["errors"]}
    assert errors == {
        (1, "input_tokens"),
        (1, "status"),
        (2, "time"),
        (3, "event_id"),
        (4, "cached_tokens"),
        (4, "cache_hit"),
        (4, "feedback"),
        (5, "time"),
        (5, "model"),
        (6, None),
    }
    messages = {(e["index"], e["field"]): e["message"] for e in response.json()["errors"]}
    assert messages[(3, "event_id")] == "repeats event 0"
    assert messages[(5, "time")] == "is in the future"
    assert messages[(1, "status")] == "must be ok, error or timeout"
    assert UsageEvent.objects.count() == 0


def test_a_well_formed_batch_breaking_only_business_rules_is_422(client, priced, issue):
    at = hour_ago(1)
    events = [
        event("a", at),
        event("a", at),  # repeats index 0
        event("b", timezone.now() + timedelta(hours=1)),
        event("c", at, input_tokens=1, cached_tokens=2),
    ]
    response = post(client, issue(), {"events": events})
    assert response.status_code == 422
    assert {(e["index"], e["field"]) for e in response.json()["errors"]} == {
        (1, "event_id"),
        (2, "time"),
        (3, "cached_tokens"),
    }
    assert UsageEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"events": []}, 400, "events"),
        ({"events": {"event_id": "x"}}, 400, "events"),
        ({"nothing": 1}, 400, "events"),
        (b"{not json", 400, None),
    ],
)
def test_malformed_bodies_are_refused_and_store_nothing(client, priced, issue, body, status, field):
    response = post(client, issue(), body)
    assert response.status_code == status
    assert response.json()["errors"][0]["field"] == field
    assert UsageEvent.objects.count() == 0


def test_more_than_a_thousand_events_is_refused(client, priced, issue):
    at = hour_ago(1)
    events = [event(f"e{i}", at) for i in range(1001)]
    response = post(client, issue(), {"events": events})
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": None, "field": "events", "message": "at most 1000 events per batch"}
    ]
    assert UsageEvent.objects.count() == 0
    # Exactly 1,000 is fine.
    assert post(client, issue(), {"events": events[:1000]}).json()["accepted"] == 1000


def test_no_key_is_401_and_a_key_without_the_scope_is_403(client, priced, issue):
    body = {"events": batch(hour_ago(1), 1)}
    missing = post(client, None, body)
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert "Bearer" in missing["WWW-Authenticate"]
    unknown = post(client, "alk_not-a-real-key", body)
    assert unknown.status_code == 401
    reader = issue("prod", scopes=[ApiKeyScope.CONFIG_READ])
    forbidden = post(client, reader, body)
    assert forbidden.status_code == 403
    assert forbidden.json()["errorDetails"] == "this API key lacks the usage:write scope"
    assert UsageEvent.objects.count() == 0
    # GET is not how usage is reported.
    assert client.get(USAGE, **bearer(issue())).status_code == 405
