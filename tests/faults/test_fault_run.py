"""The fault run: a private deployment (gunicorn + Celery worker, its own PostgreSQL and Redis)
under runtime API load while PostgreSQL and then Redis are restarted, with an eval running
through both restarts and usage events being reported all along.

Proves: the flag and config reads keep answering (last good snapshot while the database is
down; rate limits fail open while Redis is down), nothing answers 500, every usage event a
client sent is stored exactly once (clients retry a refused batch; ingestion is idempotent),
and the eval completes with every item stored exactly once. The error rate of each route in
each phase is written to test-artifacts/fault-run.json and printed.

(The third fault, a worker killed mid-eval, is tests/evals/test_worker_integration.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from tests.faults.deployment import ROOT, call, deployment, missing_tools, wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]

CONFIG = ("GET", "/api/v1/config")
OFREP = ("POST", "/ofrep/v1/evaluate/flags")
USAGE = ("POST", "/api/v1/usage")
RETRYABLE = {429, 503, "connection"}
ARTIFACT = ROOT / "test-artifacts" / "fault-run.json"


class Recorder:
    """Every call's start time, route and outcome (an HTTP status, or 'connection')."""

    def __init__(self):
        self.calls: list[tuple[float, str, object]] = []
        self.lock = threading.Lock()

    def add(self, started: float, route: str, outcome) -> None:
        with self.lock:
            self.calls.append((started, route, outcome))


def reader(d, recorder: Recorder, stop: threading.Event, method: str, path: str) -> None:
    headers = {"Authorization": f"Bearer {d.secret}", "Content-Type": "application/json"}
    body = b'{"context": {"targetingKey": "user-1"}}' if method == "POST" else None
    box = [None]
    while not stop.is_set():
        started = time.monotonic()
        status, _ = call(box, d, method, path, body, headers)
        recorder.add(started, path, status)
        time.sleep(0.005)


class UsageClient:
    """Reports batches of 20 events, as a production SDK would: a refused batch (503 while the
    database restarts) is sent again, unchanged, until it is accepted."""

    def __init__(self, d, recorder: Recorder):
        self.d, self.recorder = d, recorder
        self.sent: set[str] = set()
        self.acknowledged: set[str] = set()
        self.statuses: Counter = Counter()
        self.rejected: list = []

    def run(self, stop: threading.Event) -> None:
        headers = {"Authorization": f"Bearer {self.d.secret}", "Content-Type": "application/json"}
        box = [None]
        batch_no = 0
        while not stop.is_set():
            batch_no += 1
            ids = [f"fault-{batch_no:05d}-{n:02d}" for n in range(20)]
            now = datetime.now(UTC).isoformat()
            body = json.dumps(
                {
                    "events": [
                        {"event_id": i, "time": now, "model": "gpt-4o-mini", "input_tokens": 900,
                         "output_tokens": 120, "latency_ms": 640, "feature": "answer"}
                        for i in ids
                    ]
                }
            ).encode()  # fmt: skip
            self.sent.update(ids)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                started = time.monotonic()
                status, payload = call(box, self.d, "POST", USAGE[1], body, headers)
                self.recorder.add(started, USAGE[1], status)
                self.statuses[status] += 1
                if status in (200, 202):
                    self.acknowledged.update(ids)
                    break
                if status not in RETRYABLE:
                    self.rejected.append((status, payload[:500]))
                    return  # a client does not resend what was refused as wrong
                time.sleep(0.5)
            time.sleep(0.1)


def phase_of(t: float, marks: dict[str, tuple[float, float]]) -> str:
    for name, (start, end) in marks.items():
        if start <= t < end:
            return name
    return "steady"


def summarise(calls, marks) -> dict:
    table: dict = defaultdict(lambda: defaultdict(Counter))
    for started, route, outcome in calls:
        table[phase_of(started, marks)][route][str(outcome)] += 1
    report = {}
    for phase, routes in table.items():
        report[phase] = {}
        for route, outcomes in routes.items():
            total = sum(outcomes.values())
            good = sum(n for k, n in outcomes.items() if k in {"200", "202", "304"})
            report[phase][route] = {
                "calls": total,
                "error_rate": round(1 - good / total, 4) if total else None,
                "outcomes": dict(outcomes),
            }
    return report


@pytest.fixture
def live():
    if missing := missing_tools():
        pytest.skip(f"the fault run needs {', '.join(missing)}")
    # Slow model calls, so the eval is still running through both restarts.
    with deployment("faults", simulator_latency_ms=700) as d:
        yield d


