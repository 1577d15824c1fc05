"""The demo shadow: answer-question v3 has run as a shadow beside v2 (live) in support-bot's prod
for two days, as an applied shadow request would have started it. Every live call of v2 was
repeated on v3 and both were reported (the shadow call with `shadow_of` and its answer); the live
answers in the judged share were sent as samples, and the demo judge scored the agreement on the
bundled simulator.

The story the comparison tells: v3 is cheaper per request (shorter answers, for a slightly
longer prompt), a touch slower at the median, errs less, and mostly says what v2 said — it
parts ways where v2 made a policy up, where it declines what v2 answered, and where it adds a
line for gold customers. The promotion request for v3 (console.releases.demo) can take this
comparison as its production evidence."""

from __future__ import annotations

import random
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from console.config import SIMULATOR_ADDRESS
from console.core.versioning import dated
from console.datasets.demo import items
from console.evals.demo import simulator_running
from console.releases import services as releases
from console.releases.models import ShadowDeployment
from console.samples import services as samples
from console.samples.models import ShadowAnswer
from console.usage import services as usage
from console.usage.models import UsageEvent

LIVE, SHADOW = "answer-question@2", "answer-question@3"
MODEL = "gpt-main@1"  # what prod serves
PAIRS = 800
AGE = timedelta(days=2)  # the shadow started two days ago; its calls span them
SIMULATOR_PORT = int(SIMULATOR_ADDRESS.rsplit(":", 1)[1])
MADE_UP = "Yes, that is always possible, at any time and for any item, no questions asked."
LIVE_DECLINES = "I don't know based on our policies; let me connect you with a human agent."
SHADOW_DECLINES = "I don't know; a human agent will follow up with you."
GOLD_EXTRA = " As a gold customer you can also reach our priority line at any time."
# Per live call of v2 and its shadow call on v3: error rate, median latency (ms), tokens.
ERRORS = {"live": 0.035, "shadow": 0.012}
LATENCY_MS = 900.0
SLOWER = (0.97, 1.15)  # the shadow's latency against its live call's
OUTPUT_TOKENS = {"live": (190, 35), "shadow": (135, 30)}  # mean, spread
EXTRA_PROMPT_TOKENS = (90, 130)  # v3's longer system prompt and the customer's tier


def _answers(item: dict, rng: random.Random) -> tuple[str, str, str, list[str]]:
    """(live answer, shadow answer, context, sources) for one request."""
    sources = list(item["expected_sources"])
    facts = ", ".join(item["expected_contains"])
    topic = item["question"].rstrip("?")
    context = " ".join(f"[{s}] Acme policy on {topic.lower()}: {facts}." for s in sources)
    if item["unanswerable"]:
        return LIVE_DECLINES, SHADOW_DECLINES, "", []
    grounded = f"{topic}: {facts}."
    live = f"{grounded} Let me know if there is anything else I can help you with."
    shadow = grounded + "".join(f" [{s}]" for s in sources)
    roll = rng.random()
    if roll < 0.05:  # v2 made a policy up; v3 kept to the context
        live = MADE_UP
    elif roll < 0.08:  # v3 declines what v2 answered
        shadow = SHADOW_DECLINES
    elif roll < 0.085:  # v3 made a policy up (rarely: it is guarded)
        shadow = MADE_UP
    elif item["variables"].get("customer_tier") == "gold" and roll < 0.40:
        shadow += GOLD_EXTRA  # tier-aware: a line v2 never says
    return live, shadow, context, sources


