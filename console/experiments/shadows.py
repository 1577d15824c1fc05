"""Shadow comparison: what a shadow version would have done against what production served.

A shadow deployment tells clients to call a version alongside the live one and report the call
as a usage event with `shadow_of` (the live call's event id) and, optionally, its answer. Each
shadow call is paired with its live call (same application and environment, live.event_id =
shadow.shadow_of), so the two arms saw the very same requests. Per deployment, over its last
WINDOW (since it started, at most seven days, until it ended):

- latency p50/p95, cost per request and error rate of live and shadow over the pairs, with
  always-valid intervals (console.experiments.stats); differences of error rate and cost are
  paired (the mean of each pair's difference), those of latency quantiles compare the two
  arms' intervals;
- answer agreement: of the shadow answers judged against their live answer (the judged share,
  console.samples.services), the mean agreement score and the share agreeing (≥ 0.5).

Two queries whatever the number of deployments or events: one SQL aggregate over the pairs
(a join of the usage table with itself, grouped per deployment), one over the shadow answers.
The comparison is a plain dict: the pages render it and "Request promotion" stores it with the
request as its evidence (`{"kind": "shadow", ...}`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.db import connection
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    F,
    FloatField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.utils import timezone

from console.experiments import stats
from console.registry.models import Application
from console.releases.models import ShadowDeployment
from console.samples.models import AGREES_FROM, ShadowAnswer
from console.usage.models import LATENCY_BUCKETS_MS, UsageEvent

# The error rate of the verdicts, however often the page is read: split evenly (Bonferroni)
# over the four live-versus-shadow comparisons that decide (error rate, p50, p95, cost).
ALPHA = 0.05
DECIDING = 4
WINDOW = timedelta(days=7)
MIN_PAIRS = 200  # fewer pairs and a figure gets no verdict
MIN_JUDGED = 50  # fewer judged answers and agreement gets no reading
AGREES_WELL = 0.8  # the share of judged answers agreeing for "no worse than live"
BOUNDS = [float(b) for b in LATENCY_BUCKETS_MS]
QUANTILES = {"latency_p50": 0.5, "latency_p95": 0.95}
LOWER = "lower"
# (key, label, in a sentence) of the live-versus-shadow figures; lower is better for each.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("error_rate", "Error rate", "error rate"),
    ("latency_p50", "Latency p50 (ms)", "median latency"),
    ("latency_p95", "Latency p95 (ms)", "p95 latency"),
    ("cost_per_request", "Cost per request ($)", "cost per request"),
)
WORDS = {key: words for key, _, words in FIGURES}
SHOWN = 50  # deployments on the list page: active ones first, then the latest ended


class Cell(TypedDict, total=False):
    n: int
    value: float | None
    interval: list[float | None] | None
    difference: float | None  # shadow − live (the shadow's cell only)
    difference_interval: list[float | None] | None
    verdict: str  # "control" (live), "better", "worse", "no difference", "not enough data"


class Figure(TypedDict):
    metric: str
    label: str
    better: str
    minimum: int
    cells: dict[str, Cell]  # "live" and "shadow"


class Agreement(TypedDict):
    answers: int  # shadow answers reported in the window
    judged: int
    waiting: int  # in the judged share, waiting for the judge (or for the live sample)
    unmatched: int  # in the judged share, but the live answer was never sampled
    capped: int
    failed: int
    mean: float | None
    mean_interval: list[float | None] | None
    agreeing: int
    share: float | None
    share_interval: list[float | None] | None
    enough: bool  # at least MIN_JUDGED judged


class Comparison(TypedDict):
    kind: str  # "shadow": the promotion request's online evidence
    shadow: int
    environment: str
    version: str  # "key@N" of the shadow
    version_kind: str  # "prompt" or "model_config"
    live_version: str  # what answered the live calls ("key@N"), "" when several did
    active: bool
    since: str
    until: str
    as_of: str
    pairs: int
    figures: list[Figure]
    agreement: Agreement
    method: dict[str, Any]
    status: str  # "collecting", "worse" or "no worse"
    summary: str


# ---------------------------------------------------------------- deployments


def version_label(shadow: ShadowDeployment) -> str:
    """The shadow's version as usage events and samples name it: "key@N"."""
    version = shadow.version
    return f"{version.head.key}@{version.number}"


