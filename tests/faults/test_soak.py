"""The soak: the runtime API of a private deployment (gunicorn as the image runs it) under
steady load for AIRLOCK_SOAK_SECONDS (5 minutes by default), with memory and latency steady.

Every 30 s window records requests, errors and latency percentiles; the web processes' resident
memory is sampled every 10 s. Written to test-artifacts/soak.json and printed."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.faults.deployment import ROOT, call, deployment, missing_tools

pytestmark = [pytest.mark.services, pytest.mark.slow]

SECONDS = int(os.environ.get("AIRLOCK_SOAK_SECONDS", "300"))
WINDOW = 30
CLIENTS = 6
ARTIFACT = ROOT / "test-artifacts" / "soak.json"


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the web server's process group (master and
    workers), from /proc."""
    total_kb = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the name: state ppid pgrp ...
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return round(total_kb / 1024, 1)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def test_the_runtime_api_holds_steady_under_load(tmp_path):
    if missing := missing_tools():
        pytest.skip(f"the soak needs {', '.join(missing)}")
    # Workers are not recycled (GUNICORN_MAX_REQUESTS=0): recycling would hide a leak.
    with deployment("soak", GUNICORN_MAX_REQUESTS="0") as d:
        pgid = os.getpgid(d.procs["web"].pid)
        samples: list[tuple[float, float, int | str]] = []  # (start, seconds, status)
        lock = threading.Lock()
        stop = threading.Event()
        headers = {"Authorization": f"Bearer {d.secret}", "Content-Type": "application/json"}
        routes = [
            ("GET", "/api/v1/config", None),
            ("POST", "/ofrep/v1/evaluate/flags", b'{"context": {"targetingKey": "u-1"}}'),
            ("POST", "/ofrep/v1/evaluate/flags/tier-routing",
             b'{"context": {"targetingKey": "u-2", "plan": "pro"}}'),
        ]  # fmt: skip

        def client(n: int) -> None:
            box = [None]
            k = n
            while not stop.is_set():
                method, path, body = routes[k % len(routes)]
                k += 1
                started = time.monotonic()
                status, _ = call(box, d, method, path, body, headers)
                with lock:
                    samples.append((started, time.monotonic() - started, status))

        memory: list[tuple[float, float]] = []
        began = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        while time.monotonic() - began < SECONDS:
            memory.append((round(time.monotonic() - began), group_rss_mb(pgid)))
            time.sleep(10)
        stop.set()
        for thread in threads:
            thread.join(30)

    windows = []
    for w in range(SECONDS // WINDOW):
        lo, hi = began + w * WINDOW, began + (w + 1) * WINDOW
        rows = [(s, status) for t, s, status in samples if lo <= t < hi]
        ms = [s * 1000 for s, _ in rows]
        windows.append(
            {
                "from_s": w * WINDOW,
                "requests": len(rows),
                "errors": sum(1 for _, status in rows if status not in (200, 304)),
                "p50_ms": round(percentile(ms, 50), 2),
                "p99_ms": round(percentile(ms, 99), 2),
            }
        )
    steady = windows[1:]  # the first window warms up (imports, connections, snapshots)
    # Memory is compared from the end of warm-up: the first minute, or half a shorter soak.
    after_warmup = [mb for t, mb in memory if t >= min(60, SECONDS // 2)]
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": SECONDS,
        "clients": CLIENTS,
        "requests": len(samples),
        "requests_per_s": round(len(samples) / SECONDS, 1),
        "errors": sum(w["errors"] for w in windows),
        "p50_ms_by_window": [w["p50_ms"] for w in windows],
        "p99_ms_by_window": [w["p99_ms"] for w in windows],
        "rss_mb": memory,
        "rss_growth_after_first_minute_mb": round(after_warmup[-1] - after_warmup[0], 1),
        "windows": windows,
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(report, indent=2))
    print("\nsoak:", json.dumps({k: v for k, v in report.items() if k != "windows"}))

    assert report["errors"] == 0, windows
    assert all(w["requests"] > 0 for w in windows), windows
    # Throughput and latency steady: no window far off the median of the steady windows.
    median_rate = statistics.median(w["requests"] for w in steady)
    median_p50 = statistics.median(w["p50_ms"] for w in steady)
    median_p99 = statistics.median(w["p99_ms"] for w in steady)
    for w in steady:
        assert w["requests"] >= 0.6 * median_rate, (w, median_rate)
        assert w["p50_ms"] <= 2 * median_p50 + 5, (w, median_p50)
        assert w["p99_ms"] <= 3 * median_p99 + 20, (w, median_p99)
    # The last windows are no slower than the first steady ones (no creeping slowdown).
    first, last = steady[: max(1, len(steady) // 3)], steady[-max(1, len(steady) // 3) :]
    assert (
        statistics.median(w["p50_ms"] for w in last)
        <= 1.5 * statistics.median(w["p50_ms"] for w in first) + 2
    ), windows
    # Memory steady: after the first minute, growth under 10% and under 25 MB (no leak).
    growth = after_warmup[-1] - after_warmup[0]
    assert growth <= max(0.10 * after_warmup[0], 5) and growth <= 25, memory
