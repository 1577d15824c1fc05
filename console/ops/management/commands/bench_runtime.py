"""Benchmark the runtime API the way production serves it: `bin/web` (gunicorn, gthread
workers, DEBUG off) on loopback, a throwaway database with 100 flags and 20 live prompts, and
`wrk` at 64 connections.

Prints ONE JSON line: requests/s, p50 and p99 (ms) and server CPU per request (ms, read from
/proc for the server's processes) for `GET /api/v1/config` (200 and 304), bulk OFREP
(`POST /ofrep/v1/evaluate/flags`, a different targeting key on every request) and the same
server's `/health` as the ceiling, with each one's ratio to the ceiling.

`--peer unleash` benchmarks Unleash (unleash-server 7.5.1, installed with npm into a temporary
folder, telemetry and version checks off, its own PostgreSQL database) seeded with the same
number of flags, interleaved with Airlock round by round on the same endpoints' equivalents
(client features 200/304, the frontend API's bulk evaluation), and adds both servers' figures
and Airlock/Unleash ratios to the line. Without node and npm (or without PostgreSQL) the line
says the peer was skipped and why.

Nothing touches your data: with DATABASE_URL on PostgreSQL the command creates its own
databases on that server (and drops them afterwards); otherwise a temporary SQLite file. It
uses CACHE_URL's Redis when set (rate limits shared between workers, as in production), under
a key id no real key has. Needs `wrk` (apt-get install wrk).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from console.config import SIMULATOR_ADDRESS, audit_keys_env
from console.ops.processes import free_port

FLAGS = 100
PROMPTS = 20
SCENARIOS = ("config_200", "config_304", "ofrep_bulk")
# Production runs behind a TLS-terminating proxy that says so (SECURE_PROXY_SSL_HEADER); the
# load generator plays that proxy on loopback.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}
UNLEASH_PACKAGE = "unleash-server@7.5.1"
# Unleash phones home unless told not to: version checks, telemetry, the package's analytics.
UNLEASH_QUIET = {
    "CHECK_VERSION": "false",
    "SEND_TELEMETRY": "false",
    "SCARF_ANALYTICS": "false",
    "DO_NOT_TRACK": "1",
    "npm_config_update_notifier": "false",
    "npm_config_fund": "false",
    "npm_config_audit": "false",
}

LUA_GET = """
wrk.method = "GET"
wrk.headers["X-Forwarded-Proto"] = "https"
wrk.headers["Authorization"] = "{auth}"
{extra}
"""
LUA_BULK = """
wrk.method = "POST"
wrk.headers["X-Forwarded-Proto"] = "https"
wrk.headers["Authorization"] = "{auth}"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = '{{"context":{{"targetingKey":"user-' .. (n % 10000) .. '","plan":"pro",' ..
    '"app_version":"2.5.0","country":"FR"}}}}'
  return wrk.format(nil, nil, nil, body)
end
"""
# The same context in the shape Unleash's frontend API takes.
LUA_UNLEASH_BULK = """
wrk.method = "POST"
wrk.headers["Authorization"] = "{auth}"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = '{{"context":{{"userId":"user-' .. (n % 10000) .. '","properties":' ..
    '{{"plan":"pro","app_version":"2.5.0","country":"FR"}}}}}}'
  return wrk.format(nil, nil, nil, body)
