"""Sixty days of realistic support-bot usage: a weekly rhythm, one spike, two models."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta

from django.utils import timezone

from console.audit.services import SYSTEM
from console.usage import services
from console.usage.budgets import create_budget
from console.usage.models import PricePoint, UsageEvent

FEATURES = [("answer", 0.72), ("summarise", 0.18), ("escalate", 0.10)]


def seed_usage(application, admin, days: int = 60, per_weekday: int = 700) -> int:
    if UsageEvent.objects.filter(
        application=application, source=UsageEvent.Source.RUNTIME
    ).exists():
        return 0
    start_prices = timezone.now() - timedelta(days=days + 30)
    if not PricePoint.objects.filter(application=application).exists():
        services.record_price(
            actor=admin,
            application=application,
            model="gpt-4o-mini",
            effective_from=start_prices,
            input_per_1m="0.15",
            cached_input_per_1m="0.075",
            output_per_1m="0.60",
            note="List price",
        )
        services.record_price(
            actor=admin,
            application=application,
            model="gpt-4o",
            effective_from=start_prices,
            input_per_1m="2.50",
            cached_input_per_1m="1.25",
            output_per_1m="10.00",
            tiers=[{"above_input_tokens": 128000, "input_per_1m": 5.0, "output_per_1m": 15.0}],
            note="List price; long-context tier",
        )
    rng = random.Random(42)
    envs = {e.key: e for e in application.environments.all()}
    today = timezone.now().date()
    spike_day = today - timedelta(days=12)
    # An hour three days ago when gpt-main's provider failed: answers fell back to the judge's
    # bigger model (gpt-main's breaker tripped), and were reported with fallback_from.
    outage_day = today - timedelta(days=3)
    users = [f"customer-{n:04d}" for n in range(300)]
    total = 0
    for offset in range(days, -1, -1):
        day = today - timedelta(days=offset)
        base = per_weekday if day.weekday() < 5 else per_weekday // 2
        count = int(base * rng.uniform(0.85, 1.15)) * (4 if day == spike_day else 1)
        if offset == 0:
            count = int(count * min(1.0, timezone.now().hour / 24 + 0.05))
        events = []
        for n in range(count):
            feature = rng.choices([f for f, _ in FEATURES], [w for _, w in FEATURES])[0]
            escalated = feature == "escalate" or (day == spike_day and rng.random() < 0.5)
            model = "judge@1" if escalated else "gpt-main@2"
            at = datetime.combine(day, time.min, UTC) + timedelta(seconds=rng.randint(0, 86399))
            if at > timezone.now():
                continue
            fell_back = day == outage_day and at.hour == 14 and model == "gpt-main@2"
            if fell_back:
                model = "judge@1"
            input_tokens = rng.randint(600, 2400) * (3 if day == spike_day else 1)
            cached = int(input_tokens * rng.choice([0, 0, 0.5, 0.8]))
            status = rng.choices(["ok", "error", "timeout"], [0.975, 0.018, 0.007])[0]
            events.append(
                {
                    "event_id": f"demo-{day.isoformat()}-{n}",
                    "time": at.isoformat(),
                    "model": model,
                    "prompt_version": "answer-question@3"
                    if feature == "answer"
                    else "summarise-ticket@2",
                    "feature": feature,
                    "variant": "v3" if feature == "answer" else "",
                    "input_tokens": input_tokens,
                    "cached_tokens": cached,
                    "output_tokens": rng.randint(60, 400),
                    "latency_ms": round(rng.lognormvariate(6.2 if not escalated else 6.9, 0.45), 1),
                    "status": status,
                    "cache_hit": cached > 0,
                    "feedback": rng.choices(["none", "up", "down"], [0.8, 0.15, 0.05])[0],
                    "user_id": rng.choice(users),
                    "fallback_from": "gpt-main@2" if fell_back else "",
                }
            )
        # Nine in ten requests are production traffic; the rest is staging.
        split = int(len(events) * 0.9)
        for env, part in ((envs["prod"], events[:split]), (envs["staging"], events[split:])):
            for chunk in range(0, len(part), services.MAX_BATCH):
                batch = part[chunk : chunk + services.MAX_BATCH]
                total += services.ingest(
                    application=application, environment=env, events=batch
                ).accepted
    services.rollup(settle=timedelta(0))
    if not application.budgets.exists():
        create_budget(
            actor=SYSTEM,
            application=application,
            name="Monthly spend",
            period="monthly",
            amount="250",
        )
        if application.flags.filter(key="answers-enabled").exists():
            create_budget(
                actor=SYSTEM,
                application=application,
                name="Escalations per day",
                period="daily",
                amount="25",
                feature="escalate",
                thresholds=[50, 80, 100, 120],
                action={"type": "kill_switch", "flag": "answers-enabled"},
                per_user_daily_limit="2.00",
            )
    return total
