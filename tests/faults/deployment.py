"""A private Airlock deployment for fault and soak runs: its own PostgreSQL cluster and Redis
server (so restarting them disturbs nothing else on the machine), migrated and seeded, with
gunicorn, a Celery worker and the LLM simulator started exactly as the image starts them
(bin/web, bin/worker)."""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.test_processes import ROOT, free_port
from tests.simulator_port import simulator_port as port_8100


def postgres_bin(name: str) -> str | None:
    """initdb/pg_ctl live outside PATH on Debian (/usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def missing_tools() -> list[str]:
    wanted = {"initdb": postgres_bin("initdb"), "pg_ctl": postgres_bin("pg_ctl")}
    wanted["redis-server"] = shutil.which("redis-server")
    return [name for name, path in wanted.items() if not path]


def wait_until(predicate, seconds: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


class PrivatePostgres:
    """A throwaway cluster on its own port. PostgreSQL refuses to run as root, so as root it
    runs as the `postgres` account."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_root else list(argv)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            self._cmd(
                postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "--no-sync", "-E", "UTF8",
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c max_connections=200"
        )
        subprocess.run(
            self._cmd(
                postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                "-w", "-t", "60", "start",
            ),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """fast: disconnect every client and shut down cleanly (what a restart does)."""
        subprocess.run(
            self._cmd(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"),
            check=False, capture_output=True, timeout=90,
        )  # fmt: skip

    def url(self, db: str = "airlock") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def query(self, sql: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(), connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()


class PrivateRedis:
    """redis-server with an append-only file, as docker-compose.yml runs it: a restart keeps
    queued and unacknowledged task messages."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--dir", str(self.root),
                "--logfile", str(self.root / "redis.log"),
            ],
        )  # fmt: skip
        wait_until(lambda: self._ping(), 15, "redis to answer PING")

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), 1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        """SHUTDOWN (the append-only file is flushed), as `docker restart` would."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class Output:
    """A process's output read in a thread (a full pipe never blocks it)."""

    def __init__(self, proc: subprocess.Popen, path: Path):
        self.path = path
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        with open(self.path, "ab") as out:
            for line in iter(proc.stdout.readline, b""):
                out.write(line)
                out.flush()

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""


@dataclass
class Deployment:
    root: Path
    postgres: PrivatePostgres
    redis: PrivateRedis
    web_port: int
    simulator_port: int
    env: dict[str, str]
    secret: str = ""
    refs: dict = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    outputs: dict[str, Output] = field(default_factory=dict)

    def manage(self, *argv: str, timeout: float = 300, **env) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "manage.py", *argv],
            cwd=ROOT,
            env={**self.env, "DEBUG": "1", **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"manage.py {' '.join(argv)}:\n{result.stderr[-3000:]}"
        return result

    def spawn(self, name: str, argv: list[str], **env) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        self.outputs[name] = Output(proc, self.root / f"{name}.log")
        return proc

    def log(self, name: str) -> str:
        return self.outputs[name].text()

    def http(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


SETUP = """
import json
from django.contrib.auth import get_user_model
from console.registry import services as registry
from console.registry.models import Application

app = Application.objects.get(key="support-bot")
admin = get_user_model().objects.get(username="admin")
model = app.model_configs.get(key="gpt-main")
content = dict(model.versions.get(number=model.latest_number).content)
content.update(base_url="{base_url}", max_concurrency=4)
saved = registry.save_head_version(
    actor=admin, head=model, content=content, message="fault run", base_number=model.latest_number
)
golden = app.datasets.get(key="support-golden")
print(json.dumps({{
    "model": f"gpt-main@{{saved.version.number}}",
    "dataset": f"support-golden@{{golden.latest_number}}",
    "prompt": "answer-question@3",
}}))
"""


@contextlib.contextmanager
def deployment(
    name: str, simulator_latency_ms: int = 0, web_workers: int = 2, **extra_env: str
) -> Iterator[Deployment]:
    """Build, start and (always) tear down a private deployment; its logs are kept under
    test-artifacts/<name>-logs/."""
    root = Path(tempfile.mkdtemp(prefix=f"airlock-{name}-"))
    root.chmod(0o755)  # the postgres account must reach its data folder inside
    postgres = PrivatePostgres(root / "postgres")
    redis = PrivateRedis(root / "redis")
    web_port, simulator_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "DEBUG": "0",
            "SECRET_KEY": "fault-run-" + "x" * 40,
            "AIRLOCK_AUDIT_KEYS": "fault-run:" + "y" * 40,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "DATABASE_URL": postgres.url(),
            "CELERY_BROKER_URL": redis.url(0),
            "CACHE_URL": redis.url(1),
            "AIRLOCK_DATA_DIR": str(root / "var"),
            "GUNICORN_BIND": f"127.0.0.1:{web_port}",
            "GUNICORN_WORKERS": str(web_workers),
            "AIRLOCK_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            # The one loopback destination this deployment's model configs call.
            "AIRLOCK_EGRESS_ALLOW": f"127.0.0.1:{simulator_port}",
            **extra_env,
        }
    )
    d = Deployment(root, postgres, redis, web_port, simulator_port, env)
    try:
        postgres.init()
        postgres.start()
        subprocess.run(
            [postgres_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(postgres.port),
             "-U", "postgres", "airlock"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        redis.start()
        d.spawn(
            "simulator",
            [sys.executable, "manage.py", "llm_simulator", "--port", str(simulator_port),
             "--latency-ms", str(simulator_latency_ms)],
            DEBUG="1",
        )  # fmt: skip
        d.manage("migrate", "--noinput")
        with port_8100():  # seed_demo may serve 127.0.0.1:8100
            d.manage("seed_demo")
        setup = d.manage(
            "shell", "-c", SETUP.format(base_url=f"http://127.0.0.1:{simulator_port}/v1")
        )
        d.refs = json.loads(setup.stdout.strip().splitlines()[-1])
        key = d.manage(
            "create_api_key", "support-bot", "prod", "fault-run",
            "--scope", "config:read", "--scope", "usage:write", "--rate-limit", "1000000",
        )  # fmt: skip
        d.secret = key.stdout.strip().splitlines()[-1]
        d.spawn("web", ["bin/web"])
        d.spawn("worker", ["bin/worker"])
        wait_until(lambda: _status(d, "/ready") == 200, 60, "web /ready")
        wait_until(lambda: " ready." in d.log("worker"), 60, "the worker")
        yield d
    finally:
        d.stop_all()
        redis.stop()
        postgres.stop("immediate")
        # Keep every process's log for the CI artifacts (and whoever reads a failure).
        logs = ROOT / "test-artifacts" / f"{name}-logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True, exist_ok=True)
        for path in [*root.glob("*.log"), postgres.log, redis.root / "redis.log"]:
            if path.exists():
                shutil.copy(path, logs / path.name)
        shutil.rmtree(root, ignore_errors=True)


def call(conn_box: list, d, method: str, path: str, body: bytes | None, headers: dict):
    """One request on a kept-alive connection; a broken connection is replaced."""
    for _ in range(2):
        if conn_box[0] is None:
            conn_box[0] = d.http()
        try:
            conn_box[0].request(method, path, body=body, headers=headers)
            response = conn_box[0].getresponse()
            payload = response.read()
            return response.status, payload
        except (OSError, ConnectionError, TimeoutError):
            conn_box[0].close()
            conn_box[0] = None
    return "connection", b""


def _status(d: Deployment, path: str) -> int:
    conn = d.http()
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()
