"""Monitor sweeps: each enabled monitor compares its metric over the last window with the
baseline before it, and raises, escalates or holds back an alert (dedup: one unresolved alert
per monitor; cooldown: no notification sooner than `cooldown_minutes` after the last).

Where the readings come from: judged scores, refusals, thumbs down and input lengths from the
samples, read as console.samples.rollups assembles them (whole hours from the hourly sample
rollups, the open hour and whatever is not folded yet from the raw samples: the same figures,
a day of baseline in a few dozen rows); error rate, p95 latency, tokens and cost per request
from the hourly usage rollups (so those monitors use whole hours). Monitors of the same
environment, version and window share one reading per sweep. Input drift is the population
stability index of the input length distribution, PSI = Σ (pᵢ − qᵢ)·ln(pᵢ/qᵢ) over
models.INPUT_BINS, each share floored at PSI_FLOOR so an empty bin does not make it infinite."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from console.audit import services as audit
from console.audit.services import SYSTEM
from console.notifications.services import notify
from console.samples import rollups
from console.samples.models import Monitor, MonitorAlert
from console.usage.models import LATENCY_BUCKETS_MS, UsageEvent, UsageHourly
from console.usage.selectors import latency_buckets, percentile_from_buckets

log = logging.getLogger(__name__)
M = Monitor.Metric
HIGHER_IS_WORSE = {
    M.HALLUCINATION, M.REFUSAL, M.THUMBS_DOWN, M.ERROR, M.LATENCY, M.TOKENS, M.COST, M.DRIFT,
}  # fmt: skip
FROM_USAGE = {M.ERROR, M.LATENCY, M.TOKENS, M.COST}
PSI_FLOOR = 1e-4
DEFAULTS = {"warn": 10.0, "critical": 15.0}
DRIFT_DEFAULTS = {"warn": 0.1, "critical": 0.25}


@dataclass(frozen=True)
class Reading:
    value: float | None
    n: int  # what the value rests on: judged samples, rated samples, requests, …
    histogram: tuple[int, ...] = ()


@dataclass(frozen=True)
class Check:
    value: float | None
    baseline: float | None
    change: float | None  # percent (PSI for drift), signed so that positive is worse
    n: int
    baseline_n: int
    severity: str | None
    why: str

    def as_dict(self, at: datetime) -> dict:
        return {
            "at": at.isoformat(), "value": self.value, "baseline": self.baseline,
            "change": self.change, "n": self.n, "baseline_n": self.baseline_n,
            "severity": self.severity, "why": self.why,
        }  # fmt: skip


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def read(
    monitor: Monitor,
    start: datetime,
    end: datetime,
    *,
    memo: dict | None = None,
    raw: bool = False,
) -> Reading:
    """The monitor's metric over [start, end). `memo` shares the samples' tallies between
    monitors of one sweep; `raw` reads every sample from the raw table (the reference the
    rollups must agree with)."""
    metric = monitor.metric
    if metric in FROM_USAGE:
        return _read_usage(monitor, start, end)
    key = (monitor.application_id, monitor.environment_id, monitor.version, start, end, raw)
    tally = memo.get(key) if memo is not None else None
    if tally is None:
        tally = rollups.tally(
            application_id=monitor.application_id,
            environment_id=monitor.environment_id,
            version=monitor.version,
            start=start,
            end=end,
            raw=raw,
        )
        if memo is not None:
            memo[key] = tally
    return reading(metric, tally)


def reading(metric: str, tally: rollups.Tally) -> Reading:
    """A sample metric from the counts and sums of its samples."""
    if metric == M.DRIFT:
        return Reading(None, tally.samples, tally.input_bins)
    if metric == M.FAITHFULNESS:
        n = tally.faithfulness_n
        return Reading(tally.faithfulness_sum / n if n else None, n)
    if metric == M.RELEVANCE:
        n = tally.relevance_n
        return Reading(tally.relevance_sum / n if n else None, n)
    if metric == M.HALLUCINATION:
        return Reading(_ratio(tally.hallucinated, tally.faithfulness_n), tally.faithfulness_n)
    if metric == M.REFUSAL:
        return Reading(_ratio(tally.refused, tally.samples), tally.samples)
    # thumbs down, of the samples rated
    return Reading(_ratio(tally.thumbs_down, tally.rated), tally.rated)


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _read_usage(monitor: Monitor, start: datetime, end: datetime) -> Reading:
    rows = UsageHourly.objects.filter(
        application_id=monitor.application_id,
        environment_id=monitor.environment_id,
        source=UsageEvent.Source.RUNTIME,
        shadow=False,  # shadow calls are never served: they say nothing of what users get
        hour__gte=_hour(start),
        hour__lt=_hour(end),
    )
    if monitor.version:
        rows = rows.filter(prompt_version=monitor.version)
    sums = rows.aggregate(
        requests=Sum("requests"), errors=Sum("errors"), cost=Sum("cost"),
        tokens_in=Sum("input_tokens"), tokens_out=Sum("output_tokens"),
    )  # fmt: skip
    requests = sums["requests"] or 0
    if monitor.metric == M.ERROR:
        return Reading(_ratio(sums["errors"] or 0, requests), requests)
    if monitor.metric == M.TOKENS:
        tokens = (sums["tokens_in"] or 0) + (sums["tokens_out"] or 0)
        return Reading(_ratio(tokens, requests), requests)
    if monitor.metric == M.COST:
        return Reading(float(sums["cost"]) / requests if requests else None, requests)
    buckets = latency_buckets(rows)
    timed = sum(buckets)
    p95 = percentile_from_buckets(buckets, 95) if timed else None
    if p95 is not None and math.isinf(p95):  # in the open-ended bucket: at least its start
        p95 = float(LATENCY_BUCKETS_MS[-1])
    return Reading(p95, timed)


def psi(current: tuple[int, ...], baseline: tuple[int, ...]) -> float:
    """Population stability index of two histograms over the same bins."""
    total_now, total_then = sum(current) or 1, sum(baseline) or 1
    value = 0.0
    for now, then in zip(current, baseline, strict=True):
        p = max(now / total_now, PSI_FLOOR)
        q = max(then / total_then, PSI_FLOOR)
        value += (p - q) * math.log(p / q)
    return value


def evaluate(
    monitor: Monitor, now: datetime, *, memo: dict | None = None, raw: bool = False
) -> Check:
    window = timedelta(minutes=monitor.window_minutes)
    baseline_span = timedelta(minutes=monitor.baseline_minutes)
    current = read(monitor, now - window, now, memo=memo, raw=raw)
    before = read(monitor, now - window - baseline_span, now - window, memo=memo, raw=raw)
    if current.n < monitor.min_samples or before.n < monitor.min_samples:
        return Check(
            current.value, before.value, None, current.n, before.n, None,
            f"not enough data: {current.n} in the window and {before.n} in the baseline "
            f"(at least {monitor.min_samples} each)",
        )  # fmt: skip
    if monitor.metric == M.DRIFT:
        change = round(psi(current.histogram, before.histogram), 4)
        value, baseline = change, 0.0
    else:
        value, baseline = current.value, before.value
        if value is None or baseline is None:
            return Check(value, baseline, None, current.n, before.n, None, "nothing to compare")
        if baseline == 0:
            change = 0.0 if value == 0 else math.copysign(1000.0, value)
        else:
            change = (value - baseline) / abs(baseline) * 100
        if monitor.metric not in HIGHER_IS_WORSE:
            change = -change
        change = round(change, 2)
    severity = (
        MonitorAlert.Severity.CRITICAL
        if change >= monitor.critical
        else MonitorAlert.Severity.WARNING
        if change >= monitor.warn
        else None
    )
    unit = "" if monitor.metric == M.DRIFT else "%"
    why = (
        f"{'worse' if change > 0 else 'better'} by {abs(change)}{unit}"
        if monitor.metric != M.DRIFT
        else f"PSI {change}"
    )
    return Check(value, baseline, change, current.n, before.n, severity, why)


def sweep(now: datetime | None = None, only: list[int] | None = None) -> dict:
    """Evaluate every enabled monitor (or those whose ids are `only`) once; returns what
    happened, by outcome. One monitor that cannot be evaluated is logged and skipped, never
    the rest."""
    now = now or timezone.now()
    outcome = {"checked": 0, "raised": 0, "escalated": 0, "held": 0, "updated": 0, "failed": 0}
    monitors = Monitor.objects.filter(enabled=True).select_related("application", "environment")
    if only is not None:
        monitors = monitors.filter(pk__in=only)
    memo: dict = {}  # samples' tallies by environment, version and span, shared by monitors
    for monitor in monitors:
        try:
            # The monitor row is locked for its turn: two overlapping sweeps take turns on it
            # (one raise, then an update), and the alert, its audit event and its
            # notifications land together.
            with transaction.atomic():
                Monitor.objects.select_for_update().filter(pk=monitor.pk).first()
                check = evaluate(monitor, now, memo=memo)
                result = _alerting(monitor, check, now)
                monitor.last_check = {**check.as_dict(now), "result": result or ""}
                monitor.save(update_fields=["last_check"])
        except (DatabaseError, ArithmeticError, ValueError):
            log.exception("monitor %s could not be checked", monitor.pk)
            outcome["failed"] += 1
            continue
        outcome["checked"] += 1
        if result:
            outcome[result] += 1
    return outcome


RANK = {None: 0, MonitorAlert.Severity.WARNING: 1, MonitorAlert.Severity.CRITICAL: 2}


def _alerting(monitor: Monitor, check: Check, now: datetime) -> str | None:
    if check.severity is None:
        return None
    cooldown = timedelta(minutes=monitor.cooldown_minutes)
    # Locked, so a person acknowledging or resolving it at the same moment is not undone.
    current = (
        MonitorAlert.objects.select_for_update()
        .filter(monitor=monitor)
        .exclude(state=MonitorAlert.State.RESOLVED)
        .first()
    )
    if current is not None:
        fields = ["value", "baseline", "change"]
        if check.change >= current.change:  # the alert keeps the worst reading of its episode
            current.value, current.baseline, current.change = (
                check.value, check.baseline, check.change,
            )  # fmt: skip
        # Escalation waits for the cooldown: until then the alert stays at the severity people
        # were told of, so the next sweep after it still sees the escalation to announce.
        if RANK[check.severity] > RANK[current.severity] and now - current.notified_at >= cooldown:
            current.severity = check.severity
            current.notified_at = now
            current.notifications += 1
            current.save(update_fields=[*fields, "severity", "notified_at", "notifications"])
            _announce(monitor, current, check, "escalated")
            return "escalated"
        current.save(update_fields=fields)
        return "updated"
    last = monitor.alerts.order_by("-notified_at").first()
    if last is not None and now - last.notified_at < cooldown:
        return "held"
    alert = MonitorAlert.objects.create(
        monitor=monitor, severity=check.severity, value=check.value, baseline=check.baseline,
        change=check.change, opened_at=now, notified_at=now,
    )  # fmt: skip
    _announce(monitor, alert, check, "raised")
    return "raised"


def describe(monitor: Monitor, alert: MonitorAlert) -> str:
    where = monitor.environment.name + (f", {monitor.version}" if monitor.version else "")
    if monitor.metric == M.DRIFT:
        return f"{monitor.get_metric_display()} in {where}: PSI {alert.change:g}"
    return (
        f"{monitor.get_metric_display()} in {where}: {_shown(monitor, alert.value)} against "
        f"{_shown(monitor, alert.baseline)} before, {alert.change:+g}% worse"
    )


def _shown(monitor: Monitor, value: float | None) -> str:
    if value is None:
        return "—"
    if monitor.metric in (M.FAITHFULNESS, M.RELEVANCE):
        return f"{value:.2f}"
    if monitor.metric == M.LATENCY:
        return f"≤{value:.0f} ms"
    if monitor.metric == M.COST:
        return f"${value:.5f}"
    if monitor.metric == M.TOKENS:
        return f"{value:.0f} tokens"
    return f"{value:.1%}"


def _announce(monitor: Monitor, alert: MonitorAlert, check: Check, verb: str) -> None:
    title = f"{alert.severity.title()}: {describe(monitor, alert)}"
    audit.record(
        actor=SYSTEM, action=f"monitor.alert.{verb}", obj=alert, object_label=title[:200],
        application=monitor.application_id, environment=monitor.environment_id,
        after={"severity": alert.severity, "value": check.value, "baseline": check.baseline,
               "change": check.change, "n": check.n},
    )  # fmt: skip
    notify(
        application=monitor.application,
        kind=f"monitor.alert.{verb}",
        title=title,
        body=f"Window {monitor.window_minutes} min against the {monitor.baseline_minutes} min "
        f"before; {check.n} in the window.",
        url=reverse("samples:monitors", kwargs={"app": monitor.application.key}),
        roles=("admin", "engineer"),
        data={"monitor": monitor.pk, "severity": alert.severity, "metric": monitor.metric},
    )
