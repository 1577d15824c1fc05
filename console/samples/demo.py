"""A week of production samples for support-bot's prod: answer-question v2 for the first four
days; since then the `support-prompt` experiment has given a quarter of customers v3 (the
samples say so: flag and variant, as console.experiments.demo's usage does). Mostly grounded
answers, a few made-up ones users rated down, declined questions, and some personal data for
the redaction to remove. Half of them judged by the demo judge on the bundled simulator.
Monitors on prod, and one drift episode two days ago that alerted once and was acknowledged."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from console.datasets.demo import items
from console.evals.demo import simulator_running
from console.samples import services
from console.samples.models import MonitorAlert, Sample

PER_DAY = 60
DAYS = 7
MADE_UP = "Yes, that is always possible, at any time and for any item, no questions asked."
PERSONAL = (
    " My email is jo.smith@example.com.",
    " Call me back on +1 415 555 0199.",
    " The card I used is 4111 1111 1111 1111.",
)
COMPLAINTS = ("That is not what your policy says.", "Wrong, and I lost an hour.", "Useless.")


def _answer(item: dict, rng: random.Random) -> tuple[str, str, list[str], str | None, str]:
    """(output, context, sources, feedback, comment) for one production request."""
    sources = list(item["expected_sources"])
    facts = ", ".join(item["expected_contains"])
    topic = item["question"].rstrip("?")
    context = " ".join(f"[{s}] Acme policy on {topic.lower()}: {facts}." for s in sources)
    if item["unanswerable"]:
        return (
            "I don't know based on our policies; let me connect you with a human agent.",
            "",
            [],
            rng.choice([None, None, None, "up"]),
            "",
        )
    if rng.random() < 0.06:
        return MADE_UP, context, [], "down", rng.choice(COMPLAINTS)
    cited = "".join(f" [{s}]" for s in sources)
    feedback = rng.choices([None, "up", "down"], weights=[70, 26, 4])[0]
    return f"{topic}: {facts}.{cited}", context, sources, feedback, ""


def seed_samples(application, admin, port: int, log=None) -> int:
    """Send a week of samples through the ingestion service and judge the sampled share. Does
    nothing once the application has samples."""
    if Sample.objects.filter(application=application).exists():
        return 0
    say = log or (lambda message: None)
    judge = application.model_configs.filter(key="judge").first()
    judges = {
        metric: application.prompts.filter(key=f"judge-{metric}").first()
        for metric in services.JUDGED_METRICS
    }
    policy = services.policy_of(application)
    services.update_policy(
        actor=admin,
        application=application,
        revision=policy.revision if policy.pk else 0,
        redact_kinds=list(policy.redact_kinds),
        redact_patterns="order_id: \\bA-\\d{6}\\b",
        judge_rate=0.5,
        judge_daily_cap=Decimal("2.00"),
        judge_model=judge.versions.get(number=judge.latest_number) if judge else None,
        judge_prompts={
            metric: head.versions.get(number=head.latest_number)
            for metric, head in judges.items()
            if head is not None and judge is not None
        },
    )
    rng = random.Random(15)
    pool = items()
    environment = application.environments.get(key="prod")
    now = timezone.now()
    samples = []
    for day in range(DAYS, 0, -1):
        for n in range(PER_DAY):
            canary = day <= 3 and rng.random() < 0.25
            version = "answer-question@3" if canary else "answer-question@2"
            experiment = (
                {"flag": "support-prompt", "variant": "canary" if canary else "stable"}
                if day <= 3
                else {}
            )
            item = rng.choice(pool)
            output, context, sources, feedback, comment = _answer(item, rng)
            question = item["question"]
            if rng.random() < 0.05:
                question += rng.choice(PERSONAL)
            at = now - timedelta(days=day - 1, minutes=rng.uniform(5, 24 * 60 - 5))
            samples.append(
                {
                    "sample_id": f"demo-{day}-{n:03d}",
                    "time": at.isoformat(),
                    "inputs": {"question": question, **item["variables"]},
                    "output": output,
                    "context": context,
                    "sources": sources,
                    "prompt_version": version,
                    "model_config": "gpt-main@1",
                    "feedback": feedback,
                    "feedback_comment": comment,
                    **experiment,
                }
            )
    samples += _drift_episode(rng, now - timedelta(days=2, hours=3))
    for start in range(0, len(samples), services.MAX_BATCH):
        services.ingest(
            application=application,
            environment=environment,
            samples=samples[start : start + services.MAX_BATCH],
        )
    with simulator_running(port):
        result = services.judge_pending(limit=len(samples))
    if result.failed:
        say(f"Samples: the judge could not score {result.failed} of them")
    _monitors(application, admin, environment, now)
    return len(samples)


EPISODE = 40
PASTED = (
    "Forwarding the whole thread below because nobody answers. ---------- Forwarded message "
    "---------- Subject: Re: Re: order problem. Hello, I wrote on Monday about the parcel and "
    "the courier says it was delivered but it was not, and the tracking page shows nothing. "
)


def _drift_episode(rng: random.Random, end) -> list[dict]:
    """Forty requests in fifty minutes, two days ago, where customers pasted whole email
    threads into the chat (a new contact form sent them there): input length drifts."""
    return [
        {
            "sample_id": f"demo-drift-{n:03d}",
            "time": (end - timedelta(minutes=rng.uniform(1, 50))).isoformat(),
            "inputs": {"question": PASTED * rng.randint(2, 4), "customer_tier": "standard"},
            "output": "I don't know based on our policies; let me connect you with a human agent.",
            "prompt_version": "answer-question@3",
            "model_config": "gpt-main@1",
            "feedback": rng.choice([None, "down"]),
        }
        for n in range(EPISODE)
    ]


def _monitors(application, admin, environment, now) -> None:
    """Monitors on prod, and the drift episode's alert: raised once by the sweep at the end of
    the episode, held back through its cooldown, acknowledged by the engineer on call."""
    from console.samples import monitors

    engineer = application.memberships.filter(role="engineer").first()
    actor = engineer.user if engineer else admin
    daily = {"window_minutes": 24 * 60, "baseline_minutes": 6 * 24 * 60}
    created = {
        metric: services.create_monitor(
            actor=actor, application=application, environment=environment, metric=metric, **extra
        )
        for metric, extra in (
            ("faithfulness", {**daily, "min_samples": 20}),
            # Day-to-day error rates wander by a fifth on this traffic: wider thresholds.
            ("error_rate", {**daily, "min_samples": 100, "warn": 30.0, "critical": 60.0}),
            ("input_drift", {"window_minutes": 60, "baseline_minutes": 24 * 60}),
        )
    }
    end = now - timedelta(days=2, hours=3)
    drift = [created["input_drift"].pk]
    monitors.sweep(end, only=drift)
    monitors.sweep(end + timedelta(minutes=5), only=drift)  # still drifting: updated, no news
    alert = MonitorAlert.objects.filter(monitor__application=application).first()
    if alert is not None:
        services.decide_alert(
            actor=actor, alert=alert, action="acknowledge",
            note="Customers paste whole email threads since the new contact form; answers "
            "decline politely. Watching.",
        )  # fmt: skip
