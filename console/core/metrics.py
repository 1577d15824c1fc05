"""Prometheus metrics. Request metrics are recorded per process (in gunicorn, shared through
PROMETHEUS_MULTIPROC_DIR when set); state gauges are read from the database and broker when
/metrics is scraped."""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REQUEST_SECONDS = Histogram(
    "airlock_http_request_duration_seconds",
    "Console and API request latency by route",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RUNTIME_CALLS = Counter(
    "airlock_runtime_api_requests_total",
    "Runtime API calls by API key and status",
    ["key", "route", "status"],
)


class RuntimeTally:
    """Runtime API calls counted in this process and handed to the Prometheus metrics above in
    batches (at most `FLUSH_SECONDS` apart, and whenever /metrics is rendered), instead of one
    histogram observation and one counter increment (each a locked, in gunicorn a memory-mapped,
    write) per call. Same metric names and labels as the per-call path; /metrics lags the calls
    by at most `FLUSH_SECONDS` for other worker processes."""

    FLUSH_SECONDS = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str, str], int] = {}
        # (route, method, status) → [sum of seconds, count per histogram bucket...]
        self._latency: dict[tuple[str, str, str], list[float]] = {}
        self._next_flush = time.monotonic() + self.FLUSH_SECONDS
        self._bounds = list(REQUEST_SECONDS._upper_bounds)

    def add(self, key: str, route: str, method: str, status: str, seconds: float) -> None:
        bucket = 1 + bisect_left(self._bounds, seconds)
        with self._lock:
            calls = (key, route, status)
            self._calls[calls] = self._calls.get(calls, 0) + 1
            latency = self._latency.get((route, method, status))
            if latency is None:
                latency = self._latency[(route, method, status)] = [0.0] * (1 + len(self._bounds))
            latency[0] += seconds
            latency[bucket] += 1
            due = time.monotonic() >= self._next_flush
        if due:
            self.flush()

    def flush(self) -> None:
        """Publish what was counted since the last flush to the Prometheus metrics."""
        with self._lock:
            calls, self._calls = self._calls, {}
            latency, self._latency = self._latency, {}
            self._next_flush = time.monotonic() + self.FLUSH_SECONDS
        for labels, count in calls.items():
            RUNTIME_CALLS.labels(*labels).inc(count)
        for labels, sums in latency.items():
            # A histogram takes one observation at a time; its child keeps one value per bucket
            # (the bucket an observation falls in, not cumulative) and the sum.
            child = REQUEST_SECONDS.labels(*labels)
            child._sum.inc(sums[0])
            for index, count in enumerate(sums[1:]):
                if count:
                    child._buckets[index].inc(count)


RUNTIME_TALLY = RuntimeTally()


class StateCollector:
    """Gauges computed at scrape time: eval items by outcome, active kill switches, queue depth."""

    def collect(self):
        from django.apps import apps
        from django.db.models import Count

        items = GaugeMetricFamily(
            "airlock_eval_items", "Stored eval item results by outcome", labels=["outcome"]
        )
        result = apps.get_model("evals", "EvalResult")
        outcomes = {"passed": 0, "failed": 0, "error": 0}
        for row in result.objects.values("status", "passed").annotate(n=Count("id")).order_by():
            key = "error" if row["status"] == "error" else ("passed" if row["passed"] else "failed")
            outcomes[key] += row["n"]
        for outcome, n in outcomes.items():
            items.add_metric([outcome], n)
        yield items

        killed = GaugeMetricFamily("airlock_kill_switches_active", "Flags killed, per environment")
        killed.add_metric([], kill_switches_active())
        yield killed

        depth = GaugeMetricFamily(
            "airlock_celery_queue_depth", "Messages waiting in the Celery queue"
        )
        depth.add_metric([], queue_depth())
        yield depth
        yield from ai_metrics()


AI_LABELS = ["application", "environment", "version"]


