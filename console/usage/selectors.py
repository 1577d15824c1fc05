"""Cost dashboard reads — from daily rollups only, so they stay fast at tens of millions of
events (per-user spend is the one panel that reads raw events, over at most a week). The
filters are whole UTC days, so days are the finest grain the dashboard needs."""

from __future__ import annotations

import statistics
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from console.usage.models import LATENCY_BUCKETS_MS, Budget, UsageDaily, UsageEvent

BREAKDOWNS = {
    "model": "model",
    "prompt": "prompt_version",
    "feature": "feature",
    "environment": "environment_id",  # grouped without a join; labelled with keys after
}
# The latency KPI reads the last week of the range: percentiles of recent traffic, and a
# bounded scan whatever the range.
LATENCY_WINDOW = timedelta(days=7)
ANOMALY_FACTOR = 3
ANOMALY_MIN_SPEND = Decimal("1.00")


@dataclass(frozen=True)
class UsageFilters:
    since: date
    until: date
    environment: str = ""
    model: str = ""
    feature: str = ""
    prompt: str = ""
    source: str = ""  # "", "runtime", "eval"

    @classmethod
    def from_query(cls, params, today: date) -> tuple[UsageFilters, dict[str, str]]:
        errors: dict[str, str] = {}

        def day(name: str, default: date) -> date:
            raw = (params.get(name) or "").strip()
            if not raw:
                return default
            try:
                return date.fromisoformat(raw)
            except ValueError:
                errors[name] = f"{name}: {raw!r} is not a date (YYYY-MM-DD)"
                return default

        until = day("until", today)
        since = day("since", until - timedelta(days=29))
        if since > until:
            errors["since"] = "since: must not be after until"
            since = until - timedelta(days=29)
        if (until - since).days > 400:
            errors["since"] = "since: at most 400 days at a time"
            since = until - timedelta(days=400)
        source = params.get("source", "")
        return (
            cls(
                since=since,
                until=until,
                environment=(params.get("environment") or "").strip(),
                model=(params.get("model") or "").strip(),
                feature=(params.get("feature") or "").strip(),
                prompt=(params.get("prompt") or "").strip(),
                source=source if source in {"runtime", "eval"} else "",
            ),
            errors,
        )

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time.min, UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.until + timedelta(days=1), time.min, UTC)


def rollups(application, f: UsageFilters) -> QuerySet:
    qs = UsageDaily.objects.filter(application=application, day__gte=f.since, day__lte=f.until)
    if f.environment:
        qs = qs.filter(environment__key=f.environment)
    if f.model:
        qs = qs.filter(model=f.model)
    if f.feature:
        qs = qs.filter(feature=f.feature)
    if f.prompt:
        qs = qs.filter(prompt_version=f.prompt)
    if f.source:
        qs = qs.filter(source=f.source)
    return qs


@dataclass
class Dashboard:
    days: list[dict] = field(
        default_factory=list
    )  # day, cost, requests, errors, savings, eval_cost
    totals: dict = field(default_factory=dict)
    breakdowns: dict[str, list[dict]] = field(default_factory=dict)
    features: list[dict] = field(default_factory=list)
    anomalies: list[dict] = field(default_factory=list)
    budget_line: Decimal | None = None
    projection: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)


EVAL_LABEL = "eval"  # the environment breakdown's row for eval runs (which have none)
NO_ENVIRONMENT = "(no environment)"


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def rates(requests: int, errors: int, cache_hits: int, up: int, down: int) -> dict:
    """Error, cache hit and thumbs-down rates in percent (None when there is nothing to divide
    by). Thumbs down is a share of the rated responses (up + down), not of all requests."""
    rated = up + down
    return {
        "errors": errors,
        "error_pct": _pct(errors, requests),
        "cache_hits": cache_hits,
        "cache_hit_pct": _pct(cache_hits, requests),
        "rated": rated,
        "thumbs_down": down,
        "thumbs_down_pct": _pct(down, rated),
    }


