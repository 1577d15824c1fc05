"""Benchmark the runtime API the way production serves it: gunicorn on loopback, a throwaway
database with 100 flags and 20 live prompts, and `wrk` at 64 connections.

Prints ONE JSON line: requests/s, p50 and p99 (ms) for `GET /api/v1/config` (200 and 304),
bulk OFREP (`POST /ofrep/v1/evaluate/flags`, a different targeting key on every request) and
the same server's `/health` as the ceiling, with each one's ratio to the ceiling.

Nothing touches your database: the command migrates and seeds a temporary SQLite file, starts
gunicorn (DEBUG off) against it, and removes it afterwards. Needs `wrk` (apt-get install wrk).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from console.config import SIMULATOR_ADDRESS, audit_keys_env

FLAGS = 100
PROMPTS = 20
# Production runs behind a TLS-terminating proxy that says so (SECURE_PROXY_SSL_HEADER); the
# load generator plays that proxy on loopback.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}

LUA_GET = """
wrk.method = "GET"
wrk.headers["X-Forwarded-Proto"] = "https"
wrk.headers["Authorization"] = "Bearer {key}"
{extra}
"""
LUA_BULK = """
wrk.method = "POST"
wrk.headers["X-Forwarded-Proto"] = "https"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = '{{"context":{{"targetingKey":"user-' .. (n % 10000) .. '","plan":"pro",' ..
    '"app_version":"2.5.0","country":"FR"}}}}'
  return wrk.format(nil, nil, nil, body)
end
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(value)
    number, unit = float(match.group(1)), match.group(2)
    return {"us": number / 1000, "ms": number, "s": number * 1000, "m": number * 60_000}[unit]


