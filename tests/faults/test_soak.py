"""The soak: the runtime API of a private deployment (gunicorn as the image runs it) under
steady load for AIRLOCK_SOAK_SECONDS (5 minutes by default), with its work per request and its
memory steady.

Every 30 s window records requests, errors, latency percentiles and the web processes' CPU time
per request; their resident memory is sampled every 10 s. Written to test-artifacts/soak.json and
printed.

`make test` runs the soak beside the rest of the suite, so the machine's other load comes and
goes during it: requests per second and latency follow that load, not the server. What a leak or
a creeping slowdown changes is the server's own work per request (CPU seconds of the master and
workers over the requests they answered) and its memory, so those are what must stay steady;
latency is held only to a ceiling that catches stalls."""

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
# Offered load, calls per second over all clients: steady traffic, well under what the server
# can take, so that the soak leaves most of the machine to the tests running beside it.
RATE = int(os.environ.get("AIRLOCK_SOAK_RATE", "400"))
ARTIFACT = ROOT / "test-artifacts" / "soak.json"


TICKS = os.sysconf("SC_CLK_TCK")


def group_usage(pgid: int) -> tuple[float, float]:
    """(resident MB, CPU seconds) of every process in the web server's process group (master
    and workers), from /proc. Workers are not recycled, so CPU seconds only grow."""
    total_kb, ticks = 0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the name: state ppid pgrp ...; utime and stime are the 12th and 13th.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            ticks += int(fields[11]) + int(fields[12])
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return round(total_kb / 1024, 1), ticks / TICKS


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
            interval = CLIENTS / RATE
            next_at = time.monotonic() + n * interval / CLIENTS
            while not stop.wait(max(0.0, next_at - time.monotonic())):
                # Behind schedule (the machine was busy), it catches up by one call, not a burst.
                next_at = max(next_at + interval, time.monotonic() - interval)
                method, path, body = routes[k % len(routes)]
                k += 1
                started = time.monotonic()
                status, _ = call(box, d, method, path, body, headers)
                with lock:
                    samples.append((started, time.monotonic() - started, status))

        memory: list[tuple[float, float]] = []
        cpu_at: list[float] = []  # the group's CPU seconds at each window's start, then the end
        began = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for tick in range(SECONDS // 10 + 1):  # every 10 s, on the second (no drift)
            time.sleep(max(0.0, began + tick * 10 - time.monotonic()))
            rss, cpu = group_usage(pgid)
            if tick < SECONDS // 10:
                memory.append((tick * 10, rss))
            if tick * 10 % WINDOW == 0:
                cpu_at.append(cpu)
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
                "cpu_ms_per_request": round(
                    1000 * (cpu_at[w + 1] - cpu_at[w]) / max(1, len(rows)), 3
                ),
            }
        )
    steady = windows[1:]  # the first window warms up (imports, connections, snapshots)
    # Memory is compared from the end of warm-up: the first minute, or half a shorter soak.
    after_warmup = [mb for t, mb in memory if t >= min(60, SECONDS // 2)]
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": SECONDS,
        "clients": CLIENTS,
        "offered_per_s": RATE,
        "requests": len(samples),
        "requests_per_s": round(len(samples) / SECONDS, 1),
        "errors": sum(w["errors"] for w in windows),
        "p50_ms_by_window": [w["p50_ms"] for w in windows],
        "p99_ms_by_window": [w["p99_ms"] for w in windows],
        "cpu_ms_per_request_by_window": [w["cpu_ms_per_request"] for w in windows],
        "rss_mb": memory,
        "rss_growth_after_first_minute_mb": round(after_warmup[-1] - after_warmup[0], 1),
        "windows": windows,
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(report, indent=2))
    print("\nsoak:", json.dumps({k: v for k, v in report.items() if k != "windows"}))

    assert report["errors"] == 0, windows
    # Every window kept up with at least half the offered load.
    assert all(w["requests"] >= RATE * WINDOW / 2 for w in windows), windows
    # Work per request steady: no steady window far above their median, and the last third no
    # costlier than the first (a cache or a list that grows with traffic shows up here). The
    # margin allows for the tests beside the soak: on two cores their load alone moved the
    # server's CPU per request by up to a quarter between thirds (0.853 → 1.051 ms in one CI
    # run), while a leak keeps growing.
    cpu = [w["cpu_ms_per_request"] for w in steady]
    median_cpu = statistics.median(cpu)
    assert median_cpu > 0, windows  # the measurement itself works
    for w in steady:
        assert w["cpu_ms_per_request"] <= 1.5 * median_cpu, (w, median_cpu)
    third = max(1, len(cpu) // 3)
    assert statistics.median(cpu[-third:]) <= 1.35 * statistics.median(cpu[:third]), windows
    # No stalls: every steady window answers 99% of its calls within a second.
    for w in steady:
        assert w["p99_ms"] <= 1000, w
    # Memory steady: after the first minute, growth under 10% and under 25 MB (no leak).
    growth = after_warmup[-1] - after_warmup[0]
    assert growth <= max(0.10 * after_warmup[0], 5) and growth <= 25, memory
