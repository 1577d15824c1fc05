"""Cost is the price in effect at the event's time (with tiers), models named key@version resolve
to their provider model, and a price correction re-prices exactly the window it covers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from console.accounts.roles import Role
from console.audit.models import AuditEvent
from console.registry import services as registry
from console.usage.models import PricePoint, UsageDaily, UsageEvent, UsageHourly
from tests.factories import MODEL_CONTENT, make_model_config
from tests.usage.helpers import event, hour_ago, ingest, price, rollup

pytestmark = pytest.mark.django_db
M = 1_000_000


def day(n: int) -> datetime:
    """Midnight UTC, n days ago."""
    return datetime.combine(timezone.now().date() - timedelta(days=n), time.min, UTC)


def cost_of(application, event_id: str) -> Decimal:
    return UsageEvent.objects.get(application=application, event_id=event_id).cost


def test_each_event_pays_the_price_in_effect_at_its_time(application):
    price(application, "gpt-4o-mini", day(10), "1", "0.5", "2")
    price(application, "gpt-4o-mini", day(3), "2", "1", "4")
    ingest(
        application,
        "prod",
        [
            event("before-any", day(12), input_tokens=M, output_tokens=M),
            event("old-price", day(5), input_tokens=M, output_tokens=M),
            event("at-change", day(3), input_tokens=M, output_tokens=M),
            event("new-price", day(1), input_tokens=M, cached_tokens=M // 2, output_tokens=M),
        ],
    )
    assert cost_of(application, "before-any") == 0  # no price known then
    assert cost_of(application, "old-price") == Decimal("3")  # $1 in + $2 out
    assert cost_of(application, "at-change") == Decimal("6")  # the new point applies from then
    assert cost_of(application, "new-price") == Decimal("5.5")  # $1 + $0.50 cached + $4
    assert UsageEvent.objects.get(event_id="new-price").savings == Decimal("0.5")


def test_a_tier_applies_above_its_input_threshold(application):
    tiers = [{"above_input_tokens": 128_000, "input_per_1m": 5, "output_per_1m": 15}]
    price(application, "gpt-4o", day(5), "2.5", "1.25", "10", tiers=tiers)
    ingest(
        application,
        "prod",
        [
            event("short", day(1), model="gpt-4o", input_tokens=128_000, output_tokens=1000),
            event("long", day(1), model="gpt-4o", input_tokens=200_000, output_tokens=1000),
            event(
                "long-cached",
                day(1),
                model="gpt-4o",
                input_tokens=200_000,
                cached_tokens=100_000,
                output_tokens=0,
            ),
        ],
    )
    assert cost_of(application, "short") == Decimal("0.33")  # 0.32 + 0.01 at the base rate
    assert cost_of(application, "long") == Decimal("1.015")  # 1.00 + 0.015 at the tier rate
    # The tier names no cached rate: cached input pays the tier's input rate.
    assert cost_of(application, "long-cached") == Decimal("1")


def test_a_model_config_reference_resolves_to_its_provider_model(application, engineer):
    head = make_model_config(application, engineer, key="main")  # v1 → gpt-4o-mini
    registry.save_head_version(
        actor=engineer, head=head, content={**MODEL_CONTENT, "model": "gpt-4o"}, base_number=1
    )
    price(application, "gpt-4o-mini", day(5), "1", "0.5", "2")
    price(application, "gpt-4o", day(5), "10", "5", "20")
    ingest(
        application,
        "prod",
        [
            event("v1", day(1), model="main@1", input_tokens=M),
            event("v2", day(1), model="main@2", input_tokens=M),
            event("plain", day(1), model="gpt-4o", input_tokens=M),
        ],
    )
    rows = {e.event_id: e for e in UsageEvent.objects.filter(application=application)}
    assert (rows["v1"].model, rows["v1"].model_config, rows["v1"].cost) == (
        "gpt-4o-mini",
        "main@1",
        Decimal("1"),
    )
    assert (rows["v2"].model, rows["v2"].model_config, rows["v2"].cost) == (
        "gpt-4o",
        "main@2",
        Decimal("10"),
    )
    assert (rows["plain"].model, rows["plain"].model_config) == ("gpt-4o", "")


def test_a_correction_reprices_exactly_its_window_and_the_rollups(application, member):
    admin = member(Role.ADMIN, "pricer")
    price(application, "gpt-4o-mini", day(20), "1", "0.5", "2")
    price(application, "gpt-4o-mini", day(5), "3", "1.5", "6")
    price(application, "gpt-4o", day(30), "7", "7", "7")
    ingest(
        application,
        "prod",
        [
            event("before", day(15), input_tokens=M),
            event("inside-1", day(9) + timedelta(hours=3), input_tokens=M),
            event("inside-2", day(7) + timedelta(hours=5), input_tokens=M, output_tokens=M),
            event("after", day(3), input_tokens=M),
            # Another model in the window is not touched.
            event("other-model", day(8), model="gpt-4o", input_tokens=M),
        ],
    )
    rollup()
    before = {e.event_id: e.cost for e in UsageEvent.objects.all()}
    assert before == {
        "before": Decimal("1"),
        "inside-1": Decimal("1"),
        "inside-2": Decimal("3"),
        "after": Decimal("3"),
        "other-model": Decimal("7"),
    }
    hourly_before = dict(UsageHourly.objects.values_list("hour", "cost"))

    summary = price(application, "gpt-4o-mini", day(10), "1.5", "0.75", "2.5", actor=admin)

    assert summary["events_repriced"] == 2
    assert Decimal(summary["cost_before"]) == Decimal("4")
    assert Decimal(summary["cost_after"]) == Decimal("5.5")  # 1.5 + (1.5 + 2.5)
    after = {e.event_id: e.cost for e in UsageEvent.objects.all()}
    assert after == {**before, "inside-1": Decimal("1.5"), "inside-2": Decimal("4")}
    # Rollups follow: the two corrected hours changed, every other hour kept its cost.
    hourly_after = dict(UsageHourly.objects.values_list("hour", "cost"))
    changed = {h for h in hourly_after if hourly_after[h] != hourly_before.get(h)}
    assert changed == {day(9) + timedelta(hours=3), day(7) + timedelta(hours=5)}
    assert UsageHourly.objects.aggregate(t=Sum("cost"))["t"] == Decimal("16.5")
    daily = dict(UsageDaily.objects.values_list("day", "cost"))  # the dashboard's rows follow
    assert (daily[day(9).date()], daily[day(7).date()]) == (Decimal("1.5"), Decimal("4"))
    assert sum(daily.values()) == Decimal("16.5")
    # One audit event, by the admin, with the before/after totals.
    events = AuditEvent.objects.filter(action="price.record", actor_label="pricer")
    assert events.count() == 1
    audit = events.get()
    assert Decimal(audit.before["cost"]) == Decimal("4")
    assert Decimal(audit.after["cost_after"]) == Decimal("5.5")
    assert audit.after["events_repriced"] == 2
    assert audit.object_label == f"gpt-4o-mini from {day(10):%Y-%m-%d}"


def test_price_points_are_append_only(application):
    price(application, "gpt-4o-mini", day(5), "1", "0.5", "2")
    point = PricePoint.objects.get()
    point.input_per_1m = Decimal("9")
    with pytest.raises(Exception, match="append-only"):
        point.save()


@pytest.fixture
def admin_client(member):
    client = Client()
    client.force_login(member(Role.ADMIN, "boss"))
    return client


def prices_url(application) -> str:
    return f"/apps/{application.key}/usage/prices/"


def price_form(on: date, **extra) -> dict:
    return {
        "model": "gpt-4o-mini",
        "effective_from": on.isoformat(),
        "input_per_1m": "1",
        "cached_input_per_1m": "0.5",
        "output_per_1m": "2",
        "tiers": "",
        "note": "list price",
        **extra,
    }


def test_the_prices_page_records_a_correction_and_reports_the_totals(
    application, admin_client, engineer_client
):
    ingest(application, "prod", [event("a", hour_ago(30), input_tokens=M)])
    on = (timezone.now() - timedelta(days=3)).date()
    # Only admins record prices.
    assert engineer_client.post(prices_url(application), price_form(on)).status_code == 403
    response = admin_client.post(prices_url(application), price_form(on), follow=True)
    assert response.status_code == 200
    assert "Repriced 1 events: $0.0000 → $1.0000." in response.content.decode()
    assert UsageEvent.objects.get().cost == Decimal("1")
    bad = admin_client.post(prices_url(application), price_form(on, input_per_1m="cheap"))
    assert bad.status_code == 200 and "Prices must be numbers" in bad.content.decode()


def test_correcting_a_price_from_the_same_day_is_possible_or_refused_cleanly(
    application, admin_client
):
    ingest(application, "prod", [event("a", hour_ago(30), input_tokens=M)])
    on = (timezone.now() - timedelta(days=3)).date()
    admin_client.post(prices_url(application), price_form(on, input_per_1m="10"))
    response = admin_client.post(prices_url(application), price_form(on), follow=True)
    assert response.status_code == 200
    corrected = UsageEvent.objects.get().cost == Decimal("1")
    assert corrected or "already" in response.content.decode()


def test_the_ingestion_pricing_path_matches_cost_of_to_the_last_digit(application):
    """PriceBook.cost_and_savings (one call per ingested event, rates read once per batch) gives
    exactly what cost_of and savings give, below, on and above each tier, and before any
    price."""
    from console.usage.pricing import PriceBook

    start = timezone.now() - timedelta(days=10)
    price(application, "m", start, "1.5", "0.75", "6")
    tiers = [
        {"above_input_tokens": 200_000, "input_per_1m": 9.1, "output_per_1m": 30},
        {"above_input_tokens": 100_000, "input_per_1m": 3.3, "cached_input_per_1m": 0.1,
         "output_per_1m": 12.25},
    ]  # fmt: skip
    price(application, "m", start + timedelta(days=5), "2.123456", "1.000001", "8", tiers=tiers)
    book = PriceBook(application.pk)
    checked = 0
    for when in (start - timedelta(days=1), start + timedelta(days=1), start + timedelta(days=6)):
        for input_tokens in (0, 1, 99_999, 100_000, 100_001, 200_001, 999_999_999):
            for cached in (0, 7, input_tokens, input_tokens + 3):
                for output in (0, 123_457):
                    expected = (
                        book.cost("m", when, input_tokens, cached, output),
                        book.savings("m", when, cached),
                    )
                    got = book.cost_and_savings("m", when, input_tokens, cached, output)
                    assert got == expected, (when, input_tokens, cached, output)
                    assert [str(x) for x in got] == [str(x) for x in expected]
                    checked += 1
    assert book.cost_and_savings("unknown", start, 10, 0, 10) == (Decimal(0), Decimal(0))
    assert book.cost("m", start + timedelta(days=6), 200_001, 0, 0) == Decimal("1.82000910")
    assert checked == 3 * 7 * 4 * 2