end
"""


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
    worst round's p99 (percentiles cannot be averaged; the worst is the honest summary), and
    the server's CPU per request over all rounds when it was measured."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds) or 1.0
    p50s = sorted(r["p50_ms"] for r in rounds)
    result = {
        "rps": round(requests / seconds, 1),
        "p50_ms": round(p50s[len(p50s) // 2], 2),
        "p99_ms": round(max(r["p99_ms"] for r in rounds), 2),
    }
    if all("cpu_s" in r for r in rounds) and requests:
        result["cpu_ms_per_request"] = round(1000 * sum(r["cpu_s"] for r in rounds) / requests, 4)
    errors = sum(r["non_2xx_3xx"] for r in rounds)
    if errors:
        result["non_2xx_3xx"] = errors
    return result


def ratios(ours: dict, theirs: dict) -> dict:
    """Airlock / peer per scenario: throughput (higher is better for Airlock) and server CPU
    per request (lower is better for Airlock)."""
    out = {}
    for name in SCENARIOS:
        a, b = ours.get(name), theirs.get(name)
        if not a or not b:
            continue
        entry = {"throughput": round(a["rps"] / b["rps"], 3) if b["rps"] else None}
        if a.get("cpu_ms_per_request") and b.get("cpu_ms_per_request"):
            entry["cpu_per_request"] = round(a["cpu_ms_per_request"] / b["cpu_ms_per_request"], 3)
        out[name] = entry
    return out


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree_cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds of a process and all its descendants, from /proc/*/stat."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name is in parentheses and may hold spaces: split after its last ')'.
        fields = text[text.rindex(")") + 2 :].split()
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        ticks[child] = int(fields[11]) + int(fields[12])  # utime, stime
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += ticks.get(current, 0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total / _CLOCK_TICKS


@dataclass
class Target:
    """One server under test: where it listens, the process tree to charge CPU to, and its
    wrk scripts per scenario (path, Lua)."""

    name: str
    base: str
    pid: int
    scenarios: dict[str, tuple[str, str]]
    rounds: dict[str, list[dict]] = field(default_factory=dict)


def _request(url: str, headers: dict, data: bytes | None = None, method: str | None = None):
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


class Command(BaseCommand):
    help = "Load-test the runtime API under bin/web with wrk (optionally against Unleash)."

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
        parser.add_argument(
            "--peer",
            choices=["none", "unleash"],
            default="none",
            help="also benchmark this server, interleaved, and report Airlock/peer ratios",
        )
        parser.add_argument(
            "--peer-dir",
            default="",
            help="reuse (or create) this folder for the peer's npm install instead of a "
            "temporary one",
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
        suffix = secrets.token_hex(4)
        databases: list[str] = []  # PostgreSQL databases this run created, dropped at the end
        processes: list[subprocess.Popen] = []
        try:
            database_url = self._database(folder, f"airlock_bench_{suffix}", databases)
            env = self._child_env(folder, database_url)
            self._run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env)
            key_file = folder / "key"
            self._run(
                [sys.executable, "manage.py", "bench_runtime", "--prepare", str(key_file)], env
            )
            key = key_file.read_text().strip()
            airlock = self._start_airlock(folder, env, workers, key, processes)
            targets = [airlock]
            peer: dict = {"name": "none"}
            if options["peer"] == "unleash":
                peer, unleash = self._start_unleash(folder, options, suffix, databases, processes)
                if unleash is not None:
                    targets.append(unleash)
            slice_s = max(1, round(options["duration"] / max(1, options["rounds"])))
            for number in range(1, max(1, options["rounds"]) + 1):
                for name in ("health", *SCENARIOS):
                    # Alternate who goes first, so neither always runs right after the other.
                    order = targets if number % 2 else list(reversed(targets))
                    for target in order:
                        if name not in target.scenarios:
                            continue
                        self.stderr.write(
                            f"bench_runtime: round {number}, {target.name} {name} for {slice_s} s"
                        )
                        target.rounds.setdefault(name, []).append(
                            self._wrk(wrk, target, name, folder, options, slice_s)
                        )
            results = {name: combine(parts) for name, parts in airlock.rounds.items()}
            ceiling = results["health"]["rps"] or 1.0
            line = {
                "server": f"bin/web: gunicorn, {workers} gthread workers x "
                f"{env.get('GUNICORN_THREADS', '4')} threads, DEBUG off, 127.0.0.1",
                "load": f"wrk -t{options['threads']} -c{options['connections']}, "
                f"{slice_s * max(1, options['rounds'])} s per endpoint in "
                f"{max(1, options['rounds'])} interleaved rounds",
                "flags": FLAGS,
                "prompts": PROMPTS,
                "database": database_url.split(":", 1)[0],
                "cache": "redis" if env.get("CACHE_URL") else "per-process (no CACHE_URL)",
                **{
                    name: {
                        **r,
                        **({"ratio": round(r["rps"] / ceiling, 3)} if name != "health" else {}),
                    }
                    for name, r in results.items()
                },
                "peer": peer,
            }
            if len(targets) > 1:
                theirs = {name: combine(parts) for name, parts in targets[1].rounds.items()}
                peer.update(theirs)
                line["vs_peer"] = ratios(results, theirs)
            self.stdout.write(json.dumps(line))
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
            for name in databases:
                self._drop_database(name)
            if options["keep"]:
                self.stderr.write(f"bench_runtime: data kept in {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ measuring

    def _wrk(self, wrk: str, target: Target, name: str, folder: Path, options, slice_s) -> dict:
        path, lua = target.scenarios[name]
        script = folder / f"{target.name}-{name}.lua"
        script.write_text(lua)
        cpu_before = process_tree_cpu_seconds(target.pid)
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
                target.base + path,
            ],
            capture_output=True,
            text=True,
            timeout=slice_s + 60,
            check=True,
        )
        cpu = process_tree_cpu_seconds(target.pid) - cpu_before
        return {**parse_wrk(out.stdout), "cpu_s": cpu}

    # ------------------------------------------------------------------ Airlock

    def _start_airlock(self, folder, env, workers, key, processes) -> Target:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(folder / "web.log", "w")  # noqa: SIM115 - the process holds it until the end
        server = subprocess.Popen(
            ["bin/web", "--backlog", "2048", "--log-level", "warning"],
            cwd=settings.BASE_DIR,
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)},
            stdout=log,
            stderr=log,
        )
        processes.append(server)
        # bin/web collects static files first when they are missing: allow for it.
        self._wait_until_up(base + "/health", server, PROXY_HEADERS, 300, "bin/web")
        etag = self._warm(base, key, workers)
        auth = f"Bearer {key}"
        return Target(
            "airlock",
            base,
            server.pid,
            {
                "health": ("/health", LUA_GET.format(auth=auth, extra="")),
                "config_200": ("/api/v1/config", LUA_GET.format(auth=auth, extra="")),
                "config_304": (
                    "/api/v1/config",
                    LUA_GET.format(auth=auth, extra=f"wrk.headers[\"If-None-Match\"] = '{etag}'"),
                ),
                "ofrep_bulk": ("/ofrep/v1/evaluate/flags", LUA_BULK.format(auth=auth)),
            },
        )

    # ------------------------------------------------------------------ Unleash

    def _start_unleash(self, folder, options, suffix, databases, processes):
        """(what the JSON says about the peer, its Target or None when skipped)."""
        peer: dict = {"name": "unleash", "package": UNLEASH_PACKAGE}
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
            peer["skipped"] = f"{missing} not found on PATH: Unleash was not benchmarked"
            return peer, None
        admin = self._postgres_admin()
        if admin is None:
            peer["skipped"] = (
                "Unleash needs PostgreSQL: set DATABASE_URL to a PostgreSQL server to compare"
            )
            return peer, None
        install = Path(options["peer_dir"]) if options["peer_dir"] else folder / "unleash"
        server_js = install / "node_modules" / "unleash-server" / "dist" / "server.js"
        if not server_js.exists():
            install.mkdir(parents=True, exist_ok=True)
            if not (install / "package.json").exists():
                (install / "package.json").write_text('{"name": "bench-peer", "private": true}')
            self.stderr.write(f"bench_runtime: npm install {UNLEASH_PACKAGE} into {install}")
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", UNLEASH_PACKAGE],
                cwd=install,
                env={**os.environ, **UNLEASH_QUIET},
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if done.returncode != 0 or not server_js.exists():
                raise CommandError(f"npm install {UNLEASH_PACKAGE} failed:\n{done.stderr[-3000:]}")
        version = json.loads((server_js.parents[1] / "package.json").read_text())["version"]
        node_version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        peer["server"] = f"unleash-server {version}, node {node_version}, 127.0.0.1"
        name = f"unleash_bench_{suffix}"
        self._create_database(name)
        databases.append(name)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        tokens = {kind: f"{secrets.token_hex(16)}" for kind in ("admin", "backend", "frontend")}
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PG"))},
            **UNLEASH_QUIET,
            "DATABASE_URL": self._database_url(name),
            "DATABASE_SSL": "false",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            "NODE_ENV": "production",
            "LOG_LEVEL": "warn",
            "TZ": "UTC",
            "INIT_ADMIN_API_TOKENS": f"*:*.{tokens['admin']}",
            "INIT_BACKEND_API_TOKENS": f"default:development.{tokens['backend']}",
            "INIT_FRONTEND_API_TOKENS": f"default:development.{tokens['frontend']}",
        }
        log = open(folder / "unleash.log", "w")  # noqa: SIM115 - the process holds it until the end
        server = subprocess.Popen(
            [node, str(server_js)], cwd=install, env=env, stdout=log, stderr=log
        )
        processes.append(server)
        # The first start migrates its database: give it time.
        self._wait_until_up(base + "/health", server, {}, 300, "Unleash")
        admin_auth = f"*:*.{tokens['admin']}"
        self._seed_unleash(base, admin_auth)
        backend = f"default:development.{tokens['backend']}"
        frontend = f"default:development.{tokens['frontend']}"
        etag = self._warm_unleash(base, backend, frontend)
        return peer, Target(
            "unleash",
            base,
            server.pid,
            {
                "config_200": ("/api/client/features", LUA_GET.format(auth=backend, extra="")),
                "config_304": (
                    "/api/client/features",
                    LUA_GET.format(
                        auth=backend, extra=f"wrk.headers[\"If-None-Match\"] = '{etag}'"
                    ),
                ),
                "ofrep_bulk": ("/api/frontend", LUA_UNLEASH_BULK.format(auth=frontend)),
            },
        )

    def _seed_unleash(self, base: str, auth: str) -> None:
        """The same 100 flags in Unleash's terms: kill switches on, 25 % rollouts, and targeted
        flags (staff by e-mail suffix; FR/DE on app_version > 2.4.0 split 50/50 in variants)."""
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        project = f"{base}/api/admin/projects/default/features"

        def post(url: str, body: dict | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else None
            _request(url, headers, data=data, method="POST")

        for i in range(FLAGS):
            shape = i % 4
            name, kind = {
                0: (f"switch-{i}", "kill-switch"),
                1: (f"rollout-{i}", "release"),
            }.get(shape, (f"targeted-{i}", "experiment"))
            post(project, {"name": name, "type": kind})
            strategies = f"{project}/{name}/environments/development/strategies"
            rollout = {"stickiness": "default", "groupId": name}
            if shape == 0:
                post(
                    strategies,
                    {"name": "flexibleRollout", "parameters": {**rollout, "rollout": "100"}},
                )
            elif shape == 1:
                post(
                    strategies,
                    {"name": "flexibleRollout", "parameters": {**rollout, "rollout": "25"}},
                )
            else:
                variant = {"stickiness": "default", "weightType": "variable"}
                post(
                    strategies,
                    {
                        "name": "flexibleRollout",
                        "parameters": {**rollout, "rollout": "100"},
                        "constraints": [
                            {
                                "contextName": "email",
                                "operator": "STR_ENDS_WITH",
                                "values": ["@acme.com"],
                            }
                        ],
                        "variants": [{**variant, "name": "treatment", "weight": 1000}],
                    },
                )
                post(
                    strategies,
                    {
                        "name": "flexibleRollout",
                        "parameters": {**rollout, "rollout": "100"},
                        "constraints": [
                            {"contextName": "country", "operator": "IN", "values": ["FR", "DE"]},
                            {
                                "contextName": "app_version",
                                "operator": "SEMVER_GT",
                                "value": "2.4.0",
                            },
                        ],
                        "variants": [
                            {**variant, "name": "control", "weight": 500},
                            {**variant, "name": "treatment", "weight": 500},
                        ],
                    },
                )
            post(f"{project}/{name}/environments/development/on")

    def _warm_unleash(self, base: str, backend: str, frontend: str) -> str:
        """Wait until both APIs serve every seeded flag (the frontend API refreshes on a timer)
        and return the client features ETag."""
        deadline = time.monotonic() + 120
        body = json.dumps(
            {
                "context": {
                    "userId": "user-1",
                    "properties": {"app_version": "2.5.0", "country": "FR"},
                }
            }
        ).encode()
        while True:
            _, headers, content = _request(
                f"{base}/api/client/features", {"Authorization": backend}
            )
            features = json.loads(content)["features"]
            _, _, evaluated = _request(
                f"{base}/api/frontend",
                {"Authorization": frontend, "Content-Type": "application/json"},
                data=body,
                method="POST",
            )
            toggles = json.loads(evaluated)["toggles"]
            if len(features) == FLAGS and len(toggles) >= FLAGS // 2:
                return headers["ETag"]
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Unleash serves {len(features)} flags ({len(toggles)} evaluated on) "
                    f"after seeding {FLAGS}"
                )
            time.sleep(1)

    # ------------------------------------------------------------------ databases

    def _postgres_admin(self) -> str | None:
        """A libpq URL to the maintenance database of the PostgreSQL server DATABASE_URL
        names, or None when Airlock runs on SQLite."""
        db = settings.DATABASES["default"]
        if not db["ENGINE"].endswith("postgresql"):
            return None
        return self._database_url("postgres")

    def _database_url(self, name: str) -> str:
        db = settings.DATABASES["default"]
        user = quote(db.get("USER") or "postgres", safe="")
        password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or 5432
        return f"postgres://{user}{password}@{host}:{port}/{name}"

    def _database(self, folder: Path, name: str, databases: list[str]) -> str:
        if self._postgres_admin() is None:
            return f"sqlite:///{folder / 'bench.sqlite3'}"
        self._create_database(name)
        databases.append(name)
        return self._database_url(name)

    def _create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._postgres_admin(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self._postgres_admin(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        except psycopg.Error as exc:
            self.stderr.write(f"bench_runtime: could not drop database {name}: {exc}")

    # ------------------------------------------------------------------ the child processes

    def _child_env(self, folder: Path, database_url: str | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW")}
        venv_bin = str(Path(sys.executable).parent)
        env.update(
            {
                "DEBUG": "0",
                "SECRET_KEY": secrets.token_urlsafe(48),
                "AIRLOCK_AUDIT_KEYS": audit_keys_env(settings.AIRLOCK_AUDIT_KEYS),
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "AIRLOCK_DATA_DIR": str(folder),
                "DATABASE_URL": database_url or f"sqlite:///{folder / 'bench.sqlite3'}",
                # last-used stamps are queued in-process: nothing else to start.
                "CELERY_BROKER_URL": "memory://",
                "DJANGO_SETTINGS_MODULE": "console.settings",
                # As the image runs it: request metrics shared by the gunicorn workers.
                "PROMETHEUS_MULTIPROC_DIR": str(folder / "prometheus"),
                "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
            }
        )
        (folder / "prometheus").mkdir(exist_ok=True)
        return env

    def _run(self, command: list[str], env: dict) -> None:
        done = subprocess.run(
            command, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise CommandError(f"{' '.join(command[1:])} failed:\n{done.stderr[-3000:]}")

    def _wait_until_up(self, url, server, headers, seconds, what) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise CommandError(f"{what} exited during start-up; see its log with --keep")
            try:
                if _request(url, headers)[0] == 200:
                    return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.5)
        raise CommandError(f"{what} did not answer {url} within {seconds} s")

    def _warm(self, base: str, key: str, workers: int) -> str:
        """Touch every worker once (snapshot and key cache) and return the config ETag."""
        etag = ""
        for _ in range(workers * 8):
            _, headers, content = _request(
                base + "/api/v1/config", {"Authorization": f"Bearer {key}", **PROXY_HEADERS}
            )
            body = json.loads(content)
            etag = headers["ETag"]
        if len(body["flags"]) != FLAGS or len(body["prompts"]) != PROMPTS:
            raise CommandError("the benchmark snapshot does not hold the expected data")
        return etag

    # ------------------------------------------------------------------ seeding (child)

    def _prepare(self, key_file: Path) -> None:
        from django.contrib.auth import get_user_model
        from django.db import transaction

        from console.accounts import keys
        from console.accounts.models import ApiKey
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
            # Rate-limit counters in the shared cache are named by key id: give the bench's key
            # one no real key has, so a bench against a shared Redis counts nobody else's calls.
            ApiKey.objects.filter(pk=issued.api_key.pk).update(
                id=10**15 + secrets.randbelow(10**15)
            )
        key_file.write_text(issued.secret)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS
