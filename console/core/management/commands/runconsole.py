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

from console.registry.management.commands.seed_demo import DEMO_PASSWORD, DEMO_USERS


class Command(BaseCommand):
    help = "Run the web server and a Celery worker on the configured database and broker."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--simulator-port", type=int, default=8100)

    def handle(self, *args, host: str, port: int, simulator_port: int, **options):
        python = sys.executable
        env = os.environ.copy()
        # The web server and worker may call the simulator this command starts (DEBUG allows
        # only its default address by itself).
        simulator = f"127.0.0.1:{simulator_port}"
        allowed = [e for e in env.get("AIRLOCK_EGRESS_ALLOW", "").split(",") if e.strip()]
        if simulator not in allowed:
            env["AIRLOCK_EGRESS_ALLOW"] = ",".join([*allowed, simulator])
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
