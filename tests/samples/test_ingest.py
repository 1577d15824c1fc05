"""POST /api/v1/samples with real API keys: redacted before storing, idempotent, refused whole
with the index and field named, scoped keys only, stored in day partitions on PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from console.accounts.models import ApiKeyScope
from console.samples import partitions, services
from console.samples.models import Sample
from tests.samples.conftest import SAMPLES, bearer, sample

pytestmark = pytest.mark.django_db


def post(client, secret: str | None, body) -> object:
    headers = bearer(secret) if secret else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(SAMPLES, data=data, content_type="application/json", **headers)


def test_samples_are_stored_redacted_and_a_retry_counts_nothing_twice(client, application, issue):
    secret = issue("prod")
    body = {
        "samples": [
            sample(
                "s-1",
                inputs={"question": "My email is ana@example.com, where is my order A-1042?"},
                output="We emailed ana@example.com; card 4111 1111 1111 1111 was charged.",
                feedback="down",
                feedback_comment="Call me on +44 20 7946 0958",
            ),
            sample("s-2", feedback="up"),
        ]
    }
    first = post(client, secret, body)
    assert first.status_code == 202, first.content
    assert first.json() == {"accepted": 2, "duplicates": 0}
    again = post(client, secret, body)
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 2}
    stored = Sample.objects.get(sample_id="s-1")
    assert stored.question == "My email is [EMAIL], where is my order A-1042?"
    assert "ana@example.com" not in stored.output and "4111" not in stored.output
    assert stored.output == "We emailed [EMAIL]; card [CARD] was charged."
    assert stored.feedback_comment == "Call me on [PHONE]"
    assert stored.redactions == {"email": 2, "card": 1, "phone": 1}
    assert stored.feedback == -1 and stored.environment.key == "prod"
    assert stored.context == "Passwords are reset from Settings > Security [kb-12]."
    assert Sample.objects.get(sample_id="s-2").feedback == 1
    assert Sample.objects.count() == 2


def test_a_custom_pattern_redacts_and_a_disabled_kind_does_not(
    client, application, engineer, issue
):
    services.update_policy(
        actor=engineer, application=application, revision=0, redact_kinds=["card"],
        redact_patterns="employee_id: EMP-\\d{6}", judge_rate=0.0,
        judge_daily_cap=__import__("decimal").Decimal("1"), judge_model=None, judge_prompts={},
    )  # fmt: skip
    response = post(
        client,
        issue("prod"),
        {"samples": [sample("c-1", output="EMP-123456 wrote to bo@example.com")]},
    )
    assert response.status_code == 202
    stored = Sample.objects.get(sample_id="c-1")
    assert stored.output == "[EMPLOYEE_ID] wrote to bo@example.com"
    assert stored.redactions == {"employee_id": 1}


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"sample_id": ""}, "sample_id", 400),
        ({"time": "yesterday"}, "time", 400),
        ({"inputs": ["not", "an", "object"]}, "inputs", 400),
        ({"output": 42}, "output", 400),
        ({"output": "x" * 32_001}, "output", 400),
        ({"context": {"a": 1}}, "context", 400),
        ({"sources": "kb-1"}, "sources", 400),
        ({"feedback": "meh"}, "feedback", 400),
        ({"prompt_version": "p\x00"}, "prompt_version", 400),
        ({"inputs": {"question": "a\x00b"}}, "inputs", 400),
        ({"inputs": {"score": float("nan")}}, "inputs", 400),
        ({"inputs": {"score": float("inf")}}, "inputs", 400),
    ],
)
def test_a_bad_sample_refuses_the_whole_batch_naming_index_and_field(
    client, application, issue, change, field, status
):
    body = {"samples": [sample("ok-1"), sample("bad-1", **change)]}
    response = post(client, issue("prod"), body)
    assert response.status_code == status, response.content
    errors = response.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, field)]
    assert Sample.objects.count() == 0


def test_inputs_are_measured_in_characters_not_escapes(client, application, issue):
    japanese = "返品" * 3000  # 6,000 characters; 36,000 as ASCII escapes
    response = post(
        client, issue("prod"), {"samples": [sample("jp", inputs={"question": japanese})]}
    )
    assert response.status_code == 202, response.content
    assert Sample.objects.get().question == japanese


def test_ids_labels_keys_and_numbers_are_redacted_too(client, application, issue):
    body = sample(
        "ana@example.com",
        variant="for +447700900123",
        inputs={"question": "Refund?", "bo@example.com": "vip", "card": 4111111111111111},
    )
    assert post(client, issue("prod"), {"samples": [body]}).status_code == 202
    stored = Sample.objects.get()
    assert stored.sample_id == "[EMAIL]" and stored.variant == "for [PHONE]"
    assert stored.inputs == {"question": "Refund?", "[EMAIL]": "vip", "card": "[CARD]"}
    assert stored.redactions == {"email": 2, "phone": 1, "card": 1}


def test_times_outside_the_retention_window_are_refused(client, application, issue, settings):
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    old = (timezone.now() - timedelta(days=settings.SAMPLE_RETENTION_DAYS + 1)).isoformat()
    response = post(
        client, issue("prod"), {"samples": [sample("f", time=future), sample("o", time=old)]}
    )
    assert response.status_code == 422
    messages = {e["index"]: e["message"] for e in response.json()["errors"]}
    assert messages[0] == "is in the future"
    assert "retention" in messages[1]
    assert Sample.objects.count() == 0


def test_repeated_ids_in_one_batch_are_named(client, application, issue):
    response = post(client, issue("prod"), {"samples": [sample("d"), sample("d")]})
    assert response.status_code == 422
    assert response.json()["errors"][0] == {
        "index": 1, "field": "sample_id", "message": "repeats sample 0"
    }  # fmt: skip


def test_only_a_samples_write_key_may_send(client, application, issue):
    body = {"samples": [sample("k-1")]}
    assert post(client, None, body).status_code == 401
    usage_key = issue("prod", scopes=[ApiKeyScope.USAGE_WRITE])
    assert post(client, usage_key, body).status_code == 403
    config_key = issue("prod", scopes=[ApiKeyScope.CONFIG_READ])
    assert post(client, config_key, body).status_code == 403
    assert client.get(SAMPLES, **bearer(issue("prod"))).status_code == 405
    assert Sample.objects.count() == 0


def test_oversized_and_malformed_bodies_are_refused(client, application, issue):
    secret = issue("prod")
    huge = json.dumps({"samples": [sample("h", output="x" * 30_000)] * 80})
    assert post(client, secret, huge).status_code == 413
    bad = post(client, secret, b'{"samples": [')
    assert bad.status_code == 400
    assert "not JSON" in bad.json()["errors"][0]["message"]
    for body in ({"samples": []}, {"samples": {}}, [], {"samples": [sample("x")] * 501}):
        assert post(client, secret, body).status_code == 400
    assert Sample.objects.count() == 0


def test_the_environment_comes_from_the_key(client, application, issue):
    post(client, issue("staging"), {"samples": [sample("e-1")]})
    post(client, issue("prod"), {"samples": [sample("e-1")]})
    assert sorted(Sample.objects.values_list("environment__key", flat=True)) == [
        "prod", "staging"
    ]  # fmt: skip


def test_samples_land_in_their_day_partition_and_retention_drops_whole_days(postgres_tx):
    """Committed first, as in production: retention runs in a transaction of its own."""
    from tests.factories import make_application

    application = make_application()
    environment = application.environments.get(key="prod")
    now = timezone.now()
    services.ingest(
        application=application, environment=environment,
        samples=[sample("p-1"), sample("p-2", minutes_ago=60 * 24 * 3)],
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text, sample_id FROM samples_sample")
        where = {sample_id: table for table, sample_id in cursor.fetchall()}
    today = now.astimezone(UTC).date()
    three_ago = (now - timedelta(days=3)).astimezone(UTC).date()
    assert where == {
        "p-1": f"samples_sample_p{today:%Y%m%d}",
        "p-2": f"samples_sample_p{three_ago:%Y%m%d}",
    }
    dropped = services.purge(older_than_days=2, today=today)
    assert dropped >= 1
    assert list(Sample.objects.values_list("sample_id", flat=True)) == ["p-1"]
    assert three_ago not in partitions.existing()
    tomorrow = today + timedelta(days=1)
    assert {today, tomorrow, tomorrow + timedelta(days=1)} <= partitions.existing()


def test_the_judged_share_is_fixed_per_sample(application, engineer):
    shares = [services.judged_share(application.pk, f"s-{i}") for i in range(2000)]
    assert all(0 <= s < 1 for s in shares)
    assert 0.08 < sum(s < 0.1 for s in shares) / len(shares) < 0.12
    assert services.judged_share(application.pk, "s-1") == shares[1]