def test_restarting_postgres_and_redis_under_load(live):
    d = live
    recorder = Recorder()
    stop = threading.Event()
    usage = UsageClient(d, recorder)
    threads = [
        threading.Thread(target=reader, args=(d, recorder, stop, *CONFIG), daemon=True),
        threading.Thread(target=reader, args=(d, recorder, stop, *CONFIG), daemon=True),
        threading.Thread(target=reader, args=(d, recorder, stop, *OFREP), daemon=True),
        threading.Thread(target=usage.run, args=(stop,), daemon=True),
    ]
    for thread in threads:
        thread.start()
    eval_cmd = subprocess.Popen(
        [sys.executable, "manage.py", "eval_run", "support-bot", "--prompt", d.refs["prompt"],
         "--model", d.refs["model"], "--dataset", d.refs["dataset"], "--wait",
         "--timeout", "150"],
        cwd=ROOT, env={**d.env, "DEBUG": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    marks: dict[str, tuple[float, float]] = {}
    try:
        time.sleep(6)  # steady load; the eval gets going
        run_id = wait_until(
            lambda: d.postgres.query("SELECT max(id) FROM evals_evalrun WHERE status='running'")[0][
                0
            ],
            60,  # the eval command starts Django and the worker picks the run up under load
            "the eval to start running",
        )
        # The faults land mid-run: once some items are stored (on a busy machine, e.g. beside
        # other test workers, the first batch can take a few seconds after the run starts).
        stored_before = wait_until(
            lambda: d.postgres.query(
                "SELECT count(*) FROM evals_evalresult WHERE run_id = %s", run_id
            )[0][0],
            30,
            "the eval's first stored results",
        )

        t0 = time.monotonic()
        d.redis.stop()
        time.sleep(3)
        d.redis.start()
        marks["redis_restart"] = (t0, time.monotonic() + 1.0)
        time.sleep(6)

        t0 = time.monotonic()
        d.postgres.stop("fast")  # every connection dropped, as in a restart or failover
        time.sleep(4)
        d.postgres.start()
        marks["postgres_restart"] = (t0, time.monotonic() + 1.0)
        time.sleep(6)
        marks["steady_after"] = (time.monotonic() - 5, time.monotonic())
    finally:
        stop.set()
        for thread in threads:
            thread.join(150)
    output, _ = eval_cmd.communicate(timeout=300)

    # --------------------------------------------------------------- the report
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "phases": summarise(recorder.calls, marks),
        "phase_seconds": {k: round(e - s, 1) for k, (s, e) in marks.items()},
        "usage": {
            "events_sent": len(usage.sent),
            "statuses": {str(k): v for k, v in usage.statuses.items()},
        },
    }
    stored_events = d.postgres.query(
        "SELECT count(*), count(DISTINCT event_id) FROM usage_usageevent "
        "WHERE event_id LIKE 'fault-%%'"
    )[0]
    report["usage"]["events_stored"] = stored_events[0]
    run = d.postgres.query(
        "SELECT status, total_items, done_items FROM evals_evalrun WHERE id = %s", run_id
    )[0]
    results = d.postgres.query(
        "SELECT count(*), count(DISTINCT item_id) FROM evals_evalresult WHERE run_id = %s", run_id
    )[0]
    report["eval"] = {
        "run": run_id,
        "status": run[0],
        "items": run[1],
        "stored_before_faults": stored_before,
        "results": results[0],
        "distinct_items": results[1],
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(report, indent=2))
    print("\nfault run:", json.dumps(report))

    # --------------------------------------------------------------- what must hold
    every = [outcome for _, _, outcome in recorder.calls]
    assert 500 not in every and "connection" not in every, Counter(every)
    phases = report["phases"]
    for route in (CONFIG[1], OFREP[1]):
        assert phases["steady"][route]["error_rate"] == 0, phases["steady"][route]
        assert phases["steady_after"][route]["error_rate"] == 0, phases["steady_after"][route]
        # Served from the last good snapshot while the database was down...
        assert phases["postgres_restart"][route]["error_rate"] <= 0.02, phases
        # ...and without the shared cache while Redis was down.
        assert phases["redis_restart"][route]["error_rate"] <= 0.02, phases
    # Ingestion needs the database: during its restart it refused (503, retryable), never 500.
    assert set(phases["postgres_restart"][USAGE[1]]["outcomes"]) <= {"202", "503"}
    assert not usage.rejected, usage.rejected
    assert usage.acknowledged == usage.sent
    assert stored_events == (len(usage.sent), len(usage.sent))  # none lost, none twice
    # The eval rode out both restarts: finished, each item stored exactly once.
    assert eval_cmd.returncode in (0, 1), output  # 1 = ran to a failing gate verdict
    worker_log = d.log("worker")
    assert "Unrecoverable error" not in worker_log, worker_log[-3000:]
    assert d.procs["worker"].poll() is None, "the worker exited"
    assert "broker connection lost" in worker_log  # console/core/broker.py kept it alive
    assert run[0] == "completed", output
    assert results[0] == results[1] == run[1] == run[2], report["eval"]
    assert 0 < stored_before < run[1], "the faults must land while the eval is mid-run"
