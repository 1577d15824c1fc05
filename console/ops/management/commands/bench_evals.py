"""`manage.py bench_evals [--items 1000] [--latency-ms 200] [--concurrency 50]`: eval throughput.

1. Ensures (idempotently) the application `bench-evals`, the engineer `bench-evals`, a published
   golden set `bench-<items>` of --items deterministic items, the prompt `bench-answer` and the
   model config `bench-model` (pointing at the simulator's --port).
2. Starts the OpenAI-compatible simulator in this process with --latency-ms per call.
3. Launches a run (services.launch_run, without enqueueing it: no worker takes part) and times
   services.execute_run on it — the same code a Celery worker runs.

Prints ONE JSON line on stdout: items, latency_ms, concurrency, wall_s, ideal_s
(items × latency / concurrency), ratio (wall / ideal), items_per_s and the database vendor,
plus the run id, errors and the per-call latency the run measured. Progress goes to stderr.
--profile adds a cProfile of the run's own thread (the loop that stores results) to stderr;
--tuned-simulator serves with TCP_NODELAY and a real listen backlog (a diagnostic: see its help).

--peer promptfoo also evaluates the same items with the same prompt against the same simulator
(its own process, same latency) at the same concurrency with promptfoo (console/ops/
promptfoo_peer.py), and adds `peer` (its wall time and ratio, the same for its own evaluation
time without node's start-up, CPU, peak RSS, items passed) and `airlock_vs_peer` (Airlock's wall
time over promptfoo's) to the JSON line, whose `peak_rss_mb` is the bench process's own.
promptfoo is installed with npm into a temporary folder (or --promptfoo-prefix, reused) and runs
in a network namespace whose only route is loopback. Without node and npm, or without a
namespace to run it in, `peer` says why it was skipped instead.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from console.accounts.roles import Role
from console.accounts.services import grant_role
from console.audit.services import SYSTEM
from console.datasets import services as datasets
from console.datasets.models import Dataset
from console.evals import services
from console.evals.models import EvalResult, EvalRun
from console.evals.simulator import Faults, make_server
from console.ops import promptfoo_peer
from console.ops.processes import CeleryWorkers
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG, PROMPT
from console.registry.models import Application

APP = "bench-evals"
USER = "bench-evals"
PROMPT_KEY = "bench-answer"
MODEL_KEY = "bench-model"
TOPICS = ("refund", "shipping", "account", "payment", "delivery", "warranty", "exchange", "gift")
PROMPT_CONTENT = {
    "system": (
        "Answer only from the context below and cite the source id of every fact you use.\n"
        'If the context does not contain the answer, say "I don\'t know".\n\nContext:\n'
        "{{ context }}"
    ),
    "user": "{{ question }}",
    "variables": ["context", "question"],
    "params": {},
}


def bench_item(n: int) -> dict:
    topic = TOPICS[n % len(TOPICS)]
    days = 10 + n % 50
    return {
        "id": f"e{n:06d}",
        "question": f"How many days is the {topic} window for order {n}?",
        "expected_contains": [f"{days} days"],
        "expected_sources": [f"{topic}-policy"],
        "variables": {
            "context": (
                f"[{topic}-policy] The {topic} window for order {n} is {days} days.\n"
                f"[store-hours] Stores open at nine and close at six."
            )
        },
        "tags": [topic],
    }


def model_content(port: int, concurrency: int) -> dict:
    return {
        "provider": "openai-compatible",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "model": "sim-small",
        "api_key_env": "",  # the simulator needs no key
        "temperature": 0.0,
        "max_tokens": 256,
        "timeout_s": 30,
        "max_retries": 2,
        "max_concurrency": max(1, min(concurrency, 512)),
        "price_input_per_1m": 0.15,
        "price_cached_input_per_1m": 0.075,
        "price_output_per_1m": 0.60,
    }


class ExternalSimulator:
    """`manage.py llm_simulator` in a child process, with the in-process server's stop calls."""

    def __init__(self, port: int, latency_ms: float):
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "llm_simulator", "--port", str(port),
             "--latency-ms", str(latency_ms)],
            cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CommandError(f"simulator exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.shutdown()
        raise CommandError(f"simulator did not listen on port {port}")

    cpu_s: float | None = None  # the simulator's own CPU, once it has been shut down

    def shutdown(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def reap(self) -> None:
        """Stop the simulator and read the CPU it used (user + system)."""
        self.process.terminate()
        try:
            _pid, status, usage = os.wait4(self.process.pid, 0)
        except ChildProcessError:  # already reaped
            return
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s = round(usage.ru_utime + usage.ru_stime, 2)

    def server_close(self) -> None:
        pass


class Command(BaseCommand):
    help = "Benchmark eval execution against an in-process simulator; prints one JSON line."

    def add_arguments(self, parser):
        parser.add_argument("--items", type=int, default=1000)
        parser.add_argument("--latency-ms", type=float, default=200.0)
        parser.add_argument("--concurrency", type=int, default=50)
        parser.add_argument(
            "--port", type=int, default=8199, help="simulator port (fixed: it is in the config)"
        )
        parser.add_argument(
            "--tuned-simulator",
            action="store_true",
            help=(
                "diagnostic: serve with TCP_NODELAY and a 256-connection listen backlog, to "
                "measure what the simulator's own socket settings cost"
            ),
        )
        parser.add_argument(
            "--external-simulator",
            action="store_true",
            help=(
                "serve the simulator from its own process (manage.py llm_simulator), as a real "
                "provider would be: the run's CPU is then Airlock's alone"
            ),
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=0,
            help=(
                "run on this many Celery worker processes (bin/worker's threads pool, one task "
                "each, on a queue of the bench's own) instead of in this process; a run past "
                "AIRLOCK_EVAL_SHARD_CONCURRENCY calls is sharded across them"
            ),
        )
        parser.add_argument(
            "--profile", action="store_true", help="cProfile the run's own thread to stderr"
        )
        parser.add_argument(
            "--peer",
            choices=["promptfoo"],
            help=f"also run promptfoo {promptfoo_peer.VERSION} on the same items and simulator",
        )
        parser.add_argument(
            "--promptfoo-prefix",
            help=(
                "an npm prefix where promptfoo is (or is to be) installed, kept afterwards; "
                "default: a temporary folder, removed afterwards"
            ),
        )

    def log(self, message: str) -> None:
        self.stderr.write(f"bench_evals: {message}")

    def handle(self, *args, **o):
        items, latency_ms, concurrency = o["items"], o["latency_ms"], o["concurrency"]
        if items < 1 or concurrency < 1 or latency_ms < 0:
            raise CommandError("--items and --concurrency must be positive, --latency-ms >= 0")
        if concurrency > services.MAX_CONCURRENCY:
            raise CommandError(f"--concurrency is at most {services.MAX_CONCURRENCY}")
        if o["workers"] < 0 or (o["workers"] and o["profile"]):
            raise CommandError("--workers must be positive, and cannot be profiled (--profile)")
        if o["workers"] and settings.CELERY_BROKER_URL.startswith("memory"):
            raise CommandError("--workers needs a broker other processes share (CELERY_BROKER_URL)")
        # The simulator this command starts is the one loopback destination it may call.
        allowed = f"127.0.0.1:{o['port']}"
        if allowed not in settings.AIRLOCK_EGRESS_ALLOW:
            settings.AIRLOCK_EGRESS_ALLOW = [*settings.AIRLOCK_EGRESS_ALLOW, allowed]
        user, application = self._actors()
        version = self._golden_set(user, application, items)
        prompt, model = self._targets(user, application, o["port"], concurrency)

        if o["external_simulator"]:
            server = ExternalSimulator(o["port"], latency_ms)
        else:
            try:
                server = make_server("127.0.0.1", o["port"], Faults(latency_ms=latency_ms))
            except OSError as exc:
                raise CommandError(f"port {o['port']} is not free ({exc}); pass --port") from None
        if o["tuned_simulator"] and not o["external_simulator"]:
            # make_server() sets request_queue_size after the socket is already listening
            # (backlog 5), and the handler writes headers and body separately with Nagle on.
            server.socket.listen(256)
            server.RequestHandlerClass.disable_nagle_algorithm = True  # this server's class only
        if not o["external_simulator"]:
            threading.Thread(target=server.serve_forever, daemon=True, name="bench-sim").start()
        try:
            run = self._launch(user, application, version, prompt, model, concurrency)
            self.log(f"run #{run.pk}: {items} items, {latency_ms:g} ms, concurrency {concurrency}")
            profiler = cProfile.Profile() if o["profile"] else None
            workers = None
            if o["workers"]:
                workers = self._on_workers(run, o["workers"], items * latency_ms / concurrency)
                status, wall, cpu = workers.status, workers.wall_s, workers.bench_cpu_s
            else:
                cpu_started = time.process_time()
                started = time.perf_counter()
                if profiler:
                    profiler.enable()
                owner = f"bench_evals:{socket.gethostname()}"
                status = services.execute_run(run.pk, owner=owner).status
                if profiler:
                    profiler.disable()
                wall = time.perf_counter() - started
                # Every thread of this process: the simulator's too, unless it runs on its own.
                cpu = time.process_time() - cpu_started
        finally:
            if isinstance(server, ExternalSimulator):
                server.reap()
            else:
                server.shutdown()
            server.server_close()

        run.refresh_from_db()
        stored = EvalResult.objects.filter(run=run).count()
        if status != EvalRun.Status.COMPLETED or stored != items:
            raise CommandError(f"run #{run.pk} ended {status} with {stored}/{items} items")
        ideal = items * latency_ms / 1000 / concurrency
        peer = None
        if o["peer"]:
            peer = self._promptfoo(o, items, latency_ms, concurrency)
            for key, ratio in (("wall_s", "ratio"), ("eval_s", "eval_ratio")):
                if peer.get(key) and ideal:
                    peer[ratio] = round(peer[key] / ideal, 3)
        if profiler:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
            self.stderr.write(text.getvalue())
        self.stdout.write(
            json.dumps(
                {
                    "bench": "evals",
                    "items": items,
                    "latency_ms": latency_ms,
                    "concurrency": concurrency,
                    "wall_s": round(wall, 3),
                    "ideal_s": round(ideal, 3),
                    "ratio": round(wall / ideal, 3) if ideal else None,
                    "items_per_s": round(items / wall, 1),
                    "db": connection.vendor,
                    "run": run.pk,
                    "errors": run.error_items,
                    "call_p50_ms": run.metrics.get("latency_p50_ms"),
                    "call_p99_ms": run.metrics.get("latency_p99_ms"),
                    "process_cpu_s": round(cpu, 2),
                    "shards": run.shards,
                    **(
                        {"workers": o["workers"], "workers_cpu_s": workers.cpu_s}
                        if workers is not None
                        else {}
                    ),
                    "peak_rss_mb": promptfoo_peer.peak_rss_mb(),
                    "tuned_simulator": o["tuned_simulator"],
                    "simulator": "own process" if o["external_simulator"] else "in process",
                    **(
                        {"simulator_cpu_s": server.cpu_s}
                        if isinstance(server, ExternalSimulator)
                        else {}
                    ),
                    **(
                        {
                            "peer": peer,
                            "airlock_vs_peer": (
                                round(wall / peer["wall_s"], 3) if peer.get("wall_s") else None
                            ),
                        }
                        if peer is not None
                        else {}
                    ),
                }
            )
        )

    def _on_workers(self, run: EvalRun, count: int, ideal_ms: float) -> SimpleNamespace:
        """Start `count` Celery worker processes on a queue of their own, then time the run
        from its message being published to its being finalised. Their start-up is not timed."""
        queue = f"bench-evals-{os.getpid()}"
        timeout = max(120.0, 20 * ideal_ms / 1000)
        with tempfile.TemporaryDirectory(prefix="airlock-bench-workers-") as folder:
            pool = CeleryWorkers(
                count,
                queue,
                Path(folder),
                {"AIRLOCK_EGRESS_ALLOW": ",".join(settings.AIRLOCK_EGRESS_ALLOW)},
            )
            with pool:
                self.log(f"{count} worker process(es) ready on queue {queue}")
                cpu_started = time.process_time()
                started = time.perf_counter()
                services.enqueue(run, queue=queue)
                deadline = time.monotonic() + timeout
                while True:
                    status = EvalRun.objects.filter(pk=run.pk).values_list("status", flat=True)
                    status = status.get()
                    if status not in EvalRun.ACTIVE:
                        break
                    if time.monotonic() > deadline:
                        logs = "\n".join(pool.output(n)[-1500:] for n in range(count))
                        raise CommandError(
                            f"run #{run.pk} still {status} after {timeout:g}s:\n{logs}"
                        )
                    time.sleep(0.02)
                wall = time.perf_counter() - started
                cpu = time.process_time() - cpu_started
        return SimpleNamespace(status=status, wall_s=wall, bench_cpu_s=cpu, cpu_s=pool.cpu_s)

    def _promptfoo(self, o, items: int, latency_ms: float, concurrency: int) -> dict:
        """promptfoo's figures for the same run, or {"skipped": why}."""
        missing = [tool for tool in ("node", "npm", "unshare", "ip") if not shutil.which(tool)]
        if missing:
            return {"tool": "promptfoo", "skipped": f"{', '.join(missing)} not found"}
        if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
            return {
                "tool": "promptfoo",
                "skipped": "no network namespace (unshare -rn) to keep it on loopback",
            }
        keep = o["promptfoo_prefix"]
        prefix = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="airlock-promptfoo-"))
        try:
            binary = prefix / "node_modules" / ".bin" / "promptfoo"
            installed = prefix / "node_modules" / "promptfoo" / "package.json"
            if not installed.exists() or (
                json.loads(installed.read_text()).get("version") != promptfoo_peer.VERSION
            ):
                self.log(f"installing promptfoo {promptfoo_peer.VERSION} into {prefix}")
                done = subprocess.run(
                    ["npm", "install", "--prefix", str(prefix),
                     f"promptfoo@{promptfoo_peer.VERSION}", "--no-audit", "--no-fund"],
                    capture_output=True, env={**os.environ, **promptfoo_peer.QUIET_ENV},
                )  # fmt: skip
                if done.returncode != 0:
                    tail = done.stderr.decode(errors="replace")[-300:]
                    return {"tool": "promptfoo", "skipped": f"npm install failed: {tail}"}
            work = prefix / "bench"
            work.mkdir(exist_ok=True)
            config = promptfoo_peer.promptfoo_config(
                port=o["port"],
                prompt=PROMPT_CONTENT,
                model=model_content(o["port"], concurrency),
                items=[bench_item(n) for n in range(1, items + 1)],
                concurrency=concurrency,
            )
            (work / "promptfooconfig.json").write_text(json.dumps(config))
            spec = {
                "port": o["port"],
                "latency_ms": latency_ms,
                "concurrency": concurrency,
                "promptfoo": str(binary),
                "work": str(work),
                "base_dir": str(settings.BASE_DIR),
            }
            (work / "spec.json").write_text(json.dumps(spec))
            self.log(f"promptfoo: {items} items, concurrency {concurrency}, loopback only")
            done = subprocess.run(
                ["unshare", "-rn", sys.executable, "-m", "console.ops.promptfoo_peer",
                 str(work / "spec.json")],
                cwd=settings.BASE_DIR, capture_output=True,
            )  # fmt: skip
            if done.returncode != 0:
                raise CommandError(f"promptfoo peer failed: {done.stderr.decode()[-600:]}")
            return json.loads(done.stdout.decode().strip().splitlines()[-1])
        finally:
            if not keep:
                shutil.rmtree(prefix, ignore_errors=True)

    def _actors(self):
        user, created = get_user_model().objects.get_or_create(username=USER)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        application = Application.objects.filter(key=APP).first()
        if application is None:
            application = registry.create_application(
                actor=SYSTEM,
                key=APP,
                name="Bench: evals",
                description="Created by manage.py bench_evals.",
                environments=[{"key": "dev", "name": "dev"}],
            )
            grant_role(actor=SYSTEM, user=user, application=application, role=Role.ENGINEER)
        return user, application

    def _golden_set(self, user, application, items: int):
        key = f"bench-{items}"
        dataset = Dataset.objects.filter(application=application, key=key).first()
        if dataset is None:
            self.log(f"building golden set {key} ({items} items)")
            dataset = datasets.create_dataset(
                actor=user, application=application, key=key, name=f"Bench {items}"
            )
            data = "".join(json.dumps(bench_item(n)) + "\n" for n in range(1, items + 1))
            datasets.import_file(
                actor=user, dataset=dataset, data=data.encode(), filename=f"{key}.jsonl"
            )
        if not dataset.latest_number:
            datasets.publish(actor=user, dataset=dataset, message=f"{items} bench items")
            dataset.refresh_from_db()
        return dataset.versions.get(number=dataset.latest_number)

    def _targets(self, user, application, port: int, concurrency: int):
        def ensure(kind, key, content):
            head = kind.head.objects.filter(application=application, key=key).first()
            if head is None:
                return registry.create_head(
                    actor=user, kind=kind, application=application, key=key, name=key,
                    content=content, message="bench",
                ).version  # fmt: skip
            result = registry.save_head_version(
                actor=user, head=head, content=content, base_number=head.latest_number
            )
            return result.version

        prompt = ensure(PROMPT, PROMPT_KEY, PROMPT_CONTENT)
        model = ensure(MODEL_CONFIG, MODEL_KEY, model_content(port, concurrency))
        return prompt, model

    def _launch(self, user, application, version, prompt, model, concurrency):
        kwargs = {
            "actor": user,
            "application": application,
            "dataset_version": version,
            "prompt_version": prompt,
            "model_version": model,
            "gates": [],
            "concurrency": concurrency,
        }
        # Executed right here: keep launch_run from also queueing it for a Celery worker.
        with mock.patch.object(services, "enqueue", lambda *args, **kwargs: None):
            try:
                return services.launch_run(**kwargs)
            except services.DuplicateRun as exc:
                stale = exc.run
                self.log(f"cancelling run #{stale.pk}, left over from an interrupted bench")
                services.cancel_run(actor=user, run=stale)
                stale.refresh_from_db()
                # If it had started, let it see the cancel and wind down.
                if stale.active and services.execute_run(stale.pk, owner="bench").status == "busy":
                    raise CommandError(
                        f"run #{stale.pk} is being executed elsewhere; try again later"
                    ) from None
                return services.launch_run(**kwargs)
