"""The experiment report's bench: `events` usage events of a two-variant experiment over
`days` days, stored straight into PostgreSQL (generate_series), folded into the hourly rollups
by the real rollup pass, then the report built repeatedly (the events and rollups are
deleted afterwards; the `bench-exp-*` application stays). Returns the figures as a dict
(`manage.py bench_samples --experiment-events N` prints them)."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from uuid import uuid4

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from console.audit.services import SYSTEM
from console.core.versioning import dated
from console.experiments import report, shadows
from console.flags import services as flags
from console.flags.models import FlagKind, FlagRulesVersion
from console.registry import services as registry
from console.registry.kinds import PROMPT
from console.registry.models import Application
from console.releases import services as releases
from console.releases.models import ShadowDeployment
from console.usage import services as usage
from console.usage.models import RollupState, UsageEvent, UsageHourly

# Variant b errs less (3% against 4%) and is rated up more (72% against 70%).
INSERT = """
INSERT INTO usage_usageevent (
    application_id, environment_id, event_id, at, received_at, model, model_config,
    prompt_version, feature, flag, variant, shadow_of, fallback_from, input_tokens,
    cached_tokens, output_tokens, latency_ms, status, cache_hit, feedback, user_hash, source,
    cost, savings)
SELECT %(app)s, %(env)s, 'e' || g, %(now)s - random() * %(span)s, %(now)s, 'gpt-4o-mini',
    'main@1', CASE WHEN g %% 2 = 0 THEN 'answer@1' ELSE 'answer@2' END, 'answer', %(flag)s,
    CASE WHEN g %% 2 = 0 THEN 'a' ELSE 'b' END, '', '', 1000, 0, 150 + (random() * 100)::int,
    exp(ln(600) + 0.5 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())),
    CASE WHEN random() < (CASE WHEN g %% 2 = 0 THEN 0.04 ELSE 0.03 END) THEN 'error'
         ELSE 'ok' END,
    false,
    CASE WHEN random() < 0.2
         THEN CASE WHEN random() < (CASE WHEN g %% 2 = 0 THEN 0.70 ELSE 0.72 END)
              THEN 1 ELSE -1 END
         ELSE 0 END,
    '', 'runtime', 0.00015 + 0.0006 * random(), 0
FROM generate_series(1, %(events)s) AS g
"""


def _application(prefix: str, bench: str) -> Application:
    """A fresh application with one environment, prod, for a bench's rows."""
    if connection.vendor != "postgresql":
        raise RuntimeError(f"{bench} runs on PostgreSQL")
    key = f"{prefix}-{uuid4().hex[:8]}"
    return registry.create_application(
        actor=SYSTEM, key=key, name=key, environments=[{"key": "prod", "name": "prod"}]
    )