def _traffic(application, now) -> tuple[list[dict], list[dict]]:
    """(usage events, live samples): each live call followed by its shadow call, and the live
    answers of the judged share (sample_id = the live call's event_id) whose call succeeded."""
    rng = random.Random(31)
    pool = items()
    policy = samples.policy_of(application)
    judge_rate = policy.judge_rate if policy.judge_model_id is not None else 0.0
    events, live_samples = [], []
    for n in range(PAIRS):
        item = rng.choice(pool)
        live_out, shadow_out, context, sources = _answers(item, rng)
        at = now - AGE + timedelta(minutes=rng.uniform(5, AGE.total_seconds() / 60 - 5))
        live_id = f"shadow-demo-live-{n:04d}"
        live_ok = rng.random() >= ERRORS["live"]
        shadow_ok = rng.random() >= ERRORS["shadow"]
        input_tokens = rng.randint(950, 1250)
        latency = rng.lognormvariate(0, 0.35) * LATENCY_MS
        mean, spread = OUTPUT_TOKENS["live"]
        events.append(
            {
                "event_id": live_id,
                "time": at.isoformat(),
                "model": MODEL,
                "prompt_version": LIVE,
                "feature": "answer",
                "input_tokens": input_tokens,
                "output_tokens": max(30, int(rng.gauss(mean, spread))) if live_ok else 0,
                "latency_ms": round(latency, 1),
                "status": "ok" if live_ok else rng.choice(["error", "timeout"]),
                "user_id": f"customer-{rng.randint(1, 4000)}",
            }
        )
        mean, spread = OUTPUT_TOKENS["shadow"]
        shadow = {
            "event_id": f"shadow-demo-v3-{n:04d}",
            "time": (at + timedelta(milliseconds=rng.uniform(5, 40))).isoformat(),
            "model": MODEL,
            "prompt_version": SHADOW,
            "feature": "answer",
            "shadow_of": live_id,
            "input_tokens": input_tokens + rng.randint(*EXTRA_PROMPT_TOKENS),
            "output_tokens": max(25, int(rng.gauss(mean, spread))) if shadow_ok else 0,
            "latency_ms": round(latency * rng.uniform(*SLOWER), 1),
            "status": "ok" if shadow_ok else "error",
        }
        if shadow_ok:  # a failed call has no answer to report
            shadow["output"] = shadow_out
        events.append(shadow)
        if live_ok and samples.judged_share(application.pk, live_id) < judge_rate:
            live_samples.append(
                {
                    "sample_id": live_id,
                    "time": at.isoformat(),
                    "inputs": {"question": item["question"], **item["variables"]},
                    "output": live_out,
                    "context": context,
                    "sources": sources if live_out != MADE_UP else [],
                    "prompt_version": LIVE,
                    "model_config": MODEL,
                }
            )
    return events, live_samples


def _seeded(application, prod) -> bool:
    """Whether the demo shadow's calls have been reported already."""
    shadow_calls = UsageEvent.objects.filter(
        application=application, environment=prod, prompt_version=SHADOW
    ).exclude(shadow_of="")
    return shadow_calls.exists()


def seed_shadow(application, users: dict, log=None, *, port: int = SIMULATOR_PORT) -> int:
    """Start the demo shadow in prod, send its two days of paired calls through the usage
    ingestion (shadow answers stored as POST /api/v1/usage stores them), the judged share's live
    answers through the sample ingestion, and judge the agreement on the bundled simulator at
    `port`. Returns the number of pairs sent; does nothing (0) once the demo shadow's usage
    exists, or without prod or answer-question v3."""
    prod = application.environments.filter(key="prod").first()
    prompt = application.prompts.filter(key="answer-question").first()
    version = prompt.versions.filter(number=3).first() if prompt else None
    if prod is None or version is None or _seeded(application, prod):
        return 0
    say = log or (lambda message: None)
    now = timezone.now()
    if not ShadowDeployment.objects.filter(
        environment=prod, prompt_version=version, active=True
    ).exists():
        # prod is protected: the demo stands in for the applied shadow request, as seed_demo
        # does for prompt bindings (via_promotion).
        with dated(ShadowDeployment, now - AGE - timedelta(minutes=30)):
            releases.start_shadow(
                actor=users["engineer"], environment=prod, version=version, via_promotion=True
            )
    events, live_samples = _traffic(application, now)
    for first in range(0, len(events), usage.MAX_BATCH):
        batch = events[first : first + usage.MAX_BATCH]
        # As POST /api/v1/usage does (console.api.usage): the events and the shadow answers
        # they carry are stored together.
        with transaction.atomic():
            usage.ingest(application=application, environment=prod, events=batch)
            samples.store_shadow_answers(application=application, environment=prod, events=batch)
    usage.rollup(settle=timedelta(0))
    # The demo stands in for two days of traffic: each answer arrived when its call was made.
    ShadowAnswer.objects.filter(application=application, environment=prod).update(
        received_at=F("at")
    )
    for first in range(0, len(live_samples), samples.MAX_BATCH):
        samples.ingest(
            application=application,
            environment=prod,
            samples=live_samples[first : first + samples.MAX_BATCH],
        )
    if live_samples:
        with simulator_running(port):
            result = samples.judge_pending(limit=2 * len(live_samples))
        if result.failed or result.capped:
            say(
                f"Shadow: the judge could not score {result.failed} answers and left "
                f"{result.capped} over the daily cap"
            )
    return PAIRS
