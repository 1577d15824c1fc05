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
from prometheus_client.core import GaugeMetricFamily

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
