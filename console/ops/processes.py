"""What the bench commands need to start processes of their own on this process's database:
its URL, a free loopback port, `bin/web` in production mode, and Celery workers (bench_evals
--workers) on this process's database and broker that consume only a queue of their own, so a
console's real workers never take the bench's tasks and the bench's workers never take the
console's."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection

from console.config import audit_keys_env


def database_url() -> str:
    """This process's database for the processes it starts: DATABASE_URL (with its options),
    naming the database actually in use (under the test runner, the test database)."""
    db = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    if os.environ.get("DATABASE_URL"):
        url = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
        return urllib.parse.urlunsplit(url._replace(path="/" + connection.settings_dict["NAME"]))
    auth_part = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth_part}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_env(*, workers: int, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of `bin/web` in production mode (DEBUG=0) on this process's database,
    broker and audit keys, over plain HTTP on loopback (no TLS redirect)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + "x" * 44,
            "AIRLOCK_AUDIT_KEYS": audit_keys_env(settings.AIRLOCK_AUDIT_KEYS),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", settings.CELERY_BROKER_URL),
            "GUNICORN_WORKERS": str(workers),
            "AIRLOCK_DATA_DIR": str(data_dir),
            **extra,
        }
    )
    return env


@contextlib.contextmanager
def running_web(env: dict[str, str], *, wait_s: float = 180) -> Iterator[str]:
    """`bin/web` with `env` on a free loopback port until the block ends: yields its base URL
    once /health answers (collecting static files first may take a while), raises CommandError
    with the server's output if it exits or never answers, and stops it with SIGTERM."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The server's output goes to a file: an undrained pipe would fill up and stall the workers.
    with tempfile.TemporaryFile() as output:
        server = subprocess.Popen(
            ["bin/web"],
            cwd=settings.BASE_DIR,
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}"},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def tail() -> str:
            output.seek(0)
            return output.read().decode(errors="replace")[-3000:]

        try:
            deadline = time.monotonic() + wait_s
            while True:
                if server.poll() is not None:
                    raise CommandError(f"bin/web exited during start-up:\n{tail()}")
                try:
                    with urllib.request.urlopen(base + "/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise CommandError(f"bin/web did not answer within {wait_s:.0f} s:\n{tail()}")
                time.sleep(0.3)
            yield base
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=40)
            except subprocess.TimeoutExpired:
                server.kill()


class WorkerFailed(Exception):
    pass


class CeleryWorkers:
    """`count` worker processes (`bin/worker`'s command: threads pool) taking one task at a
    time each from `queue`, so a run's shards spread over the processes. Used as a context
    manager; `cpu_s` is their CPU (user + system) once they have stopped."""

    def __init__(self, count: int, queue: str, folder: Path, env: dict[str, str]):
        self.count, self.queue, self.folder = count, queue, folder
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.cpu_s: float | None = None

    def __enter__(self) -> CeleryWorkers:
        try:
            for n in range(self.count):
                log = self.folder / f"worker-{n}.log"
                self.logs.append(log)
                argv = [
                    sys.executable, "-m", "celery", "-A", "console", "worker",
                    "--pool", "threads", "--concurrency", "1",
                    "--prefetch-multiplier", "1", "-O", "fair", "-Q", self.queue,
                    "--hostname", f"bench{n}-{os.getpid()}@{socket.gethostname()}",
                    "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                    "--without-heartbeat",
                ]  # fmt: skip
                with open(log, "wb") as out:
                    self.processes.append(
                        subprocess.Popen(
                            argv,
                            cwd=settings.BASE_DIR,
                            env=self.env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            self._wait_ready(60)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def output(self, n: int) -> str:
        return self.logs[n].read_text(errors="replace")

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for n, process in enumerate(self.processes):
            while " ready." not in self.output(n):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise WorkerFailed(f"worker {n} did not start:\n{self.output(n)[-2000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        cpu = 0.0
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            cpu += self._reap(process)
        if self.processes and self.cpu_s is None:
            self.cpu_s = round(cpu, 2)

    @staticmethod
    def _reap(process: subprocess.Popen, grace_s: float = 15) -> float:
        """Wait for the process (SIGKILL after `grace_s`); its CPU seconds."""
        deadline = time.monotonic() + grace_s
        while True:
            try:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped
                return 0.0
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                return usage.ru_utime + usage.ru_stime
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)


def post_batch(url: str, secret: str, data: bytes, timeout: float = 60) -> tuple[dict | None, str]:
    """POST a JSON batch with a runtime API key, as a production client does: (the answer, or
    None when the request failed; what went wrong, or "")."""
    import json
    import urllib.error

    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read()), ""
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}: {exc.read()[:300]!r}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, repr(exc)