def bench_report(events: int = 1_000_000, days: int = 7, repeat: int = 9) -> dict:
    application = _application("bench-exp", "the experiment bench")
    try:
        prod = application.environments.get()
        now = timezone.now()
        flag = flags.create_flag(
            actor=SYSTEM, application=application, key="answer-exp", name="Answer experiment",
            flag_type="string", kind=FlagKind.EXPERIMENT, off_variant="a",
            variants=[{"key": "a", "value": "answer@1"}, {"key": "b", "value": "answer@2"}],
        )  # fmt: skip
        with dated(FlagRulesVersion, now - timedelta(days=days, hours=1)):
            flags.save_rules(
                actor=SYSTEM, flag=flag, environment=prod, base_number=1,
                content={"enabled": True, "rules": [], "default": {"rollout": [
                    {"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}},
            )  # fmt: skip
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                INSERT,
                {"app": application.pk, "env": prod.pk, "now": now - timedelta(minutes=1),
                 "span": timedelta(days=days), "flag": flag.key, "events": events},
            )  # fmt: skip
        stored = time.perf_counter() - started
        started = time.perf_counter()
        # The real pass with its settle delay (the events were received a minute ago): on a
        # shared database it never skips another tenant's events still in flight. A pass
        # takes a range of ids, and ids other transactions used and dropped leave gaps in it,
        # so the passes run until the watermark has passed the last of them.
        last = UsageEvent.objects.filter(application=application).aggregate(m=Max("pk"))["m"]
        folded = 0
        while (mark := RollupState.objects.get_or_create(name="usage")[0].last_event_id) < last:
            folded += usage.rollup(max_events=max(events + 1_000, last - mark))["events"]
        rollup_s = time.perf_counter() - started
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            found = report.build(flag, prod)
            timings.append((time.perf_counter() - started) * 1000)
        return {
            "experiment_events": events,
            "experiment_days": days,
            "experiment_store_s": round(stored, 2),
            "experiment_rollup_s": round(rollup_s, 2),
            "experiment_rollup_rows": UsageHourly.objects.filter(application=application).count(),
            "experiment_report_ms": round(statistics.median(timings), 1),
            "experiment_report_max_ms": round(max(timings), 1),
            "experiment_requests": sum(v["requests"] for v in found["variants"]),
            "experiment_verdict": found["conclusion"]["status"],
            "rollup_events": folded,
        }
    finally:
        # The events and their rollups go; the application stays, as versions are kept
        # (like bench_samples' application).
        with connection.cursor() as cursor:
            for table in ("usage_usageevent", "usage_usagehourly", "usage_usagedaily"):
                cursor.execute(f"DELETE FROM {table} WHERE application_id = %s", [application.pk])


# Live calls of answer@1, then every `share`-th one again on answer@2 as its shadow (errs less,
# costs a little more, a touch slower), reported with shadow_of.
SHADOW_INSERT = """
INSERT INTO usage_usageevent (
    application_id, environment_id, event_id, at, received_at, model, model_config,
    prompt_version, feature, flag, variant, shadow_of, fallback_from, input_tokens,
    cached_tokens, output_tokens, latency_ms, status, cache_hit, feedback, user_hash, source,
    cost, savings)
SELECT %(app)s, %(env)s, %(prefix)s || g, %(now)s - (g::float / %(events)s) * %(span)s, %(now)s,
    'gpt-4o-mini',
    'main@1', %(prompt)s, 'answer', '', '', CASE WHEN %(paired)s THEN 'l' || g ELSE '' END, '',
    1000, 0,
    150 + (random() * 100)::int,
    %(slower)s * exp(ln(600) + 0.5 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())),
    CASE WHEN random() < %(errors)s THEN 'error' ELSE 'ok' END, false, 0, '', 'runtime',
    %(cost)s + 0.0006 * random(), 0
FROM generate_series(1, %(events)s) AS g
WHERE g %% %(every)s = 0
"""


def bench_shadow(events: int = 1_000_000, share: float = 0.2, days: int = 7, repeat: int = 9):
    """`events` live calls over `days` days and a `share` of them shadowed, stored straight
    into PostgreSQL; the shadow comparison (shadows.comparison: the pairing join and the
    answers' aggregate) built repeatedly. The events go afterwards; the application stays."""
    application = _application("bench-shadow", "the shadow bench")
    try:
        prod = application.environments.get()
        now = timezone.now()
        content = {
            "system": "You answer questions.",
            "user": "{{ question }}",
            "variables": ["question"],
        }
        head = registry.create_head(
            actor=SYSTEM, kind=PROMPT, application=application, key="answer", name="Answer",
            content=content,
        ).version.head  # fmt: skip
        second = registry.save_head_version(
            actor=SYSTEM, head=head, content={**content, "system": "Answer briefly."},
            base_number=1,
        ).version  # fmt: skip
        user, _ = get_user_model().objects.get_or_create(username="bench-shadow")
        with dated(ShadowDeployment, now - timedelta(days=days, hours=1)):
            shadow = releases.start_shadow(actor=user, environment=prod, version=second)
        every = max(1, round(1 / share))
        # A shadow call is made at its live call's time; every pair inside the window.
        inside = timedelta(days=days) - timedelta(minutes=5)
        arms = [
            {"prefix": "l", "prompt": "answer@1", "paired": False, "every": 1,
             "slower": 1.0, "errors": 0.04, "cost": 0.00015},
            {"prefix": "s", "prompt": "answer@2", "paired": True, "every": every,
             "slower": 1.05, "errors": 0.03, "cost": 0.00018},
        ]  # fmt: skip
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for arm in arms:
                cursor.execute(
                    SHADOW_INSERT,
                    {**arm, "app": application.pk, "env": prod.pk, "events": events,
                     "now": now - timedelta(minutes=1), "span": inside},
                )  # fmt: skip
            cursor.execute("ANALYZE usage_usageevent")
        stored = time.perf_counter() - started
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            found = shadows.comparison(shadow, now=now)
            timings.append((time.perf_counter() - started) * 1000)
        return {
            "shadow_live_events": events,
            "shadow_calls": events // every,
            "shadow_store_s": round(stored, 2),
            "shadow_pairs": found["pairs"],
            "shadow_comparison_ms": round(statistics.median(timings), 1),
            "shadow_comparison_max_ms": round(max(timings), 1),
            "shadow_status": found["status"],
        }
    finally:
        ShadowDeployment.objects.filter(environment__application=application).update(
            active=False, ended_at=timezone.now()
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM usage_usageevent WHERE application_id = %s", [application.pk]
            )
