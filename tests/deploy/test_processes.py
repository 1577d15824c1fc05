"""The container's start commands, run for real outside a container: bin/migrate, bin/web
(gunicorn), bin/worker and bin/beat against PostgreSQL and Redis in production mode."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management.base import CommandError

from console.ops import processes
from console.ops.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def production_env(postgres_tx, redis_url, tmp_path):
    return production_environment(redis_url, tmp_path)


def production_environment(redis_url: str, data_dir: Path) -> dict[str, str]:
    """The environment bin/* get in production mode, on the test database and broker."""
    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "DEBUG": "0",
            "SECRET_KEY": "x" * 50,
            "AIRLOCK_AUDIT_KEYS": "k1:" + "y" * 40,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": redis_url,
            "AIRLOCK_DATA_DIR": str(data_dir),
            "METRICS_TOKEN": "metrics-token-for-tests",
            "GUNICORN_WORKERS": "2",
            # Production reads its egress allowlist and provider keys like any setting.
            "AIRLOCK_EGRESS_ALLOW": "127.0.0.1:8100,api.openai.com",
            "AIRLOCK_PROVIDER_KEYS": "OPENAI_API_KEY@api.openai.com",
        }
    )
    return env


class Output:
    """Collects a process's output in a thread, so a chatty process never blocks on a full
    pipe, and lets the test wait for a line."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in iter(proc.stdout.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while needle not in self.text():
            if time.monotonic() > deadline:
                pytest.fail(f"never saw {needle!r} in:\n{self.text()[-3000:]}")
            time.sleep(0.2)


def wait_for(url: str, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextmanager
def running_web(env: dict[str, str]) -> Iterator[str]:
    """bin/web with `env` (on a free port) until the block ends: yields its base URL once
    /health answers, fails the test with the server's output if it never does, and stops it
    with SIGTERM as a container runtime would (console.ops.processes.running_web)."""
    try:
        with processes.running_web(env) as base:
            yield base
    except CommandError as exc:
        pytest.fail(str(exc))


def test_web_worker_and_beat_start_as_the_image_starts_them(production_env):
    port = free_port()
    env = {**production_env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    migrate = subprocess.run(
        ["bin/migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    procs = {
        name: subprocess.Popen(
            [f"bin/{name}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for name in ("web", "worker", "beat")
    }
    logs = {name: Output(proc) for name, proc in procs.items()}
    try:
        # Started means started: signal handlers are in place before SIGTERM is sent.
        logs["worker"].wait_for("ready", 90)
        logs["beat"].wait_for("Starting", 90)
        assert wait_for(f"http://127.0.0.1:{port}/health") == 200
        assert wait_for(f"http://127.0.0.1:{port}/ready") == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics",
            headers={"Authorization": "Bearer metrics-token-for-tests"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read().decode()
        assert "airlock_http_request_duration_seconds" in body
        assert "airlock_celery_queue_depth" in body
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited: {logs[name].text()[-2000:]}"
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"{name} did not stop within 40 s of SIGTERM")
    # Graceful shutdown: each process exits cleanly on SIGTERM.
    assert {name: proc.returncode for name, proc in procs.items()} == {
        "web": 0,
        "worker": 0,
        "beat": 0,
    }


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def test_web_serves_its_static_files_hashed_compressed_and_cached(production_env, tmp_path):
    """A fresh bin/web in production mode collects and serves the console's CSS, htmx and
    plotly.js itself: hashed names, a year's immutable caching, gzip or brotli on request."""
    static_root = tmp_path / "collected"
    env = {**production_env, "AIRLOCK_STATIC_ROOT": str(static_root)}
    with running_web(env) as base:
        status, _, body = get(f"{base}/accounts/login/")
        page = body.decode()
        css = re.search(r'href="(/static/css/airlock\.[0-9a-f]{12}\.css)"', page)
        htmx = re.search(r'src="(/static/django_htmx/htmx-2\.min\.[0-9a-f]{12}\.js)"', page)
        assert css and htmx, page[:1500]
        assert "plotly" not in page, "plotly.js is loaded only by pages that draw charts"
        manifest = json.loads((static_root / "staticfiles.json").read_text())["paths"]
        plotly = "/static/" + manifest["vendor/plotly/plotly-airlock.min.js"]
        for path in (css[1], htmx[1], plotly):
            status, headers, body = get(f"{base}{path}")
            assert status == 200 and body, path
            assert "immutable" in headers["cache-control"], headers
            max_age = int(re.search(r"max-age=(\d+)", headers["cache-control"])[1])
            assert max_age >= 60 * 60 * 24 * 365, headers["cache-control"]
            for encoding in ("gzip", "br"):
                status, headers, packed = get(f"{base}{path}", **{"Accept-Encoding": encoding})
                assert headers.get("content-encoding") == encoding, (path, headers)
                assert len(packed) < len(body) / 2, (path, encoding, len(packed), len(body))
        # An unhashed or unknown name is not served from the long-cached set.
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(f"{base}/static/css/nope.css")
        assert missing.value.code == 404
