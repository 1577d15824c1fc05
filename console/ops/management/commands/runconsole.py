"""Start the console's processes together for a laptop: web server, Celery worker, Celery beat
(usage rollups, budget checks, rollout steps) and the bundled LLM simulator the demo model
configs point at.

`make run` calls this after migrating and seeding. Ctrl-C stops every child; if one child
dies, the others are stopped too, so nothing is left running half-started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from console.ops.management.commands.seed_demo import (
    DEMO_PASSWORD,
    DEMO_USERS,
    SIMULATOR_HOST,
    SIMULATOR_PORT,
    follow_simulator,
)
from console.registry.models import Application


def prepare(simulator_port: int, stdout=None) -> dict[str, str]:
    """Make the demo call the simulator on `simulator_port` and return the environment of the
    processes runconsole starts: its egress allowlist names that address (DEBUG allows only the
    default 127.0.0.1:8100 by itself)."""
    env = os.environ.copy()
    simulator = f"{SIMULATOR_HOST}:{simulator_port}"
    allowed = [e.strip() for e in env.get("AIRLOCK_EGRESS_ALLOW", "").split(",") if e.strip()]
    if simulator not in allowed:
        env["AIRLOCK_EGRESS_ALLOW"] = ",".join([*allowed, simulator])
    # This process too: a model config's base_url must be allowed to be saved.
    if simulator not in settings.AIRLOCK_EGRESS_ALLOW:
        settings.AIRLOCK_EGRESS_ALLOW = [*settings.AIRLOCK_EGRESS_ALLOW, simulator]
    application = Application.objects.filter(key="support-bot").first()
    if application is not None:
        for version in follow_simulator(application, simulator_port):
            if stdout is not None:
                stdout.write(
                    f"{version.head.key}@{version.number} now calls the simulator on port "
                    f"{simulator_port} (bound in dev and staging)"
                )
    return env


class Command(BaseCommand):
    help = (
        "Start the console for a laptop: the web server, a Celery worker, Celery beat and the "
        "bundled LLM simulator, stopped together by Ctrl-C. The demo's model configs are moved "
        "to the simulator's port when it is not the one they call."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help="Address the web server listens on (default: %(default)s).",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=8000,
            help="Port of the web server, http://HOST:PORT/ (default: %(default)s).",
        )
        parser.add_argument(
            "--simulator-port",
            type=int,
            default=SIMULATOR_PORT,
            help="Port of the bundled OpenAI-compatible LLM simulator (default: %(default)s). "
            "The demo model configs are moved to it and the worker is allowed to call it.",
        )

    def handle(self, *args, host: str, port: int, simulator_port: int, **options):
        python = sys.executable
        env = prepare(simulator_port, stdout=self.stdout)
        children = {
            "web": [python, "manage.py", "runserver", f"{host}:{port}", "--noreload"],
            "worker": [
                python, "-m", "celery", "-A", "console", "worker",
                "--loglevel", "info", "--concurrency", "4", "--pool", "threads",
            ],
            "beat": [
                python, "-m", "celery", "-A", "console", "beat", "--loglevel", "warning",
                "--schedule", str(settings.AIRLOCK_DATA_DIR / "celerybeat-schedule"),
            ],
            "simulator": [
                python, "manage.py", "llm_simulator", "--port", str(simulator_port),
                "--latency-ms", "120", "--jitter-ms", "80",
            ],
        }  # fmt: skip
        procs = {name: subprocess.Popen(cmd, env=env) for name, cmd in children.items()}
        self.stdout.write(self.style.SUCCESS(f"\nAirlock is starting at http://{host}:{port}/"))
        self.stdout.write(f"Demo logins (password: {DEMO_PASSWORD}):")
        for username, role in DEMO_USERS.items():
            self.stdout.write(f"  {username:<10} {role}")
        self.stdout.write("Press Ctrl-C to stop.\n")

        def stop(*_):
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()

        signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
        try:
            while True:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with status {proc.returncode}; stopping")
                        stop()
                        sys.exit(proc.returncode or 1)
                time.sleep(0.5)
        except KeyboardInterrupt:
            stop()
