"""`manage.py bench_usage [--events 1000000] [--dashboard-events 10000000]`: usage at scale.

1. Ingestion: starts the production web server (gunicorn with `console.gunicorn_conf`, DEBUG=0)
   on a free loopback port against this database, then `--threads` client threads POST batches
   of `--batch` (500) fresh events to /api/v1/usage with a real `usage:write` key for
   `--ingest-seconds`; reports accepted events per second (server-side cost included). The
   events are drawn from a pool rendered before the clock starts (each request with fresh ids),
   so the client's own JSON building does not take the server's cores.
2. Rollup catch-up: COPYs `--events` raw events (one week, realistic dimensions, already
   "settled") straight into the table, then times `services.rollup()` passes until the watermark
   has caught up with all of them.
3. Dashboard: writes hourly rollups worth `--dashboard-events` events directly (60 days × 24 h ×
   54 dimension combinations — no raw rows), then times the cost dashboard and a CSV export
   through the Django test client: median of `--runs` runs, with the query count.

Meant for a dedicated benchmark database (it moves the global rollup watermark past the
ingestion phase's events). Prints ONE JSON line; progress goes to stderr.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import statistics
import sys
import threading
import time
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import Max
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.accounts.roles import Role
from console.accounts.services import grant_role
from console.api import auth
from console.audit.services import SYSTEM
from console.ops.processes import post_batch, production_env, running_web
from console.registry import services as registry
from console.registry.models import Application
from console.usage import selectors, services
from console.usage.models import LATENCY_BUCKETS_MS, RollupState, UsageEvent, UsageHourly

ROOT = Path(__file__).resolve().parents[4]
MODELS = (("gpt-4o-mini", "0.15", "0.075", "0.60"), ("gpt-4o", "2.50", "1.25", "10.00"))
PROMPTS = ("answer@2", "answer@3", "summarise@1")
FEATURES = ("answer", "summarise", "escalate")
POOL = 20_000  # distinct random events the ingestion client draws from
EVENT_COLUMNS = (
    "application_id", "environment_id", "event_id", "at", "received_at", "model", "model_config",
    "prompt_version", "feature", "variant", "input_tokens", "cached_tokens", "output_tokens",
    "latency_ms", "status", "cache_hit", "feedback", "user_hash", "source", "cost", "savings",
)  # fmt: skip


def log(message: str) -> None:
    print(f"[bench_usage] {message}", file=sys.stderr, flush=True)


class Command(BaseCommand):
    help = "Benchmark usage ingestion (HTTP), rollup catch-up and the cost dashboard."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=1_000_000)
        parser.add_argument("--dashboard-events", type=int, default=10_000_000)
        parser.add_argument("--ingest-seconds", type=float, default=15.0)
        parser.add_argument("--batch", type=int, default=500)
        parser.add_argument("--threads", type=int, default=4)
        parser.add_argument("--workers", type=int, default=None, help="gunicorn workers")
        parser.add_argument("--runs", type=int, default=7)
        parser.add_argument("--skip", action="append", default=[], help="ingest|rollup|dashboard")

    def handle(self, *args, **opts):
        if connection.vendor != "postgresql":
            raise CommandError("bench_usage runs on PostgreSQL (set DATABASE_URL=postgres://…)")
        result: dict = {
            "bench": "usage",
            "database": connection.vendor,
            "cpus": os.cpu_count(),
        }
        tag = uuid4().hex[:6]
        if "ingest" not in opts["skip"]:
            result["ingest"] = self.ingest(tag, opts)
        if "rollup" not in opts["skip"]:
            result["rollup"] = self.rollup(tag, opts["events"])
        if "dashboard" not in opts["skip"]:
            result["dashboard"] = self.dashboard(tag, opts["dashboard_events"], opts["runs"])
        result["aims"] = {
            "ingest_events_per_s>=20000": result.get("ingest", {}).get("events_per_s", 0) >= 20_000,
            "dashboard_ms<200": result.get("dashboard", {}).get("median_ms", 1e9) < 200,
        }
        self.stdout.write(json.dumps(result, sort_keys=True))

    # ------------------------------------------------------------------ setup

    def application(self, key: str) -> Application:
        app = registry.create_application(
            actor=SYSTEM,
            key=key,
            name=key,
            environments=[
                {"key": "dev", "name": "dev"},
                {"key": "staging", "name": "staging"},
                {"key": "prod", "name": "prod", "protected": True, "required_approvals": 1},
            ],
        )
        start = timezone.now() - timedelta(days=400)
        for model, i, c, o in MODELS:
            services.record_price(
                actor=SYSTEM,
                application=app,
                model=model,
                effective_from=start,
                input_per_1m=i,
                cached_input_per_1m=c,
                output_per_1m=o,
                tiers=[{"above_input_tokens": 128000, "input_per_1m": 5, "output_per_1m": 15}]
                if model == "gpt-4o"
                else None,
            )
        return app

    # ------------------------------------------------------------------ 1. ingestion

    def ingest(self, tag: str, opts) -> dict:
        app = self.application(f"bench-ingest-{tag}")
        prod = app.environments.get(key="prod")
        issued = keys.create_api_key(
            actor=SYSTEM,
            environment=prod,
            name="bench",
            scopes=[ApiKeyScope.USAGE_WRITE],
            rate_limit_per_minute=10_000_000,
        )
        workers = opts["workers"] or min(2 * (os.cpu_count() or 1) + 1, 9)
        env = production_env(
            workers=workers,
            data_dir=Path(os.environ.get("AIRLOCK_DATA_DIR", str(ROOT / "var"))),
        )
        log(f"starting gunicorn ({workers} workers)")
        try:
            with running_web(env, wait_s=60) as base:
                return self._hammer(base, issued.secret, opts, workers)
        finally:
            # The ingested events are not part of the rollup measurement: move past them.
            top = UsageEvent.objects.aggregate(m=Max("pk"))["m"] or 0
            RollupState.objects.update_or_create(name="usage", defaults={"last_event_id": top})

    def _hammer(self, base: str, secret: str, opts, workers: int) -> dict:
        batch, seconds = opts["batch"], opts["ingest_seconds"]
        lock = threading.Lock()
        totals = {"accepted": 0, "requests": 0, "failed": 0, "latencies": []}
        now = timezone.now()

        # The machine's cores are shared by the client and the server it measures, so the
        # client does not build every event from scratch inside the timed window: a pool of
        # random events (the same distributions as ever) is rendered before the clock starts,
        # and each request joins fresh, unique event ids to events drawn from it.
        rng = random.Random(batch)
        pool = []
        for _ in range(POOL):
            model = rng.choice(MODELS)[0]
            input_tokens = rng.randint(300, 3000)
            rest = json.dumps(
                {
                    "time": (now - timedelta(seconds=rng.randint(0, 7200))).isoformat(),
                    "model": model,
                    "prompt_version": rng.choice(PROMPTS),
                    "feature": rng.choice(FEATURES),
                    "input_tokens": input_tokens,
                    "cached_tokens": input_tokens // 2 if rng.random() < 0.3 else 0,
                    "output_tokens": rng.randint(20, 400),
                    "latency_ms": round(rng.lognormvariate(6.3, 0.5), 1),
                    "status": "ok" if rng.random() < 0.98 else "error",
                    "cache_hit": rng.random() < 0.2,
                    "feedback": rng.choice(["none", "none", "none", "up", "down"]),
                    "user_id": f"user-{rng.randint(1, 5000)}",
                }
            )
            pool.append(rest[1:].encode())  # '"time": ...}': the event after its id

        def body(thread: int, n: int) -> bytes:
            offset = (n * batch + thread * 7919) % POOL
            events = b",".join(
                b'{"event_id": "t%d-b%d-%d", %s' % (thread, n, i, pool[(offset + i) % POOL])
                for i in range(batch)
            )
            return b'{"events": [' + events + b"]}"

        def client(thread: int) -> None:
            for n in itertools.count():
                if time.monotonic() >= stop:
                    return
                data = body(thread, n)
                t0 = time.perf_counter()
                answer, problem = post_batch(base + "/api/v1/usage", secret, data)
                ok = isinstance(answer, dict) and "accepted" in answer
                accepted = answer["accepted"] if ok else 0
                if not ok:
                    log(f"thread {thread}: {problem or answer}")
                elapsed = time.perf_counter() - t0
                with lock:
                    totals["requests"] += 1
                    totals["accepted"] += accepted
                    totals["failed"] += not ok
                    totals["latencies"].append(elapsed)

        log(f"posting batches of {batch} from {opts['threads']} threads for {seconds:g} s")
        stop = time.monotonic() + seconds
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(t,)) for t in range(opts["threads"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        latencies = sorted(totals["latencies"]) or [0.0]
        return {
            "events_per_s": round(totals["accepted"] / elapsed),
            "events": totals["accepted"],
            "requests": totals["requests"],
            "failed_requests": totals["failed"],
            "seconds": round(elapsed, 2),
            "batch": batch,
            "client_threads": opts["threads"],
            "gunicorn_workers": workers,
            "request_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "request_p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1),
        }

    # ------------------------------------------------------------------ 2. rollup catch-up

    def rollup(self, tag: str, n: int) -> dict:
        app = self.application(f"bench-rollup-{tag}")
        envs = list(app.environments.values_list("pk", flat=True))
        services.rollup(settle=timedelta(0))  # anything pending first: only ours is timed
        log(f"COPYing {n:,} raw events")
        t0 = time.perf_counter()
        end = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        received = timezone.now() - timedelta(hours=1)
        rng = random.Random(n)
        step = timedelta(days=7) / n
        sql = f"COPY usage_usageevent ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
        prices = {m: (Decimal(i), Decimal(c), Decimal(o)) for m, i, c, o in MODELS}
        users = [services.anonymise(f"user-{u}") for u in range(5000)]
        with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for i in range(n):
                model = MODELS[rng.random() < 0.2][0]
                rate_in, rate_cached, rate_out = prices[model]
                input_tokens = rng.randint(300, 3000)
                cached = input_tokens // 2 if rng.random() < 0.3 else 0
                output_tokens = rng.randint(20, 400)
                cost = (
                    (input_tokens - cached) * rate_in + cached * rate_cached
                    + output_tokens * rate_out
                ) / 1_000_000  # fmt: skip
                copy.write_row(
                    (
                        app.pk, envs[i % 3], f"r{i}", end - step * i, received, model, "",
                        PROMPTS[i % 3], FEATURES[(i // 3) % 3], "", input_tokens, cached,
                        output_tokens, round(rng.lognormvariate(6.3, 0.5), 1),
                        "ok" if rng.random() < 0.98 else "error", rng.random() < 0.2,
                        rng.choice((0, 0, 0, 1, -1)), rng.choice(users), "runtime",
                        round(cost, 8), round(cached * (rate_in - rate_cached) / 1_000_000, 8),
                    )
                )  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE usage_usageevent")
        loaded = time.perf_counter() - t0
        target = UsageEvent.objects.filter(application=app).aggregate(m=Max("pk"))["m"]
        log(f"loaded in {loaded:.1f} s; rolling up")
        passes = []
        t0 = time.perf_counter()
        while RollupState.objects.get(name="usage").last_event_id < target:
            p0 = time.perf_counter()
            out = services.rollup(settle=timedelta(0))
            passes.append({**out, "seconds": round(time.perf_counter() - p0, 2)})
            log(f"pass: {passes[-1]}")
        catch_up = time.perf_counter() - t0
        rows = UsageHourly.objects.filter(application=app).count()
        # The one dashboard panel that reads raw events: top spenders over the last 7 days.
        today = timezone.now().date()
        filters, _ = selectors.UsageFilters.from_query({}, today)
        spenders = []
        for _ in range(3):
            s0 = time.perf_counter()
            selectors.top_spenders(app, filters)
            spenders.append((time.perf_counter() - s0) * 1000)
        return {
            "top_spenders_over_these_raw_events_ms": round(statistics.median(spenders), 1),
            "events": n,
            "catch_up_s": round(catch_up, 2),
            "events_per_s": round(n / catch_up) if catch_up else None,
            "passes": passes,
            "rollup_rows": rows,
            "copy_load_s": round(loaded, 2),
        }

    # ------------------------------------------------------------------ 3. dashboard

    def dashboard(self, tag: str, n: int, runs: int) -> dict:
        app = self.application(f"bench-dash-{tag}")
        envs = list(app.environments.all())
        combos = list(
            itertools.product(envs, [m for m, *_ in MODELS], PROMPTS, FEATURES)
        )  # 3 × 2 × 3 × 3 = 54
        hours = 60 * 24
        end = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        rng = random.Random(7)
        # A weekly rhythm (weekends at half) and some noise, scaled to exactly ~n events.
        cells = [(end - timedelta(hours=h), combo) for h in range(hours) for combo in combos]
        weights = [
            (1.0 if hour.weekday() < 5 else 0.5) * rng.uniform(0.8, 1.2) for hour, _ in cells
        ]
        scale = n / sum(weights)
        log(f"writing {len(cells):,} rollup rows ≈ {n:,} events")
        rows = []
        for (hour, (env, model, prompt, feature)), weight in zip(cells, weights, strict=True):
            requests = max(1, round(weight * scale))
            buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
            for _ in range(4):
                buckets[rng.randint(2, 7)] += requests // 4
            buckets[4] += requests - sum(buckets)
            rows.append(
                UsageHourly(
                    application=app, environment=env, hour=hour, model=model,
                    prompt_version=prompt, feature=feature, requests=requests,
                    errors=requests // 50, input_tokens=requests * 1500,
                    cached_tokens=requests * 300, output_tokens=requests * 200,
                    cost=Decimal(requests) * Decimal("0.0004"),
                    cache_savings=Decimal(requests) * Decimal("0.00002"),
                    cache_hits=requests // 5, thumbs_up=requests // 20,
                    thumbs_down=requests // 100, latency_buckets=buckets,
                )
            )  # fmt: skip
        t0 = time.perf_counter()
        UsageHourly.objects.bulk_create(rows, batch_size=5000)
        services.rebuild_daily(app.pk)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE usage_usagehourly")
            cursor.execute("ANALYZE usage_usagedaily")
        log(f"rollups written in {time.perf_counter() - t0:.1f} s")
        events = sum(r.requests for r in rows)
        User = get_user_model()
        reader, _ = User.objects.get_or_create(username=f"bench-usage-reader-{tag}")
        grant_role(actor=SYSTEM, user=reader, application=app, role=Role.VIEWER)
        today = timezone.now().date()
        views = {
            "all_60_days": {"since": (today - timedelta(days=60)).isoformat()},
            "default_30_days": {},
            "filtered_prod_gpt4o": {
                "since": (today - timedelta(days=60)).isoformat(),
                "environment": "prod",
                "model": "gpt-4o",
            },
        }
        out: dict = {"rollup_rows": len(rows), "events_represented": events}
        with override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]):
            client = Client()
            client.force_login(reader)
            url = f"/apps/{app.key}/usage/"
            for name, params in views.items():
                out[name] = self._time(client, url, params, runs)
            out["csv_daily_60_days"] = self._time(
                client, url + "export.csv", {**views["all_60_days"], "view": "daily"}, runs
            )
            out["htmx_board_60_days"] = self._time(
                client,
                url,
                views["all_60_days"],
                runs,
                {"HX-Request": "true", "HX-Target": "board"},
            )
        out["median_ms"] = out["all_60_days"]["median_ms"]
        auth.forget_all()
        return out

    def _time(self, client: Client, url: str, params: dict, runs: int, headers=None) -> dict:
        client.get(url, params, headers=headers)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            response = client.get(url, params, headers=headers)
            times.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                raise CommandError(f"{url} answered {response.status_code}")
        with CaptureQueriesContext(connection) as queries:
            client.get(url, params, headers=headers)
        return {
            "median_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1),
            "queries": len(queries),
        }