def label_column(shadow: ShadowDeployment) -> str:
    """The usage event (and shadow answer) column that names the shadow's version."""
    return "prompt_version" if shadow.kind == "prompt" else "model_config"


def deployments(application: Application) -> QuerySet[ShadowDeployment]:
    """The application's shadow deployments, running ones first, then the latest ended."""
    return (
        ShadowDeployment.objects.filter(environment__application=application)
        .select_related("environment", "prompt_version__head", "model_version__head", "created_by")
        .order_by("-active", "-created_at", "-pk")
    )


def window(shadow: ShadowDeployment, now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) compared: since the shadow started, at most WINDOW, until it ended."""
    end = shadow.ended_at or now or timezone.now()
    return max(shadow.created_at, end - WINDOW), end


# ---------------------------------------------------------------- the two queries


def _buckets(alias: str) -> list[str]:
    """SQL counting `alias`'s latencies per histogram bucket (LATENCY_BUCKETS_MS, the last
    bucket open), as the usage rollups count them."""
    parts, lower = [], None
    for upper in LATENCY_BUCKETS_MS:
        condition = f"{alias}.latency_ms < {upper}"
        if lower is not None:
            condition = f"{alias}.latency_ms >= {lower} AND {condition}"
        parts.append(f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)")
        lower = upper
    parts.append(f"SUM(CASE WHEN {alias}.latency_ms >= {lower} THEN 1 ELSE 0 END)")
    return parts


_SUMS = (
    "pairs",
    "s_errors",
    "l_errors",
    "discordant",
    "s_cost",
    "l_cost",
    "s_cost_sq",
    "l_cost_sq",
    "d_cost_sq",
    "l_prompt_min",
    "l_prompt_max",
    "l_model_min",
    "l_model_max",
)


def _live_join(table: str) -> str:
    """Each shadow call's live call, by the unique (application, environment, event_id)
    index. On PostgreSQL a LATERAL lookup, so the planner probes that index once per shadow
    call whatever its statistics say (a plain join, planned on stale statistics, may scan the
    environment's events once per shadow call instead)."""
    condition = (
        "l.application_id = %s AND COALESCE(l.environment_id, 0) = s.environment_id "
        "AND l.event_id = s.shadow_of AND l.shadow_of = ''"
    )
    if connection.vendor == "postgresql":
        columns = "status, cost, latency_ms, prompt_version, model_config"
        return f"CROSS JOIN LATERAL (SELECT {columns} FROM {table} l WHERE {condition} LIMIT 1) l"
    return f"JOIN {table} l ON {condition}"


def _paired_usage(items: Sequence[tuple[ShadowDeployment, datetime, datetime]]) -> dict[int, dict]:
    """Per deployment, sums over its pairs (shadow call, live call): one SQL statement. The
    shadow calls come from the partial index on shadow calls; each finds its live call through
    the unique (application, environment, event_id) index."""
    if not items:
        return {}
    quote = connection.ops.quote_name
    table = quote(UsageEvent._meta.db_table)
    moment = connection.ops.adapt_datetimefield_value
    whens, params = [], []
    for shadow, start, end in items:
        column = quote(label_column(shadow))
        whens.append(f"WHEN environment_id = %s AND {column} = %s AND at >= %s AND at < %s THEN %s")
        params += [shadow.environment_id, version_label(shadow), moment(start), moment(end)]
        params.append(shadow.pk)
    environments = sorted({shadow.environment_id for shadow, _, _ in items})
    application_id = items[0][0].environment.application_id
    error = "CASE WHEN {a}.status <> 'ok' THEN 1 ELSE 0 END"
    sql = f"""
        SELECT s.dep, COUNT(*),
            SUM({error.format(a="s")}), SUM({error.format(a="l")}),
            SUM(CASE WHEN ({error.format(a="s")}) <> ({error.format(a="l")}) THEN 1 ELSE 0 END),
            SUM(s.cost), SUM(l.cost), SUM(s.cost * s.cost), SUM(l.cost * l.cost),
            SUM((s.cost - l.cost) * (s.cost - l.cost)),
            MIN(l.prompt_version), MAX(l.prompt_version),
            MIN(l.model_config), MAX(l.model_config),
            {", ".join(_buckets("s"))},
            {", ".join(_buckets("l"))}
        FROM (
            SELECT CASE {" ".join(whens)} END AS dep,
                environment_id, shadow_of, status, cost, latency_ms
            FROM {table}
            WHERE application_id = %s AND shadow_of <> ''
                AND environment_id IN ({", ".join(["%s"] * len(environments))})
                AND at >= %s AND at < %s
        ) s
        {_live_join(table)}
        WHERE s.dep IS NOT NULL
        GROUP BY s.dep
    """  # Identifiers and numbers are ours; every value is a parameter.
    params += [application_id, *environments]
    params += [moment(min(start for _, start, _ in items)), moment(max(e for _, _, e in items))]
    params.append(application_id)
    found: dict[int, dict] = {}
    buckets = len(LATENCY_BUCKETS_MS) + 1
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            sums = dict(zip(_SUMS, row[1 : 1 + len(_SUMS)], strict=True))
            rest = row[1 + len(_SUMS) :]
            sums["s_buckets"] = [int(c or 0) for c in rest[:buckets]]
            sums["l_buckets"] = [int(c or 0) for c in rest[buckets:]]
            found[int(row[0])] = sums
    return found


def _answers(items: Sequence[tuple[ShadowDeployment, datetime, datetime]]) -> dict[int, dict]:
    """Per deployment, counts and sums over its shadow answers: one query."""
    if not items:
        return {}
    whens = [
        When(
            Q(environment_id=shadow.environment_id, at__gte=start, at__lt=end)
            & Q(**{label_column(shadow): version_label(shadow)}),
            then=Value(shadow.pk),
        )
        for shadow, start, end in items
    ]
    judged = Q(judge_state=ShadowAnswer.Judge.DONE)
    rows = (
        ShadowAnswer.objects.filter(
            application_id=items[0][0].environment.application_id,
            environment_id__in={shadow.environment_id for shadow, _, _ in items},
            at__gte=min(start for _, start, _ in items),
            at__lt=max(end for _, _, end in items),
        )
        .annotate(dep=Case(*whens, default=None, output_field=BigIntegerField()))
        .filter(dep__isnull=False)
        .values("dep")
        .annotate(
            answers=Count("id"),
            judged=Count("id", filter=judged),
            total=Sum("agreement", filter=judged),
            squares=Sum(F("agreement") * F("agreement"), filter=judged, output_field=FloatField()),
            agreeing=Count("id", filter=judged & Q(agreement__gte=AGREES_FROM)),
            waiting=Count("id", filter=Q(judge_state=ShadowAnswer.Judge.PENDING)),
            unmatched=Count("id", filter=Q(judge_state=ShadowAnswer.Judge.UNMATCHED)),
            capped=Count("id", filter=Q(judge_state=ShadowAnswer.Judge.CAPPED)),
            failed=Count("id", filter=Q(judge_state=ShadowAnswer.Judge.FAILED)),
        )
        .order_by()
    )
    return {row["dep"]: row for row in rows}


# ---------------------------------------------------------------- figures


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _pair(
    interval: tuple[float, float] | None, low: float | None = None, high: float | None = None
) -> list[float | None] | None:
    """An interval as a JSON list, clipped to [low, high] when the value cannot leave it."""
    if interval is None:
        return None
    a, b = interval
    if low is not None:
        a = max(a, low)
    if high is not None:
        b = min(b, high)
    return [_round(a), _round(b)]


def _verdict(low: float, high: float) -> str:
    """Shadow − live: lower is better for every figure compared."""
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    return "no difference"


def _arms(metric: str, u: dict) -> tuple[stats.Arm, stats.Arm, stats.Arm]:
    """(live, shadow, paired shadow − live) for a mean figure."""
    n = u.get("pairs") or 0
    if metric == "error_rate":
        s_err, l_err = int(u.get("s_errors") or 0), int(u.get("l_errors") or 0)
        # Each pair's difference is −1, 0 or 1: its square is 1 when the two disagree.
        paired = stats.from_sums(n, s_err - l_err, int(u.get("discordant") or 0))
        return stats.bernoulli(l_err, n), stats.bernoulli(s_err, n), paired
    s_cost, l_cost = float(u.get("s_cost") or 0), float(u.get("l_cost") or 0)
    return (
        stats.from_sums(n, l_cost, float(u.get("l_cost_sq") or 0)),
        stats.from_sums(n, s_cost, float(u.get("s_cost_sq") or 0)),
        stats.from_sums(n, s_cost - l_cost, float(u.get("d_cost_sq") or 0)),
    )


def _figure(metric: str, label: str, u: dict, alpha: float) -> Figure:
    pairs = u.get("pairs") or 0
    if metric in QUANTILES:
        cells: dict[str, Cell] = {}
        intervals = {}
        for arm in ("live", "shadow"):
            buckets = u.get(f"{arm[0]}_buckets") or []
            n = sum(buckets)
            # Two arms' intervals that do not overlap differ: each at α/2 keeps the pair at α.
            q = (
                stats.quantile_interval(buckets, BOUNDS, QUANTILES[metric], alpha / 2)
                if n
                else None
            )
            intervals[arm] = q
            cells[arm] = {
                "n": n,
                "value": _round(q[0], 1) if q else None,
                "interval": [_round(q[1], 1), _round(q[2], 1)] if q else None,
            }
        cells["live"]["verdict"] = "control"
        live, shadow = intervals["live"], intervals["shadow"]
        if min(cells["live"]["n"], cells["shadow"]["n"]) < MIN_PAIRS or None in (live, shadow):
            cells["shadow"]["verdict"] = "not enough data"
        elif None in (*live, *shadow):
            cells["shadow"]["verdict"] = "no difference"
        else:
            low, high = shadow[1] - live[2], shadow[2] - live[1]
            cells["shadow"]["difference"] = _round(shadow[0] - live[0], 1)
            cells["shadow"]["difference_interval"] = [_round(low, 1), _round(high, 1)]
            cells["shadow"]["verdict"] = _verdict(low, high)
    else:
        live_arm, shadow_arm, paired = _arms(metric, u)
        bounds = (0.0, 1.0) if metric == "error_rate" else (0.0, None)
        cells = {
            arm: {
                "n": data.n,
                "value": _round(data.mean),
                "interval": _pair(stats.mean_interval(data, alpha), *bounds),
            }
            for arm, data in (("live", live_arm), ("shadow", shadow_arm))
        }
        cells["live"]["verdict"] = "control"
        if pairs < MIN_PAIRS:
            cells["shadow"]["verdict"] = "not enough data"
        else:
            low, high = stats.mean_interval(paired, alpha) or (0.0, 0.0)
            cells["shadow"]["difference"] = _round(paired.mean)
            cells["shadow"]["difference_interval"] = [_round(low), _round(high)]
            cells["shadow"]["verdict"] = _verdict(low, high)
    return {"metric": metric, "label": label, "better": LOWER, "minimum": MIN_PAIRS, "cells": cells}


def _agreement(a: dict | None) -> Agreement:
    a = a or {}
    judged = a.get("judged") or 0
    agreeing = a.get("agreeing") or 0
    mean = stats.from_sums(judged, float(a.get("total") or 0), float(a.get("squares") or 0))
    share = stats.bernoulli(agreeing, judged)
    return {
        "answers": a.get("answers") or 0,
        "judged": judged,
        "waiting": a.get("waiting") or 0,
        "unmatched": a.get("unmatched") or 0,
        "capped": a.get("capped") or 0,
        "failed": a.get("failed") or 0,
        "mean": _round(mean.mean, 4),
        "mean_interval": _pair(stats.mean_interval(mean, ALPHA), 0.0, 1.0),
        "agreeing": agreeing,
        "share": _round(share.mean, 4),
        "share_interval": _pair(stats.mean_interval(share, ALPHA), 0.0, 1.0),
        "enough": judged >= MIN_JUDGED,
    }


def _live_version(shadow: ShadowDeployment, u: dict) -> str:
    low, high = (u.get("l_prompt_min"), u.get("l_prompt_max"))
    if shadow.kind != "prompt":
        low, high = (u.get("l_model_min"), u.get("l_model_max"))
    return low if low and low == high else ""


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _status(pairs: int, figures: list[Figure], agreement: Agreement) -> str:
    """Decided on the intervals, not the point estimates: "worse" when a figure is worse than
    live or the share agreeing is surely under AGREES_FROM (its interval's top is); "no worse"
    when every figure has a verdict, none worse, and the share agreeing is surely at least
    AGREES_WELL (its interval's bottom is); "collecting" otherwise."""
    verdicts = [f["cells"]["shadow"].get("verdict") for f in figures]
    low, high = agreement["share_interval"] or (None, None)
    if "worse" in verdicts or (agreement["enough"] and high is not None and high < AGREES_FROM):
        return "worse"
    if (
        pairs >= MIN_PAIRS
        and "not enough data" not in verdicts
        and agreement["enough"]
        and low is not None
        and low >= AGREES_WELL
    ):
        return "no worse"
    return "collecting"


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _summary(pairs: int, figures: list[Figure], agreement: Agreement) -> str:
    """One sentence an approver can read: what differs, and how often the answers agree."""
    if not pairs:
        said = "No shadow call has been paired with its live call yet"
    elif pairs < MIN_PAIRS:
        said = f"{pairs:,} paired calls so far; figures get a verdict from {MIN_PAIRS:,}"
    else:
        verdicts = {WORDS[f["metric"]]: f["cells"]["shadow"].get("verdict") for f in figures}
        better = [k for k, v in verdicts.items() if v == "better"]
        worse = [k for k, v in verdicts.items() if v == "worse"]
        parts = []
        if worse:
            parts.append(f"worse on {_and(worse)}")
        if better:
            parts.append(f"better on {_and(better)}")
        said = f"Over {pairs:,} paired calls the shadow is " + (
            ", but ".join(parts) if parts else "no different from live on errors, latency or cost"
        )
    if agreement["judged"]:
        low, high = agreement["share_interval"] or (None, None)
        said += (
            f"; it agrees with the live answer on {_percent(agreement['share'])} of "
            f"{agreement['judged']:,} judged answers ({_percent(low)}–{_percent(high)})"
        )
        if not agreement["enough"]:
            said += f", too few to read before {MIN_JUDGED}"
    else:
        said += "; no answer has been judged against its live answer yet"
    return said + "."


def compare(
    shadows: Iterable[ShadowDeployment], now: datetime | None = None
) -> dict[int, Comparison]:
    """The comparison of each deployment (select_related as `deployments` does), by pk: two
    queries for all of them."""
    now = now or timezone.now()
    items = [(shadow, *window(shadow, now)) for shadow in shadows]
    usage = _paired_usage(items)
    answers = _answers(items)
    alpha = ALPHA / DECIDING
    found: dict[int, Comparison] = {}
    for shadow, start, end in items:
        u = usage.get(shadow.pk) or {}
        pairs = int(u.get("pairs") or 0)
        figures = [_figure(metric, label, u, alpha) for metric, label, _ in FIGURES]
        agreement = _agreement(answers.get(shadow.pk))
        found[shadow.pk] = {
            "kind": "shadow",
            "shadow": shadow.pk,
            "environment": shadow.environment.key,
            "version": version_label(shadow),
            "version_kind": shadow.kind,
            "live_version": _live_version(shadow, u),
            "active": shadow.active,
            "since": start.isoformat(timespec="seconds"),
            "until": end.isoformat(timespec="seconds"),
            "as_of": now.isoformat(timespec="seconds"),
            "pairs": pairs,
            "figures": figures,
            "agreement": agreement,
            "method": {
                "intervals": "always-valid (normal-mixture confidence sequences)",
                "alpha": ALPHA,
                "alpha_per_comparison": _round(alpha, 8),
                "comparisons": DECIDING,
                "paired": "error rate and cost: mean of each pair's shadow − live",
                "minimum": {"pairs": MIN_PAIRS, "judged": MIN_JUDGED},
                "agrees_from": AGREES_FROM,
                "agrees_well": AGREES_WELL,
                "window_days": WINDOW.days,
            },
            "status": _status(pairs, figures, agreement),
            "summary": _summary(pairs, figures, agreement),
        }
    return found


def comparison(shadow: ShadowDeployment, now: datetime | None = None) -> Comparison:
    """One deployment's comparison (two queries)."""
    return compare([shadow], now)[shadow.pk]
