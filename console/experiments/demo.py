"""The demo experiment: `support-prompt` in prod has split customers 75/25 between
answer-question v2 (stable, live) and v3 (canary) for three days. The canary wins clearly:
fewer errors, more thumbs up, shorter and so cheaper answers. Staff get the canary by a
targeting rule, so the ratio check is off (the report says why)."""

from __future__ import annotations

import random
from datetime import UTC, timedelta

from django.utils import timezone

from console.flags.demo import EXPERIMENT_AGE
from console.usage import services as usage
from console.usage.models import UsageEvent

FLAG = "support-prompt"
ARMS = {
    # share, error rate, thumbs-up rate among rated, median latency (ms), output tokens
    "stable": (0.75, 0.035, 0.64, 900.0, 190, "answer-question@2"),
    "canary": (0.25, 0.012, 0.80, 820.0, 140, "answer-question@3"),
}
PER_HOUR = 40


def seed_experiment(application) -> int:
    """Usage events of the experiment's three days, folded into the rollups. Idempotent."""
    prod = application.environments.filter(key="prod").first()
    if (
        prod is None
        or UsageEvent.objects.filter(application=application, environment=prod, flag=FLAG).exists()
    ):
        return 0
    rng = random.Random(7)
    now = timezone.now()
    start = (now - EXPERIMENT_AGE).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    events = []
    hour = start + timedelta(hours=1)
    while hour + timedelta(hours=1) < now:
        for n in range(PER_HOUR):
            staff = rng.random() < 0.02
            variant = "canary" if staff or rng.random() < ARMS["canary"][0] else "stable"
            _, errors, thumbs_up, latency, output, prompt = ARMS[variant]
            rated = rng.random() < 0.25
            events.append(
                {
                    "event_id": f"exp-{hour:%Y%m%d%H}-{n}",
                    "time": (hour + timedelta(seconds=rng.uniform(0, 3599))).isoformat(),
                    "model": "gpt-main@1",
                    "prompt_version": prompt,
                    "feature": "answer",
                    "flag": FLAG,
                    "variant": variant,
                    "input_tokens": rng.randint(900, 1400),
                    "output_tokens": max(20, int(rng.gauss(output, 30))),
                    "latency_ms": round(rng.lognormvariate(0, 0.35) * latency, 1),
                    "status": "error" if rng.random() < errors else "ok",
                    "feedback": ("up" if rng.random() < thumbs_up else "down") if rated else "none",
                    "user_id": f"customer-{rng.randint(1, 4000)}",
                }
            )
        hour += timedelta(hours=1)
    for first in range(0, len(events), usage.MAX_BATCH):
        usage.ingest(
            application=application,
            environment=prod,
            events=events[first : first + usage.MAX_BATCH],
        )
    usage.rollup(settle=timedelta(0))
    return len(events)
