"""The container's start commands, run for real outside a container: bin/migrate, bin/web
(gunicorn), bin/worker and bin/beat against PostgreSQL and Redis in production mode."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def production_env(postgres_tx, redis_url, tmp_path):
    db = settings.DATABASES["default"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "DEBUG": "0",
            "SECRET_KEY": "x" * 50,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": redis_url,
            "AIRLOCK_DATA_DIR": str(tmp_path),
            "METRICS_TOKEN": "metrics-token-for-tests",
            "GUNICORN_WORKERS": "2",
        }
    )
    return env


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
    try:
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
            assert proc.poll() is None, f"{name} exited: {proc.stdout.read().decode()[-2000:]}"
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