def percentile_from_buckets(counts: list[int], p: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    rank = total * p / 100
    running = 0
    for n, count in enumerate(counts):
        running += count
        if running >= rank:
            return float(LATENCY_BUCKETS_MS[n]) if n < len(LATENCY_BUCKETS_MS) else float("inf")
    return None


def _sums() -> dict[str, Sum]:
    """The rollup columns every dashboard grouping adds up: spend, traffic and its signals."""
    return {
        name: Sum(name)
        for name in ("cost", "requests", "errors", "cache_hits", "thumbs_up", "thumbs_down")
    }


def _empty_day(day: date) -> dict:
    """A day of the dashboard before (or without) any rollup row."""
    zero = Decimal(0)
    return {
        "day": day,
        "cost": zero,
        "requests": 0,
        "errors": 0,
        "savings": zero,
        "eval_cost": zero,
        "shadow_cost": zero,
    }


def dashboard(application, f: UsageFilters, today: date) -> Dashboard:
    """Everything the cost dashboard shows, in a bounded number of queries."""
    qs = rollups(application, f)
    board = Dashboard()
    daily = (
        qs.values("day", "source", "shadow")
        .annotate(savings=Sum("cache_savings"), **_sums())
        .order_by("day")
    )
    signals = {"cache_hits": 0, "thumbs_up": 0, "thumbs_down": 0}
    by_day: dict[date, dict] = {}
    for row in daily:
        entry = by_day.setdefault(row["day"], _empty_day(row["day"]))
        entry["cost"] += row["cost"] or 0
        entry["requests"] += row["requests"] or 0
        entry["errors"] += row["errors"] or 0
        entry["savings"] += row["savings"] or 0
        for name in signals:
            signals[name] += row[name] or 0
        if row["source"] == "eval":
            entry["eval_cost"] += row["cost"] or 0
        if row["shadow"]:  # calls a shadow version made beside live ones: real spend too
            entry["shadow_cost"] += row["cost"] or 0
    day, board.days = f.since, []
    while day <= f.until:
        entry = by_day.get(day) or _empty_day(day)
        entry["cost_per_request"] = (
            (entry["cost"] / entry["requests"]) if entry["requests"] else None
        )
        board.days.append(entry)
        day += timedelta(days=1)
    total_cost = sum((d["cost"] for d in board.days), Decimal(0))
    total_requests = sum(d["requests"] for d in board.days)
    board.totals = {
        "cost": total_cost,
        "requests": total_requests,
        "errors": sum(d["errors"] for d in board.days),
        "savings": sum((d["savings"] for d in board.days), Decimal(0)),
        "eval_cost": sum((d["eval_cost"] for d in board.days), Decimal(0)),
        "shadow_cost": sum((d["shadow_cost"] for d in board.days), Decimal(0)),
        "cost_per_request": (total_cost / total_requests) if total_requests else None,
        "cost_per_1k": (total_cost * 1000 / total_requests) if total_requests else None,
    }
    board.totals.update(
        rates(
            total_requests,
            board.totals["errors"],
            signals["cache_hits"],
            signals["thumbs_up"],
            signals["thumbs_down"],
        )
    )
    for name, column in BREAKDOWNS.items():
        limit = 12
        # Evals have no environment: they are grouped apart by source and labelled "eval",
        # not shown as a nameless environment.
        group = (column, "source") if name == "environment" else (column,)
        rows = list(qs.values(*group).annotate(**_sums()).order_by("-cost")[:limit])
        if name == "environment":
            keys = dict(application.environments.values_list("pk", "key"))
            for r in rows:
                r[column] = keys.get(r[column], "") or (
                    EVAL_LABEL if r["source"] == "eval" else NO_ENVIRONMENT
                )
        board.breakdowns[name] = [
            {
                "label": r[column] or "(none)",
                "cost": r["cost"] or Decimal(0),
                "requests": r["requests"] or 0,
                **rates(
                    r["requests"] or 0,
                    r["errors"] or 0,
                    r["cache_hits"] or 0,
                    r["thumbs_up"] or 0,
                    r["thumbs_down"] or 0,
                ),
            }
            for r in rows
        ]
        if name == "feature":  # the same grouping feeds the most-expensive-features table
            board.features = [
                {
                    "feature": r["feature"] or "(none)",
                    "cost": r["cost"] or Decimal(0),
                    "requests": r["requests"] or 0,
                    "cost_per_request": (r["cost"] / r["requests"]) if r["requests"] else None,
                    "cost_per_1k": (r["cost"] * 1000 / r["requests"]) if r["requests"] else None,
                    "share": float((r["cost"] or 0) / total_cost) if total_cost else 0.0,
                }
                for r in rows[:10]
            ]
    buckets = latency_buckets(qs.filter(day__gt=f.until - LATENCY_WINDOW))
    board.latency = {
        "p50": percentile_from_buckets(buckets, 50),
        "p95": percentile_from_buckets(buckets, 95),
    }
    board.anomalies = anomalies(board.days)
    board.budget_line, board.projection = _budget_and_projection(application, f, board.days, today)
    return board


def latency_buckets(qs: QuerySet) -> list[int]:
    """Merged latency histogram of the rollup rows in `qs`. On PostgreSQL the arrays are summed
    in the database (one pass over the rows, no per-row transfer); elsewhere in Python."""
    size = len(LATENCY_BUCKETS_MS) + 1
    buckets = [0] * size
    if connection.vendor == "postgresql":
        inner, params = qs.values("id").query.sql_with_params()
        table = qs.model._meta.db_table
        sql = (
            f"SELECT e.n - 1, SUM(e.v::bigint) FROM {table} h, "
            "jsonb_array_elements_text(h.latency_buckets) WITH ORDINALITY AS e(v, n) "
            f"WHERE h.id IN ({inner}) GROUP BY e.n"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for index, total in cursor.fetchall():
                if 0 <= index < size:
                    buckets[index] = int(total)
        return buckets
    for row in qs.values_list("latency_buckets", flat=True).iterator(chunk_size=5000):
        for n, count in enumerate(row or []):
            buckets[n] += count
    return buckets


def anomalies(days: list[dict], window: int = 7) -> list[dict]:
    """Days whose spend or cost per request is far above the median of the days before them."""
    found = []
    for n, day in enumerate(days):
        previous = days[max(0, n - window) : n]
        if len(previous) < 3:
            continue
        baseline = statistics.median([float(d["cost"]) for d in previous])
        if (
            day["cost"] >= ANOMALY_MIN_SPEND
            and baseline > 0
            and float(day["cost"]) > ANOMALY_FACTOR * baseline
        ):
            found.append(
                {
                    "day": day["day"],
                    "kind": "spend",
                    "value": day["cost"],
                    "baseline": baseline,
                    "factor": float(day["cost"]) / baseline,
                }
            )
            continue
        cpr = [float(d["cost_per_request"]) for d in previous if d["cost_per_request"]]
        if day["cost_per_request"] and len(cpr) >= 3:
            base = statistics.median(cpr)
            if base > 0 and float(day["cost_per_request"]) > ANOMALY_FACTOR * base:
                found.append(
                    {
                        "day": day["day"],
                        "kind": "cost per request",
                        "value": day["cost_per_request"],
                        "baseline": base,
                        "factor": float(day["cost_per_request"]) / base,
                    }
                )
    return found


def _budget_and_projection(application, f: UsageFilters, days: list[dict], today: date):
    budget = (
        Budget.objects.filter(application=application, feature="")
        .filter(environment__isnull=True)
        .order_by("period")
        .first()
    )
    month_days = monthrange(today.year, today.month)[1]
    line = None
    if budget is not None:
        line = budget.amount if budget.period == Budget.Period.DAILY else budget.amount / month_days
    month_start = today.replace(day=1)
    month_to_date = sum(
        (d["cost"] for d in days if d["day"] >= month_start and d["day"] <= today), Decimal(0)
    )
    recent = [d["cost"] for d in days if today - timedelta(days=7) < d["day"] <= today]
    daily_rate = (sum(recent, Decimal(0)) / len(recent)) if recent else Decimal(0)
    remaining = month_days - today.day
    projection = {
        "month_to_date": month_to_date,
        "daily_rate": daily_rate,
        "month_end": month_to_date + daily_rate * remaining,
        "month_budget": (
            budget.amount
            if budget and budget.period == Budget.Period.MONTHLY
            else (budget.amount * month_days if budget else None)
        ),
        "covers_month": f.since <= month_start,
    }
    return line, projection


def top_spenders(application, f: UsageFilters, limit: int = 10) -> list[dict]:
    """Per-user spend (anonymised ids) over at most the last 7 days of the range."""
    start = max(f.start, f.end - timedelta(days=7))
    rows = (
        UsageEvent.objects.filter(application=application, at__gte=start, at__lt=f.end)
        .exclude(user_hash="")
        .values("user_hash")
        .annotate(cost=Sum("cost"))
        .order_by("-cost")[:limit]
    )
    return [{"user": r["user_hash"][:12], "cost": r["cost"]} for r in rows]


def fallbacks(application, f: UsageFilters, limit: int = 20) -> dict:
    """When and how often fallbacks fired (production calls that report `fallback_from`), over
    at most the last 7 days of the range: per day, and per from → to pair with the last time.
    Reads the raw events through the partial index of fallbacks only."""
    start = max(f.start, f.end - timedelta(days=7))
    events = UsageEvent.objects.filter(
        application=application, at__gte=start, at__lt=f.end
    ).exclude(fallback_from="")
    if f.environment:
        events = events.filter(environment__key=f.environment)
    # One query: per day and pair (at most 7 days × a few pairs), summed both ways here.
    rows = (
        events.annotate(day=TruncDate("at", tzinfo=UTC))
        .values("day", "fallback_from", "model_config", "model", "environment__key")
        .annotate(n=Count("id"), last=Max("at"), errors=Count("id", filter=~Q(status="ok")))
        .order_by()
    )
    pairs: dict[tuple, dict] = {}
    days: dict[date, int] = {}
    for row in rows:
        days[row["day"]] = days.get(row["day"], 0) + row["n"]
        key = (row["fallback_from"], row["model_config"], row["model"], row["environment__key"])
        pair = pairs.setdefault(key, {**row, "n": 0, "errors": 0})
        pair["n"] += row["n"]
        pair["errors"] += row["errors"]
        pair["last"] = max(pair["last"], row["last"])
    top = sorted(pairs.values(), key=lambda p: -p["n"])[:limit]
    return {
        "since": start,
        "pairs": top,
        "days": [{"day": day, "n": n} for day, n in sorted(days.items())],
    }


def filter_options(application, since: datetime | None = None) -> dict[str, list[str]]:
    """Choices for the filters: models and features seen in the last 90 days (a bounded scan)."""
    since = since or datetime.now(UTC) - timedelta(days=90)
    recent = UsageDaily.objects.filter(application=application, day__gte=since.date())
    return {
        "models": sorted(set(recent.values_list("model", flat=True).distinct()[:50])),
        "features": sorted(
            set(recent.exclude(feature="").values_list("feature", flat=True).distinct()[:50])
        ),
        "environments": list(
            application.environments.order_by("order").values_list("key", flat=True)
        ),
    }