def parse_wrk(output: str) -> dict:
    """requests, seconds, p50/p99 (ms) and non-2xx/3xx answers from `wrk --latency`."""
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if not (done and p50 and p99):
        raise CommandError(f"could not read wrk's output:\n{output}")
    seconds = float(done.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[done.group(3)]
    return {
        "requests": int(done.group(1)),
        "seconds": seconds,
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "non_2xx_3xx": int(errors.group(1)) if errors else 0,
    }


def combine(rounds: list[dict]) -> dict:
    """One endpoint over several rounds: overall requests/s, the median round's p50 and the
    worst round's p99 (percentiles cannot be averaged; the worst is the honest summary)."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds) or 1.0
    p50s = sorted(r["p50_ms"] for r in rounds)
    result = {
        "rps": round(requests / seconds, 1),
        "p50_ms": round(p50s[len(p50s) // 2], 2),
        "p99_ms": round(max(r["p99_ms"] for r in rounds), 2),
    }
    errors = sum(r["non_2xx_3xx"] for r in rounds)
    if errors:
        result["non_2xx_3xx"] = errors
    return result


class Command(BaseCommand):
    help = "Load-test the runtime API under gunicorn with wrk; print one JSON line."

    def add_arguments(self, parser):
        parser.add_argument("--duration", type=int, default=20, help="seconds per endpoint")
        parser.add_argument(
            "--rounds",
            type=int,
            default=4,
            help="interleave the endpoints in this many rounds (fair under background load)",
        )
        parser.add_argument("--connections", type=int, default=64)
        parser.add_argument("--threads", type=int, default=2, help="wrk threads")
        parser.add_argument(
            "--workers", type=int, default=0, help="gunicorn workers (default: CPU count)"
        )
        parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
        # Internal: seed the temporary database (run in a child with its settings).
        parser.add_argument("--prepare", metavar="KEYFILE", help=argparse_hidden())

    def handle(self, *args, **options):
        if options["prepare"]:
            self._prepare(Path(options["prepare"]))
            return
        wrk = shutil.which("wrk")
        if wrk is None:
            raise CommandError(
                "wrk is not installed: bench_runtime drives the server with wrk. "
                "Install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`."
            )
        workers = options["workers"] or os.cpu_count() or 2
        folder = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
        env = self._child_env(folder)
        server = None
        try:
            self._run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env)
            key_file = folder / "key"
            self._run(
                [sys.executable, "manage.py", "bench_runtime", "--prepare", str(key_file)], env
            )
            key = key_file.read_text().strip()
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            log = open(folder / "gunicorn.log", "w")  # noqa: SIM115 - closed in finally
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "console.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    str(workers),
                    "--worker-class",
                    "sync",
                    "--backlog",
                    "2048",
                    "--log-level",
                    "warning",
                ],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=log,
            )
            self._wait_until_up(base, server)
            etag = self._warm(base, key, workers)
            scenarios = [
                ("health", "/health", LUA_GET.format(key=key, extra="")),
                ("config_200", "/api/v1/config", LUA_GET.format(key=key, extra="")),
                (
                    "config_304",
                    "/api/v1/config",
                    LUA_GET.format(key=key, extra=f"wrk.headers[\"If-None-Match\"] = '{etag}'"),
                ),
                ("ofrep_bulk", "/ofrep/v1/evaluate/flags", LUA_BULK.format(key=key)),
            ]
            rounds: dict[str, list[dict]] = {name: [] for name, _, _ in scenarios}
            slice_s = max(1, round(options["duration"] / max(1, options["rounds"])))
            for number in range(1, max(1, options["rounds"]) + 1):
                for name, path, lua in scenarios:
                    script = folder / f"{name}.lua"
                    script.write_text(lua)
                    self.stderr.write(f"bench_runtime: round {number}, {name} for {slice_s} s")
                    out = subprocess.run(
                        [
                            wrk,
                            f"-t{options['threads']}",
                            f"-c{options['connections']}",
                            f"-d{slice_s}s",
                            "--latency",
                            "--timeout",
                            "5s",
                            "-s",
                            str(script),
                            base + path,
                        ],
                        capture_output=True,
                        text=True,
                        timeout=slice_s + 60,
                        check=True,
                    )
                    rounds[name].append(parse_wrk(out.stdout))
            results = {name: combine(parts) for name, parts in rounds.items()}
            ceiling = results["health"]["rps"] or 1.0
            line = {
                "server": f"gunicorn, {workers} sync workers, 127.0.0.1",
                "load": f"wrk -t{options['threads']} -c{options['connections']}, "
                f"{slice_s * max(1, options['rounds'])} s per endpoint in "
                f"{max(1, options['rounds'])} interleaved rounds",
                "flags": FLAGS,
                "prompts": PROMPTS,
                "cache": settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1],
                **{
                    name: {
                        **r,
                        **({"ratio": round(r["rps"] / ceiling, 3)} if name != "health" else {}),
                    }
                    for name, r in results.items()
                },
            }
            self.stdout.write(json.dumps(line))
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
            if options["keep"]:
                self.stderr.write(f"bench_runtime: data kept in {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ the child processes

    def _child_env(self, folder: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW")}
        env.update(
            {
                "DEBUG": "0",
                "SECRET_KEY": secrets.token_urlsafe(48),
                "AIRLOCK_AUDIT_KEYS": audit_keys_env(settings.AIRLOCK_AUDIT_KEYS),
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "AIRLOCK_DATA_DIR": str(folder),
                "DATABASE_URL": f"sqlite:///{folder / 'bench.sqlite3'}",
                # last-used stamps are queued in-process: nothing else to start.
                "CELERY_BROKER_URL": "memory://",
                "DJANGO_SETTINGS_MODULE": "console.settings",
            }
        )
        return env

    def _run(self, command: list[str], env: dict) -> None:
        done = subprocess.run(
            command, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise CommandError(f"{' '.join(command[1:])} failed:\n{done.stderr[-3000:]}")

    def _wait_until_up(self, base: str, server: subprocess.Popen) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise CommandError("gunicorn exited during start-up; see its log with --keep")
            try:
                request = urllib.request.Request(base + "/health", headers=PROXY_HEADERS)
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise CommandError("gunicorn did not answer /health within 30 s")

    def _warm(self, base: str, key: str, workers: int) -> str:
        """Touch every worker once (snapshot and key cache) and return the config ETag."""
        etag = ""
        for _ in range(workers * 8):
            request = urllib.request.Request(
                base + "/api/v1/config", headers={"Authorization": f"Bearer {key}", **PROXY_HEADERS}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                body = json.loads(response.read())
                etag = response.headers["ETag"]
        if len(body["flags"]) != FLAGS or len(body["prompts"]) != PROMPTS:
            raise CommandError("the benchmark snapshot does not hold the expected data")
        return etag

    # ------------------------------------------------------------------ seeding (child)

    def _prepare(self, key_file: Path) -> None:
        from django.contrib.auth import get_user_model
        from django.db import transaction

        from console.accounts import keys
        from console.audit.services import SYSTEM
        from console.flags import services as flags
        from console.flags.models import FlagKind, FlagType
        from console.registry import services as registry
        from console.registry.kinds import MODEL_CONFIG, PROMPT

        if SIMULATOR_ADDRESS not in settings.AIRLOCK_EGRESS_ALLOW:
            settings.AIRLOCK_EGRESS_ALLOW = [*settings.AIRLOCK_EGRESS_ALLOW, SIMULATOR_ADDRESS]
        with transaction.atomic():
            user = get_user_model().objects.create_user("bench")
            app = registry.create_application(
                actor=SYSTEM,
                key="bench",
                name="Bench",
                environments=[{"key": "dev", "name": "dev"}, {"key": "prod", "name": "prod"}],
            )
            prod = app.environments.get(key="prod")
            for i in range(PROMPTS):
                content = {
                    "system": f"You are assistant {i}. Answer from the context.\n{{{{ context }}}}",
                    "user": "{{ question }}",
                    "variables": ["context", "question"],
                    "params": {"top_k": 5},
                }
                head = registry.create_head(
                    actor=user,
                    kind=PROMPT,
                    application=app,
                    key=f"prompt-{i:02d}",
                    name=f"Prompt {i}",
                    content=content,
                ).version.head
                registry.bind_version(actor=user, environment=prod, version=head.latest_version)
            model = registry.create_head(
                actor=user,
                kind=MODEL_CONFIG,
                application=app,
                key="main",
                name="Main",
                # The bundled simulator's address (allowed under DEBUG, and listed for this
                # process below): the bench serves the config, it never calls the model.
                content={
                    "provider": "openai-compatible",
                    "base_url": f"http://{SIMULATOR_ADDRESS}/v1",
                    "model": "gpt-4o-mini",
                    "api_key_env": "",
                    "temperature": 0.2,
                    "max_tokens": 512,
                    "timeout_s": 30,
                    "max_retries": 2,
                    "max_concurrency": 8,
                    "price_input_per_1m": 0.15,
                    "price_cached_input_per_1m": 0.075,
                    "price_output_per_1m": 0.6,
                },
            ).version
            registry.bind_version(actor=user, environment=prod, version=model)
            for i in range(FLAGS):
                shape = i % 4
                if shape == 0:  # a kill switch, on
                    flag = flags.create_flag(
                        actor=user,
                        application=app,
                        key=f"switch-{i}",
                        name=f"Switch {i}",
                        flag_type=FlagType.BOOLEAN,
                        kind=FlagKind.KILL_SWITCH,
                    )
                    content = {"enabled": True, "rules": [], "default": {"variant": "on"}}
                elif shape == 1:  # a percentage rollout
                    flag = flags.create_flag(
                        actor=user,
                        application=app,
                        key=f"rollout-{i}",
                        name=f"Rollout {i}",
                        flag_type=FlagType.BOOLEAN,
                    )
                    content = {
                        "enabled": True,
                        "rules": [],
                        "default": {
                            "rollout": [
                                {"variant": "on", "weight": 25},
                                {"variant": "off", "weight": 75},
                            ]
                        },
                    }
                else:  # string flags with targeting rules, then a split
                    flag = flags.create_flag(
                        actor=user,
                        application=app,
                        key=f"targeted-{i}",
                        name=f"Targeted {i}",
                        flag_type=FlagType.STRING,
                        kind=FlagKind.EXPERIMENT,
                        variants=[
                            {"key": "control", "value": "prompt-00@1"},
                            {"key": "treatment", "value": f"prompt-{i % PROMPTS:02d}@1"},
                        ],
                        off_variant="control",
                    )
                    content = {
                        "enabled": True,
                        "rules": [
                            {
                                "name": "Staff",
                                "conditions": [
                                    {
                                        "attribute": "email",
                                        "operator": "ends_with",
                                        "value": "@acme.com",
                                    }
                                ],
                                "serve": {"variant": "treatment"},
                            },
                            {
                                "name": "New app in FR",
                                "conditions": [
                                    {
                                        "attribute": "country",
                                        "operator": "in",
                                        "values": ["FR", "DE"],
                                    },
                                    {
                                        "attribute": "app_version",
                                        "operator": "semver_gte",
                                        "value": "2.4.0",
                                    },
                                ],
                                "serve": {
                                    "rollout": [
                                        {"variant": "control", "weight": 50},
                                        {"variant": "treatment", "weight": 50},
                                    ]
                                },
                            },
                        ],
                        "default": {"variant": "control"},
                    }
                flags.save_rules(
                    actor=user,
                    flag=flag,
                    environment=prod,
                    content=content,
                    base_number=1,
                    via_promotion=True,
                )
            issued = keys.create_api_key(
                actor=SYSTEM, environment=prod, name="bench", rate_limit_per_minute=10**9
            )
        key_file.write_text(issued.secret)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS
