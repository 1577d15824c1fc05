"""The experiment report: per variant of a flag in one environment, what users got (requests,
errors, latency, cost, thumbs up, judged quality), each figure with an always-valid interval,
a verdict against the control, a minimum sample size and a sample-ratio-mismatch check.

Read from the usage rollups (flag × variant is a rollup dimension) and the judged production
samples, so it costs a handful of queries whatever the traffic. The report is a plain dict:
the page renders it, `manage.py experiment_report` prints it, and "Conclude" stores it with the
promotion request as evidence.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from django.db.models import Count, F, FloatField, Q, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from console.experiments import stats
from console.flags.models import Flag, FlagKind, FlagRules, FlagRulesVersion, definition_in
from console.registry.models import Environment
from console.samples.models import Sample
from console.usage.models import LATENCY_BUCKETS_MS, UsageEvent, UsageHourly

# The error rate an A/A experiment may declare a winner at, however often it is read: split
# evenly (Bonferroni) over every decision metric and every treatment, fixed in advance.
ALPHA = 0.05
# Fewer than this many observations in an arm and a metric gets no verdict.
MIN_REQUESTS = 200
MIN_RATED = 50  # thumbs up or down
MIN_JUDGED = 50  # judged samples
SRM_THRESHOLD = 1_000.0  # Bayes factor: P(false alarm, ever) ≤ 1/1000

LOWER, HIGHER = "lower", "higher"
# (key, label, which way is better or None for "report only", the minimum, the source)
METRICS: tuple[tuple[str, str, str | None, int, str], ...] = (
    ("error_rate", "Error rate", LOWER, MIN_REQUESTS, "usage"),
    ("latency_p50", "Latency p50 (ms)", LOWER, MIN_REQUESTS, "usage"),
    ("latency_p95", "Latency p95 (ms)", LOWER, MIN_REQUESTS, "usage"),
    ("cost_per_request", "Cost per request ($)", LOWER, MIN_REQUESTS, "usage"),
    ("thumbs_up_rate", "Thumbs-up rate", HIGHER, MIN_RATED, "usage"),
    ("faithfulness", "Faithfulness (judged)", HIGHER, MIN_JUDGED, "samples"),
    ("relevance", "Relevance (judged)", HIGHER, MIN_JUDGED, "samples"),
    ("hallucination_rate", "Hallucination rate (judged)", LOWER, MIN_JUDGED, "samples"),
    ("refusal_rate", "Refusal rate", None, MIN_JUDGED, "samples"),
)
DECISION_METRICS = sum(1 for m in METRICS if m[2])
QUANTILES = {"latency_p50": 0.5, "latency_p95": 0.95}
# Shares and judge scores, which lie in 0..1.
BOUNDED = {"error_rate", "thumbs_up_rate", "faithfulness", "relevance", "hallucination_rate",
           "refusal_rate"}  # fmt: skip
BOUNDS = [float(b) for b in LATENCY_BUCKETS_MS]


class NotAnExperiment(Exception):
    """The flag splits no traffic in that environment: there is nothing to compare."""


def _ceil_hour(moment: datetime) -> datetime:
    hour = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour if hour == moment else hour + timedelta(hours=1)


def serving_split(content: dict | None) -> list[dict]:
    """The default split [{variant, weight}] a rules version serves, when it is switched on
    and splits over two or more variants; [] otherwise."""
    content = content or {}
    split = [
        s for s in ((content.get("default") or {}).get("rollout") or []) if s.get("weight", 0) > 0
    ]
    return split if content.get("enabled") and len(split) >= 2 else []


def live_split(flag: Flag, environment: Environment) -> tuple[FlagRulesVersion, list[dict]]:
    """The rules version live in the environment and its default split [{variant, weight}]
    (the version's content also has the targeting rules)."""
    head = FlagRules.objects.filter(flag=flag, environment=environment).first()
    version = (
        FlagRulesVersion.objects.filter(head=head, number=head.latest_number).first()
        if head and head.latest_number
        else None
    )
    split = serving_split(version.content) if version else []
    if not split or head.killed:
        raise NotAnExperiment(
            f"{flag.key} does not split traffic in {environment.name}: its rules there serve "
            "one variant (an experiment needs a default rollout over two or more variants)"
        )
    return version, split


def _usage(flag: Flag, environment: Environment, since: datetime) -> dict[str, dict]:
    rows = UsageHourly.objects.filter(
        application_id=flag.application_id,
        environment=environment,
        flag=flag.key,
        shadow=False,
        source=UsageEvent.Source.RUNTIME,
        hour__gte=since,
    ).values_list(
        "variant",
        "requests",
        "errors",
        "cost",
        "cost_squares",
        "thumbs_up",
        "thumbs_down",
        "latency_buckets",
    )
    arms: dict[str, dict] = {}
    width = len(LATENCY_BUCKETS_MS) + 1
    for variant, requests, errors, cost, squares, up, down, buckets in rows.iterator():
        arm = arms.setdefault(
            variant,
            {"requests": 0, "errors": 0, "cost": 0.0, "squares": 0.0, "up": 0, "down": 0,
             "buckets": [0] * width},
        )  # fmt: skip
        arm["requests"] += requests
        arm["errors"] += errors
        arm["cost"] += float(cost)
        arm["squares"] += squares
        arm["up"] += up
        arm["down"] += down
        for n, count in enumerate((buckets or [])[:width]):
            arm["buckets"][n] += count
    return arms


def _samples(flag: Flag, environment: Environment, since: datetime) -> dict[str, dict]:
    judged = Q(faithfulness__isnull=False)
    rows = (
        Sample.objects.filter(
            application_id=flag.application_id,
            environment=environment,
            flag=flag.key,
            at__gte=since,
        )
        .values("variant")
        .annotate(
            samples=Count("id"),
            refused_n=Count("id", filter=Q(refused=True)),
            judged=Count("id", filter=judged),
            f_sum=Sum("faithfulness"),
            f_sq=Sum(Cast(F("faithfulness") * F("faithfulness"), FloatField())),
            r_n=Count("id", filter=Q(relevance__isnull=False)),
            r_sum=Sum("relevance"),
            r_sq=Sum(Cast(F("relevance") * F("relevance"), FloatField())),
            hallucinated=Count("id", filter=Q(faithfulness__lt=0.5)),
        )
        .order_by()
    )
    return {r["variant"]: r for r in rows}


def _arm_data(metric: str, usage: dict | None, samples: dict | None) -> stats.Arm:
    u = usage or {}
    s = samples or {}
    if metric == "error_rate":
        return stats.bernoulli(u.get("errors", 0), u.get("requests", 0))
    if metric == "cost_per_request":
        return stats.from_sums(u.get("requests", 0), u.get("cost", 0.0), u.get("squares", 0.0))
    if metric == "thumbs_up_rate":
        return stats.bernoulli(u.get("up", 0), u.get("up", 0) + u.get("down", 0))
    if metric == "faithfulness":
        return stats.from_sums(s.get("judged", 0), s.get("f_sum") or 0.0, s.get("f_sq") or 0.0)
    if metric == "relevance":
        return stats.from_sums(s.get("r_n", 0), s.get("r_sum") or 0.0, s.get("r_sq") or 0.0)
    if metric == "hallucination_rate":
        return stats.bernoulli(s.get("hallucinated", 0), s.get("judged", 0))
    if metric == "refusal_rate":
        return stats.bernoulli(s.get("refused_n", 0), s.get("samples", 0))
    raise KeyError(metric)


def _round(value: float | None, digits: int = 8) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _pair(interval) -> list[float | None] | None:
    return [_round(interval[0]), _round(interval[1])] if interval else None


def _verdict(better: str | None, low: float, high: float) -> str:
    """Better/worse for the treatment when the interval of treatment − control excludes 0."""
    if low > 0 or high < 0:
        up = low > 0
        if better is None:
            return "higher" if up else "lower"
        return "better" if (better == HIGHER) == up else "worse"
    return "no difference"


def _figure(
    key: str,
    label: str,
    better: str | None,
    minimum: int,
    variants: list[str],
    control: str,
    usage: dict,
    samples: dict,
    alpha: float,
) -> dict:
    """One metric's row: per variant its value and interval, and each treatment's difference
    from the control with its verdict."""
    cells: dict[str, dict] = {}
    histograms: dict[str, list[int]] = {}
    for variant in variants:
        if key in QUANTILES:
            buckets = (usage.get(variant) or {}).get("buckets") or []
            histograms[variant] = buckets
            n = sum(buckets)
            # Two arms' intervals that do not overlap differ: each at α/2 keeps the pair at α.
            q = stats.quantile_interval(buckets, BOUNDS, QUANTILES[key], alpha / 2) if n else None
            cells[variant] = {
                "n": n,
                "value": _round(q[0], 1) if q else None,
                "interval": [_round(q[1], 1), _round(q[2], 1)] if q else None,
            }
        else:
            arm = _arm_data(key, usage.get(variant), samples.get(variant))
            interval = stats.mean_interval(arm, alpha)
            if interval:  # a rate stays within 0..1, a cost or a score above 0
                high = min(interval[1], 1.0) if key in BOUNDED else interval[1]
                interval = (max(interval[0], 0.0), high)
            cells[variant] = {
                "n": arm.n,
                "value": _round(arm.mean),
                "interval": _pair(interval),
            }
    for variant in variants:
        cell = cells[variant]
        if variant == control:
            cell["verdict"] = "control"
            continue
        if cell["n"] < minimum or cells[control]["n"] < minimum:
            cell["verdict"] = "not enough data"
            continue
        if key == "cost_per_request" and not all(
            (usage.get(v) or {}).get("cost") for v in (variant, control)
        ):
            # A model without a recorded price costs 0 here: no verdict on a missing price.
            cell["verdict"] = "no price recorded"
            continue
        if key in QUANTILES:
            mine, theirs = cell["interval"], cells[control]["interval"]
            if None in mine or None in theirs:
                cell["verdict"] = "no difference"
                continue
            cell["difference"] = _round(cell["value"] - cells[control]["value"], 1)
            low, high = mine[0] - theirs[1], mine[1] - theirs[0]
            cell["difference_interval"] = [_round(low, 1), _round(high, 1)]
        else:
            diff = stats.difference_interval(
                _arm_data(key, usage.get(control), samples.get(control)),
                _arm_data(key, usage.get(variant), samples.get(variant)),
                alpha,
            )
            low, high = diff
            cell["difference"] = _round(cell["value"] - cells[control]["value"])
            cell["difference_interval"] = _pair(diff)
        cell["verdict"] = _verdict(better, low, high)
    return {
        "metric": key,
        "label": label,
        "better": better,
        "minimum": minimum,
        "cells": cells,
    }


def _srm(split: list[dict], usage: dict, targeted: list[str]) -> dict:
    observed = [(usage.get(s["variant"]) or {}).get("requests", 0) for s in split]
    expected = [float(s["weight"]) for s in split]
    total = sum(observed)
    factor = stats.srm_bayes_factor(observed, expected) if total else 1.0
    weight = sum(expected)
    # Targeting rules serve some users a variant before the split is reached, so the split of
    # all traffic is not the rollout's and no mismatch can be told from it.
    checked = not targeted
    return {
        "checked": checked,
        "note": ""
        if checked
        else (
            f"targeting rules also serve {', '.join(targeted)}, so the traffic split is not "
            "the rollout's (and the users they serve are counted in those variants' figures "
            "too, not chosen at random)"
        ),
        "expected": {s["variant"]: round(float(s["weight"]) / weight, 4) for s in split},
        "observed": {
            s["variant"]: round(o / total, 4) if total else None
            for s, o in zip(split, observed, strict=True)
        },
        "bayes_factor": _round(min(factor, 1e12), 2),
        "mismatch": checked and factor >= SRM_THRESHOLD,
        "threshold": SRM_THRESHOLD,
    }


def _name(label: str) -> str:
    """A figure's label without its unit, for sentences: "Cost per request ($)" → "cost per
    request"."""
    return label.split(" (")[0].lower()


def _conclusion(figures: list[dict], treatments: list[str], control: str, srm: dict) -> dict:
    if srm["mismatch"]:
        return {
            "status": "srm",
            "winner": None,
            "summary": "Sample ratio mismatch: traffic is not split the way the rules say, so "
            "the figures below cannot be trusted. Find out why before deciding.",
        }
    outcome: dict[str, dict[str, list[str]]] = {}
    starved = []
    for variant in treatments:
        verdicts = {
            _name(f["label"]): f["cells"][variant].get("verdict") for f in figures if f["better"]
        }
        outcome[variant] = {
            "better": [m for m, v in verdicts.items() if v == "better"],
            "worse": [m for m, v in verdicts.items() if v == "worse"],
        }
        if verdicts.get("error rate") == "not enough data":
            starved.append(variant)
    if starved:
        return {
            "status": "collecting",
            "winner": None,
            "summary": f"Collecting: each variant needs at least {MIN_REQUESTS:,} requests "
            f"before any verdict ({', '.join(starved)} not yet).",
        }
    winners = [v for v in treatments if outcome[v]["better"] and not outcome[v]["worse"]]
    losers = [v for v in treatments if outcome[v]["worse"] and not outcome[v]["better"]]
    mixed = [v for v in treatments if outcome[v]["worse"] and outcome[v]["better"]]
    if len(winners) == 1 and not mixed:
        winner = winners[0]
        return {
            "status": "winner",
            "winner": winner,
            "summary": f"{winner} beats {control}: better on "
            f"{', '.join(outcome[winner]['better'])}, worse on nothing.",
        }
    if winners:
        return {
            "status": "inconclusive",
            "winner": None,
            "summary": f"{' and '.join(winners)} each beat {control}; compare them with each "
            "other before choosing.",
        }
    if mixed:
        v = mixed[0]
        return {
            "status": "mixed",
            "winner": None,
            "summary": f"{v} is better on {', '.join(outcome[v]['better'])} but worse on "
            f"{', '.join(outcome[v]['worse'])}: a trade-off for people to weigh.",
        }
    if losers and len(losers) == len(treatments):
        return {
            "status": "winner",
            "winner": control,
            "summary": f"Keep {control}: {', '.join(losers)} is worse on "
            f"{', '.join(outcome[losers[0]]['worse'])}.",
        }
    return {
        "status": "inconclusive",
        "winner": None,
        "summary": "No difference found yet. The intervals stay valid however often you "
        "look, so keep the experiment running or stop it as inconclusive.",
    }


def build(flag: Flag, environment: Environment, *, since: datetime | None = None) -> dict:
    """The report of `flag` in `environment` since the rules live there took effect (the
    split is constant over that time, which the mismatch check needs)."""
    version, split = live_split(flag, environment)
    head = version.head
    # A kill serves everyone the off variant: after a restore the split starts again.
    restarted = head.killed_at if head.killed_at and not head.killed else None
    started = since or max(filter(None, (version.created_at, restarted)))
    hour = _ceil_hour(started)
    variants = [s["variant"] for s in split]
    # What the environment serves is the definition its rules version carries, which may
    # differ from the flag's current one (edited since, not yet promoted).
    definition = definition_in(version.content, flag)
    off = definition["off_variant"]
    control = off if off in variants else variants[0]
    treatments = [v for v in variants if v != control]
    usage = _usage(flag, environment, hour)
    samples = _samples(flag, environment, hour)
    alpha = ALPHA / (DECISION_METRICS * max(len(treatments), 1))
    figures = [
        _figure(key, label, better, minimum, variants, control, usage, samples, alpha)
        for key, label, better, minimum, _ in METRICS
    ]
    targeted = sorted(
        {
            served
            for rule in version.content.get("rules") or []
            for served in [(rule.get("serve") or {}).get("variant")]
            + [r.get("variant") for r in (rule.get("serve") or {}).get("rollout") or []]
            if served
        }
    )
    srm = _srm(split, usage, targeted)
    refs = {v["key"]: v.get("ref") for v in definition["variants"]}
    return {
        "application": flag.application.key,
        "flag": flag.key,
        "kind": flag.kind,
        "environment": environment.key,
        "rules_version": version.number,
        "since": hour.isoformat(),
        "as_of": timezone.now().isoformat(timespec="seconds"),
        "control": control,
        "variants": [
            {
                "key": v,
                "weight": next(s["weight"] for s in split if s["variant"] == v),
                "ref": refs.get(v),
                "requests": (usage.get(v) or {}).get("requests", 0),
                "samples": (samples.get(v) or {}).get("samples", 0),
            }
            for v in variants
        ],
        "method": {
            "intervals": "always-valid (normal-mixture confidence sequences)",
            "unit": "request",  # not the user: heavy users' requests are alike (see the page)
            "alpha": ALPHA,
            "alpha_per_comparison": _round(alpha, 8),
            "comparisons": DECISION_METRICS * max(len(treatments), 1),
            "minimum": {"requests": MIN_REQUESTS, "rated": MIN_RATED, "judged": MIN_JUDGED},
            "planned_n": stats.PLANNED_N,
        },
        "figures": figures,
        "srm": srm,
        "conclusion": _conclusion(figures, treatments, control, srm),
    }


def experiments(application) -> list[tuple[Flag, Environment, list[dict], datetime]]:
    """Every (flag, environment) whose live rules split traffic over two or more variants:
    experiment flags and staged rollouts alike. One query, which reads only the live rules
    versions that are switched on and have a default rollout (an application's thousand
    plain flags are not loaded)."""
    live = FlagRulesVersion.objects.filter(
        head__flag__application=application,
        head__killed=False,
        number=F("head__latest_number"),
        content__enabled=True,
        content__default__has_key="rollout",
    ).select_related("head__flag", "head__environment")
    found = []
    for version in live:
        if split := serving_split(version.content):
            head = version.head
            found.append((head.flag, head.environment, split, version.created_at))
    found.sort(key=lambda f: (f[0].kind != FlagKind.EXPERIMENT, f[0].key, f[1].order))
    return found
