"""What the PostgreSQL ingestion path stores is exactly what was sent: each column travels as one
array literal written by the service, so text that means something in that syntax (quotes,
backslashes, commas, braces, the word NULL) must come back verbatim, and missing values as NULL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from console.usage import services
from console.usage.models import UsageEvent
from console.usage.services import anonymise
from tests.usage.helpers import event, ingest, price

AWKWARD = [
    'say "hi"',
    "back\\slash",
    '\\"',
    "a,b",
    "{braces}",
    "NULL",
    " padded ",
    "'; DROP TABLE usage_usageevent; --",
    "naïve ✓ 模型",
]


@pytest.fixture
def priced(application):
    price(application, "gpt-4o-mini", timezone.now() - timedelta(days=30), "1", "0.5", "2")
    return application


def test_text_that_means_something_in_array_syntax_is_stored_verbatim(postgres, priced):
    at = timezone.now().replace(microsecond=123456) - timedelta(minutes=5)
    events = [
        event(
            f"id-{i}-{text}",
            at,
            prompt_version=text,
            feature=text[::-1],
            variant=text,
            user_id=text,
        )
        for i, text in enumerate(AWKWARD)
    ]
    result = ingest(priced, "prod", events)
    assert (result.accepted, result.duplicates) == (len(AWKWARD), 0)
    stored = {e.event_id: e for e in UsageEvent.objects.filter(application=priced)}
    for i, text in enumerate(AWKWARD):
        row = stored[f"id-{i}-{text}"]
        assert (row.prompt_version, row.feature, row.variant) == (text, text[::-1], text)
        assert row.user_hash == anonymise(text)
        assert row.at == at
    # The same batch again: every awkward id is recognised as already stored.
    again = ingest(priced, "prod", events)
    assert (again.accepted, again.duplicates) == (0, len(AWKWARD))


def test_numbers_flags_and_missing_values_keep_their_exact_values(postgres, priced):
    at = timezone.now() - timedelta(minutes=5)
    in_india = at.astimezone(timezone.get_fixed_timezone(330))
    ingest(
        priced,
        "dev",
        [
            event("full", in_india, input_tokens=1_000_000_000, cached_tokens=3, output_tokens=7,
                  latency_ms=0.000123, status="timeout", cache_hit=True, feedback="down"),
            event("bare", at),
        ],
    )  # fmt: skip
    full = UsageEvent.objects.get(event_id="full")
    bare = UsageEvent.objects.get(event_id="bare")
    assert full.environment.key == "dev"
    assert full.at == at
    assert (full.input_tokens, full.cached_tokens, full.output_tokens) == (1_000_000_000, 3, 7)
    assert full.latency_ms == 0.000123
    assert (full.status, full.cache_hit, full.feedback) == ("timeout", True, -1)
    # $1 per million input (3 of them cached at $0.50), $2 per million output.
    assert full.cost == Decimal("1000.00001250")
    assert full.savings == Decimal("0.00000150")
    assert bare.latency_ms is None
    assert (bare.input_tokens, bare.cost, bare.savings) == (0, Decimal(0), Decimal(0))
    assert (bare.prompt_version, bare.user_hash, bare.cache_hit) == ("", "", False)


def test_events_without_an_environment_are_stored_and_deduplicated(postgres, priced):
    at = timezone.now() - timedelta(minutes=5)
    events = [event("e1", at, input_tokens=10), event("e2", at, output_tokens=5)]
    first = ingest_without_environment(priced, events)
    second = ingest_without_environment(priced, events)
    assert (first.accepted, second.duplicates) == (2, 2)
    assert UsageEvent.objects.filter(application=priced, environment=None).count() == 2


def ingest_without_environment(application, events):
    return services.ingest(
        application=application,
        environment=None,
        events=events,
        source=UsageEvent.Source.EVAL,
    )