def ai_metrics():
    """The applications' own AI metrics, so Prometheus users can alert from their stack: traffic,
    errors, tokens and spend from the daily usage rollups (production traffic, all time, by
    application, environment and prompt version), judged quality over the last 24 hours of
    samples, and the monitor alerts open now."""
    from datetime import timedelta

    from django.apps import apps
    from django.db.models import Avg, Count, Sum
    from django.utils import timezone

    usage = apps.get_model("usage", "UsageDaily")
    requests = CounterMetricFamily(
        "airlock_ai_requests", "Production model calls reported", labels=AI_LABELS
    )
    errors = CounterMetricFamily(
        "airlock_ai_errors", "Production model calls that failed or timed out", labels=AI_LABELS
    )
    tokens = CounterMetricFamily(
        "airlock_ai_tokens", "Tokens of production calls", labels=[*AI_LABELS, "direction"]
    )
    cost = CounterMetricFamily(
        "airlock_ai_cost_dollars", "Spend of production calls (USD)", labels=AI_LABELS
    )
    rows = (
        usage.objects.filter(source="runtime")
        .values("application__key", "environment__key", "prompt_version")
        .annotate(
            requests=Sum("requests"), errors=Sum("errors"), tokens_in=Sum("input_tokens"),
            tokens_out=Sum("output_tokens"), cost=Sum("cost"),
        )
        .order_by()
    )  # fmt: skip
    for row in rows:
        labels = [row["application__key"], row["environment__key"] or "", row["prompt_version"]]
        requests.add_metric(labels, row["requests"] or 0)
        errors.add_metric(labels, row["errors"] or 0)
        tokens.add_metric([*labels, "input"], row["tokens_in"] or 0)
        tokens.add_metric([*labels, "output"], row["tokens_out"] or 0)
        cost.add_metric(labels, float(row["cost"] or 0))
    yield from (requests, errors, tokens, cost)

    sample = apps.get_model("samples", "Sample")
    quality = GaugeMetricFamily(
        "airlock_ai_quality",
        "Mean judged score of production samples over the last 24 hours",
        labels=[*AI_LABELS, "metric"],
    )
    judged = GaugeMetricFamily(
        "airlock_ai_samples_judged", "Production samples judged in the last 24 hours",
        labels=AI_LABELS,
    )  # fmt: skip
    since = timezone.now() - timedelta(hours=24)
    rows = (
        sample.objects.filter(at__gte=since, judge_state="done")
        .values("application__key", "environment__key", "prompt_version")
        .annotate(n=Count("id"), faithfulness=Avg("faithfulness"), relevance=Avg("relevance"))
        .order_by()
    )
    for row in rows:
        labels = [row["application__key"], row["environment__key"], row["prompt_version"]]
        judged.add_metric(labels, row["n"])
        for metric in ("faithfulness", "relevance"):
            if row[metric] is not None:
                quality.add_metric([*labels, metric], round(row[metric], 4))
    yield from (quality, judged)

    alert = apps.get_model("samples", "MonitorAlert")
    alerts = GaugeMetricFamily(
        "airlock_monitor_alerts_open",
        "Monitor alerts not yet resolved",
        labels=["application", "environment", "severity"],
    )
    rows = (
        alert.objects.exclude(state="resolved")
        .values("monitor__application__key", "monitor__environment__key", "severity")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        alerts.add_metric(
            [row["monitor__application__key"], row["monitor__environment__key"], row["severity"]],
            row["n"],
        )
    yield alerts


def kill_switches_active() -> int:
    from django.apps import apps

    return apps.get_model("flags", "FlagRules").objects.filter(killed=True).count()


def queue_depth(queue: str = "celery") -> int:
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            return int(client.llen(queue))
        finally:
            client.close()
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in")
    if folder and Path(folder).is_dir():
        return sum(1 for _ in Path(folder).glob("*.msg"))
    return 0


def render() -> bytes:
    RUNTIME_TALLY.flush()  # this process's runtime calls; other workers flush every second
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    state = CollectorRegistry()
    state.register(StateCollector())
    return generate_latest(registry) + generate_latest(state)
