"""Real Celery workers for the integration and browser tests: subprocesses on the test database
and a dedicated Redis db, with the test process's own Celery app publishing to that same db."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from django.conf import settings
from django.db import connection

from console.evals.models import EvalRun

ROOT = Path(__file__).resolve().parents[2]
# A Redis database used by nothing else, flushed when a test starts using it.
WORKER_REDIS_DB = int(os.environ.get("AIRLOCK_EVAL_WORKER_REDIS_DB", "13"))
VISIBILITY_TIMEOUT_S = 5


def dedicated_broker_url(redis_url: str) -> str:
    parts = urlparse(redis_url)
    return urlunparse(parts._replace(path=f"/{WORKER_REDIS_DB}"))


def current_database_url() -> str:
    """DATABASE_URL for the database this test is using (the test database, by name)."""
    from console.ops.processes import database_url

    assert connection.vendor == "postgresql"
    return database_url()


@contextlib.contextmanager
def publishing_to(broker_url: str) -> Iterator[None]:
    """Point the test process's Celery app (used by launch_run's run_eval.delay) at the
    dedicated Redis db, emptied first; restore it afterwards."""
    import redis

    from console.celery import app

    redis.Redis.from_url(broker_url).flushdb()
    # Item access, not attributes: Celery's `broker_url` property prefers $CELERY_BROKER_URL,
    # while `broker_write_url` (what publishing uses) honours a configured value.
    saved = app.conf.get("broker_write_url"), app.conf.get("broker_transport_options")

    def reset_pools():
        app._pool = None
        app.amqp._producer_pool = None

    app.conf["broker_write_url"] = broker_url
    app.conf["broker_transport_options"] = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    reset_pools()
    assert app.connection_for_write().as_uri().endswith(f"/{WORKER_REDIS_DB}")
    try:
        yield
    finally:
        app.conf["broker_write_url"], app.conf["broker_transport_options"] = saved
        reset_pools()


class Worker:
    """`python -m celery -A console worker --pool threads` in its own process group."""

    def __init__(self, name: str, broker_url: str, log_dir: Path, concurrency: int = 2):
        self.name = name
        self.log_path = log_dir / f"worker-{name}.log"
        env = {
            **os.environ,
            "DEBUG": "1",
            "DATABASE_URL": current_database_url(),
            "CELERY_BROKER_URL": broker_url,
            "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S),
            "PYTHONUNBUFFERED": "1",
            # The simulators this test started (tests/conftest.py: allow_loopback).
            "AIRLOCK_EGRESS_ALLOW": ",".join(settings.AIRLOCK_EGRESS_ALLOW),
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "console", "worker",
                "--pool", "threads", "--concurrency", str(concurrency), "-Q", "celery",
                "--hostname", f"{name}@{socket.gethostname()}", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(
            f"worker {self.name} not ready in {timeout}s:\n{self.output()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost node would: no cleanup, no ack."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(8)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@contextlib.contextmanager
def workers(broker_url: str, log_dir: Path) -> Iterator[Callable[..., Worker]]:
    """start(name) → a ready Worker; every worker is stopped on exit, whatever happened."""
    started: list[Worker] = []

    def start(name: str, concurrency: int = 2) -> Worker:
        worker = Worker(name, broker_url, log_dir, concurrency)
        started.append(worker)
        return worker.wait_ready()

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_finished(run: EvalRun, timeout: float = 60) -> EvalRun:
    def finished():
        run.refresh_from_db()
        return not run.active

    wait_for(finished, timeout, f"run #{run.pk} to finish (status {run.status})")
    return run
