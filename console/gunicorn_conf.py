"""Gunicorn settings for the web process (bin/web). Every value can be overridden by env."""

import multiprocessing
import os
import time
from pathlib import Path

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 9)))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
# In-flight requests get this long to finish on SIGTERM before the worker is stopped.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
keepalive = 5
# Recycling a worker is a safety net against leaks, not a cure, and each restart costs the
# runtime API its warm snapshot and connections: at 5,000, a worker under the soak's load
# restarted every ~20 s. The soak run (tests/faults/test_soak.py, recycling off) shows memory
# flat, so recycle rarely. 0 turns it off.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "200000"))
max_requests_jitter = max_requests // 10
# Airlock writes its own structured access log line per console request; runtime API calls are
# counted on /metrics instead, and logged one by one only when refused or failed.
accesslog = None
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def child_exit(server, worker):
    """Let prometheus_client forget a dead worker's live gauges in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Publish the runtime API calls this worker counted since its last flush (at most 1 s)."""
    from console.core.metrics import RUNTIME_TALLY

    RUNTIME_TALLY.flush()


def post_worker_init(worker):
    """Warm the worker before it takes a request (see warm_up)."""
    started = time.perf_counter()
    compiled = warm_up()
    worker.log.info(
        "warmed up: URLconf and %d templates in %.0f ms",
        compiled,
        (time.perf_counter() - started) * 1000,
    )


def warm_up() -> int:
    """Import every view (by resolving the URLconf) and compile every template of the console,
    so the first person to open a page after a (re)start does not wait for this worker to do it
    (about a quarter of a second, paid by each worker on its own first requests otherwise).
    Returns how many templates were compiled."""
    from django.conf import settings
    from django.template import engines
    from django.urls import get_resolver

    get_resolver().reverse_dict  # noqa: B018 - populating it imports every urls and views module
    engine = engines["django"]
    compiled = 0
    for folder in settings.TEMPLATES[0]["DIRS"]:
        for path in sorted(Path(folder).rglob("*.html")):
            engine.get_template(str(path.relative_to(folder)))
            compiled += 1
    return compiled
