"""`manage.py bench_samples [--seconds 20] [--threads 8] [--batch 200]
[--monitor-samples 10000000 [--monitor-days 30]] [--experiment-events 1000000]
[--shadow-events 1000000] [--skip ingest]`: sample ingestion, the monitor sweep over a month of
samples, the experiment report over a week of usage events and the shadow comparison over a
week of live calls and their shadows (console.experiments.bench).

Starts the production web server (gunicorn with `console.gunicorn_conf`, DEBUG=0) on a free
loopback port against this database, creates a fresh application (`bench-samples-<id>`) with a
real `samples:write` key on its prod environment, then `--threads` client threads POST batches
of `--batch` samples to /api/v1/samples for `--seconds`. Each sample is about 2 KB of JSON
(question, answer, retrieved context, sources, versions, feedback: plain English), and about
one in twenty holds an email address or a phone number, so the default redaction policy has
real work to do. The samples are drawn from a pool rendered before the clock starts (each
request joins fresh, unique sample ids to them), so the client's JSON building does not take
the server's cores.

Afterwards it checks the database: as many samples stored for the application as the server
accepted, as many emails and phone numbers counted as redacted as were planted, and none of the
planted ones left in any stored text (CommandError otherwise). Then it deletes the bench's
samples (unless `--keep`).

With `--monitor-samples N` it also builds N samples of another fresh application
(`bench-monitors-<id>`) spread over the last `--monitor-days` days, straight into the day
partitions with one INSERT … SELECT per day: 95% prod, prompt versions 3 (three quarters) and 4,
a judged tenth with faithfulness and relevance (the last five minutes' still waiting), 5% thumbs
down and 10% up, 3% refusals, input lengths from 20 to 1,420 characters; in the last 40 minutes
version 4 grows less faithful. It folds them into the hourly sample rollups (as the monitors'
beat task does, timed as a catch-up), creates 12 monitors on prod (every metric; faithfulness and
input drift of version 4 too; default 60-minute window against the 24 hours before) and times
`monitors.sweep()` over them (`--monitor-runs` times; the first is the figure). Then it checks
the sweep against the same readings taken from the raw samples alone (CommandError if any
differ), times the quality page's series over its longest span (30 days, every environment;
`quality_ms`) and deletes that application's samples, rollups and monitors (unless `--keep`).
`--skip ingest` leaves out the ingestion part.

Prints ONE JSON line; progress goes to stderr. Meant for a benchmark database (PostgreSQL).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from uuid import uuid4

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.audit.services import SYSTEM
from console.experiments.bench import bench_report, bench_shadow
from console.ops.processes import post_batch, production_env, running_web
from console.registry import services as registry
from console.registry.models import Application
from console.samples import monitors, partitions, rollups, services
from console.samples import selectors as sample_selectors
from console.samples.models import Monitor, Sample, SampleHourly, StaleSampleHour
from console.samples.selectors import MAX_DAYS

ROOT = Path(__file__).resolve().parents[4]
POOL = 2_000  # distinct samples the clients draw from
TARGET_BYTES = 2_000  # about this much JSON per sample
PII_EVERY = 20  # one sample in this many holds an email address or a phone number

TOPICS = (
    ("reset my password", "password reset", "account security"),
    ("export my invoices as CSV", "invoice export", "billing"),
    ("add a teammate to our workspace", "workspace members", "team management"),
    ("change the billing currency", "billing currency", "billing"),
    ("connect the Slack integration", "Slack integration", "integrations"),
    ("turn on two-factor authentication", "two-factor authentication", "account security"),
    ("cancel my subscription", "cancellation", "billing"),
    ("restore a deleted project", "project recovery", "projects"),
    ("set up single sign-on with Okta", "single sign-on", "identity"),
    ("raise the API rate limit", "API rate limits", "developer platform"),
    ("move data to the EU region", "data residency", "compliance"),
    ("schedule a weekly report", "scheduled reports", "analytics"),
)
OPENERS = (
    "How do I {task}?",
    "Can you tell me how to {task}?",
    "What is the quickest way to {task}?",
    "I have been trying to {task} all morning and I am stuck. What should I do?",
    "Is it possible to {task} without contacting support?",
    "Our admin is away this week. Can I {task} myself?",
)
SENTENCES = (
    "Open the settings page from the menu in the top right corner of the dashboard.",
    "Only workspace owners and administrators can change this setting for the whole team.",
    "The change takes effect immediately, although some browsers may need a refresh first.",
    "If the option is greyed out, your plan may not include the {feature} feature yet.",
    "You will receive a confirmation email once the request has been processed.",
    "Changes to {area} are recorded in the audit log, which admins can review at any time.",
    "For security reasons we ask you to confirm your password before continuing.",
    "The {feature} page lists every step, with screenshots, in the help centre.",
    "Most customers finish this in under five minutes, and nothing is lost in the process.",
    "If you are on the legacy plan, the menu is called Preferences rather than Settings.",
    "Please note that the previous configuration is kept for thirty days in case you need it.",
    "Our support team is available around the clock if anything does not work as described.",
    "The mobile app offers the same option under Profile, then Advanced.",
    "Large accounts may take a few minutes to update, and you can keep working meanwhile.",
    "We recommend telling your teammates first, because they may be signed out once.",
    "The {feature} documentation also covers the most common error messages and their fixes.",
)
PASSAGES = (
    "{Feature}. This article explains {feature} for {area}. Administrators manage it from the "
    "settings page; members can view it but not change it. Every change is logged.",
    "Troubleshooting {feature}: if the page does not load, clear the browser cache, check that "
    "pop-ups are allowed, and try again. Contact support with the request id if it persists.",
    "Plans and limits. {Feature} is available on the Team and Enterprise plans. The Starter "
    "plan includes a trial of thirty days, after which the feature is switched off.",
    "Release notes, version 4.2: {feature} now supports bulk changes, keyboard shortcuts and a "
    "clearer confirmation dialog. The old {area} screen will be retired next quarter.",
)
REFUSAL = "I'm sorry, I can't help with that based on the documentation I have."
NAMES = ("maria.lopez", "j.smith", "anna_k", "tom.baker", "li.wei", "priya.n", "oscar88")
MINE = re.compile(r"\b(?:my|our)\b")

# Samples as JSON after their id (b'"time": ..., "feedback": ...}'), each with how many emails
# and phone numbers are planted in it.
Pool = list[tuple[bytes, dict[str, int]]]


def log(message: str) -> None:
    print(f"[bench_samples] {message}", file=sys.stderr, flush=True)


def descendants(pid: int) -> list[int]:
    """The processes started under `pid` (Linux /proc; empty elsewhere)."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                children = [int(child) for child in task.read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def cpu_seconds(pids) -> dict[int, float]:
    """User + system CPU of each process still there, by pid (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def db_backends() -> list[int]:
    """The server processes of the other connections to this database (the web server's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return [row[0] for row in cursor.fetchall()]


class Command(BaseCommand):
    help = "Benchmark production-sample ingestion through the production web server."

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=20.0)
        parser.add_argument("--threads", type=int, default=8)
        parser.add_argument("--batch", type=int, default=200)
        parser.add_argument("--workers", type=int, default=None, help="gunicorn workers")
        parser.add_argument("--keep", action="store_true", help="keep the stored samples")
        parser.add_argument(
            "--monitor-samples", type=int, default=0, help="time the monitor sweep over N samples"
        )
        parser.add_argument("--monitor-days", type=int, default=30)
        parser.add_argument("--monitor-runs", type=int, default=3)
        parser.add_argument(
            "--experiment-events",
            type=int,
            default=0,
            help="time the experiment report over N usage events (console.experiments.bench)",
        )
        parser.add_argument(
            "--shadow-events",
            type=int,
            default=0,
            help="time the shadow comparison over N live calls, a fifth of them shadowed",
        )
        parser.add_argument("--skip", action="append", default=[], help="ingest")

    def handle(self, *args, **opts):
        if connection.vendor != "postgresql":
            raise CommandError("bench_samples runs on PostgreSQL (set DATABASE_URL=postgres://…)")
        if not 1 <= opts["batch"] <= 500:
            raise CommandError("--batch: from 1 to 500 (the API's limit)")
        if not 1 <= opts["monitor_days"] <= settings.SAMPLE_RETENTION_DAYS:
            raise CommandError(
                f"--monitor-days: from 1 to {settings.SAMPLE_RETENTION_DAYS} (the retention)"
            )
        sizes = ("monitor_samples", "experiment_events", "shadow_events")
        if any(opts[size] < 0 for size in sizes) or opts["monitor_runs"] < 1:
            raise CommandError(
                "--monitor-samples, --experiment-events and --shadow-events: at least 0; "
                "--monitor-runs: at least 1"
            )
        unknown = set(opts["skip"]) - {"ingest"}
        if unknown:
            raise CommandError(f"--skip: only ingest (not {', '.join(sorted(unknown))})")
        result = (
            {"bench": "samples", "cpus": os.cpu_count()}
            if "ingest" in opts["skip"]
            else self.ingestion(opts)
        )
        if opts["monitor_samples"]:
            result["monitor_sweep"] = self.monitor_sweep(opts)
        if opts["experiment_events"]:
            log(f"experiment report over {opts['experiment_events']:,} usage events")
            result["experiment_report"] = bench_report(events=opts["experiment_events"])
        if opts["shadow_events"]:
            log(f"shadow comparison over {opts['shadow_events']:,} live calls")
            result["shadow_comparison"] = bench_shadow(events=opts["shadow_events"])
        self.stdout.write(json.dumps(result))

    def ingestion(self, opts) -> dict:
        tag = uuid4().hex[:10]
        app = registry.create_application(
            actor=SYSTEM,
            key=f"bench-samples-{tag}",
            name=f"bench samples {tag}",
            environments=[
                {"key": "dev", "name": "dev"},
                {"key": "staging", "name": "staging"},
                {"key": "prod", "name": "prod", "protected": True, "required_approvals": 1},
            ],
        )
        issued = keys.create_api_key(
            actor=SYSTEM,
            environment=app.environments.get(key="prod"),
            name="bench",
            scopes=[ApiKeyScope.SAMPLES_WRITE],
            rate_limit_per_minute=10_000_000,
        )
        domain = f"mail-{tag}.example.com"
        pool = self.pool(7, domain)
        workers = opts["workers"] or min(2 * (os.cpu_count() or 1) + 1, 9)
        env = production_env(
            workers=workers,
            data_dir=Path(os.environ.get("AIRLOCK_DATA_DIR", str(ROOT / "var"))),
        )
        log(f"starting gunicorn ({workers} workers)")
        t0 = time.perf_counter()
        with running_web(env, wait_s=60) as base:
            log(f"gunicorn answering after {time.perf_counter() - t0:.1f} s")
            result = self.hammer(base, issued.secret, pool, opts)
            log("stopping gunicorn")
        result["gunicorn_workers"] = workers
        result["cpus"] = os.cpu_count()
        result["aim_samples_per_s>=5000"] = result["samples_per_s"] >= 5000
        self.verify(app, result, domain)
        if not opts["keep"]:
            log("deleting the bench's samples")
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM samples_sample WHERE application_id = %s", [app.pk])
            SampleHourly.objects.filter(application=app).delete()  # a beat may have folded some
        return result

    # ------------------------------------------------------------------ the samples

    def pool(self, seed: int, domain: str) -> Pool:
        """POOL samples, about TARGET_BYTES each; one in PII_EVERY holds an email address (twice
        when the answer quotes it back) or a phone number."""
        rng = random.Random(seed)
        now = timezone.now()
        pool = []
        for n in range(POOL):
            task, feature, area = rng.choice(TOPICS)

            def sentence(feature=feature, area=area) -> str:
                return rng.choice(SENTENCES).format(feature=feature, area=area)

            question = rng.choice(OPENERS).format(task=task)
            yours = MINE.sub("your", task)
            answer = [f"To {yours}, follow these steps."]
            passages = [
                rng.choice(PASSAGES).format(
                    feature=feature, Feature=feature[0].upper() + feature[1:], area=area
                )
                for _ in range(3)
            ]
            pii = ("email", "phone")[(n // PII_EVERY) % 2] if n % PII_EVERY == 0 else ""
            if pii == "email":
                who = f"{rng.choice(NAMES)}{n}@{domain}"
                question += f" My login is {who}, if that helps."
                answer.append(f"I have found the account registered to {who}.")
            elif pii == "phone":
                question += f" You can call me back on +44 20 7946 0{n % 1000:03d}."
            sample = {
                "time": (now - timedelta(seconds=rng.randint(0, 3600))).isoformat(),
                "inputs": {"question": question, "locale": "en-GB", "plan": "team"},
                "output": "",
                "context": "",
                "sources": [f"kb-{rng.randint(100, 999)}" for _ in range(rng.randint(1, 4))],
                "prompt_version": "answer-question@3",
                "model_config": "gpt-main@1",
                "feedback": rng.choice(["down", "up", None, None, None, None]),
            }
            size = len(json.dumps(sample)) + len('{"sample_id": "t0-b00000-000", ')
            # Answer and context share the rest of the ~2 KB: a third and two thirds.
            while size + len(" ".join(answer)) + 6 < TARGET_BYTES // 3 + size // 3:
                answer.append(sentence())
            sample["output"] = REFUSAL if rng.random() < 0.03 else " ".join(answer)
            context = "\n\n".join(passages)
            while len(context) < TARGET_BYTES - size - len(sample["output"]) - 80:
                context += " " + sentence()
            sample["context"] = context
            rest = json.dumps(sample)[1:].encode()
            planted = {"email": rest.count(b"@" + domain.encode()), "phone": rest.count(b"7946 0")}
            pool.append((rest, planted))
        return pool

    # ------------------------------------------------------------------ the clients

    def hammer(self, base: str, secret: str, pool: Pool, opts) -> dict:
        batch, seconds = opts["batch"], opts["seconds"]
        lock = threading.Lock()
        totals = {"accepted": 0, "bytes": 0, "errors": 0, "duplicates": 0, "latencies": []}
        planted = {"email": 0, "phone": 0}

        def body(thread: int, n: int) -> tuple[bytes, dict[str, int]]:
            offset = (n * batch + thread * 7919) % POOL
            drawn = [pool[(offset + i) % POOL] for i in range(batch)]
            samples = b",".join(
                b'{"sample_id": "t%d-b%05d-%03d", %s' % (thread, n, i, rest)
                for i, (rest, _) in enumerate(drawn)
            )
            kinds = {kind: sum(p[kind] for _, p in drawn) for kind in ("email", "phone")}
            return b'{"samples": [' + samples + b"]}", kinds

        def client(thread: int) -> None:
            for n in itertools.count():
                if time.monotonic() >= stop:
                    return
                data, kinds = body(thread, n)
                t0 = time.perf_counter()
                answer, problem = post_batch(base + "/api/v1/samples", secret, data)
                ok = isinstance(answer, dict) and "accepted" in answer and "duplicates" in answer
                accepted = answer["accepted"] if ok else 0
                duplicates = answer["duplicates"] if ok else 0
                if not ok:
                    log(f"thread {thread}: {problem or answer}")
                elapsed = time.perf_counter() - t0
                with lock:
                    totals["latencies"].append(elapsed)
                    totals["errors"] += not ok
                    totals["accepted"] += accepted
                    totals["duplicates"] += duplicates
                    if ok and accepted == batch:
                        totals["bytes"] += len(data)
                        for kind, count in kinds.items():
                            planted[kind] += count

        log(f"{len(pool):,} samples rendered, avg {self.average(pool):,.0f} bytes")
        log(f"posting batches of {batch} from {opts['threads']} threads for {seconds:g} s")
        # Where the machine's CPU went: this process (the clients), the web server's
        # processes, and the database server processes serving them (only those on this
        # host, Linux only; PostgreSQL's WAL writer, checkpointer and autovacuum not counted).
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        web_before = cpu_seconds(descendants(os.getpid()))
        db_before = cpu_seconds(db_backends())
        client_before = time.process_time()
        stop = time.monotonic() + seconds
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(t,)) for t in range(opts["threads"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        web_after = cpu_seconds(descendants(os.getpid()))
        db_after = cpu_seconds(db_backends())
        cpu = {
            "client": client_cpu,
            "web": sum(t - web_before.get(pid, 0.0) for pid, t in web_after.items()),
            "db": sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items()),
        }
        per_sample = {
            name: round(t / totals["accepted"] * 1e6) if totals["accepted"] and t else None
            for name, t in cpu.items()
        }
        latencies = sorted(totals["latencies"]) or [0.0]
        return {
            "bench": "samples",
            "samples": totals["accepted"],
            "seconds": round(elapsed, 2),
            "samples_per_s": round(totals["accepted"] / elapsed),
            "mb_per_s": round(totals["bytes"] / elapsed / 1e6, 2),
            "batch": batch,
            "threads": opts["threads"],
            "avg_sample_bytes": round(self.average(pool)),
            "requests": len(totals["latencies"]),
            "errors": totals["errors"],
            "duplicates": totals["duplicates"],
            "p50_batch_ms": round(statistics.median(latencies) * 1000, 1),
            "p95_batch_ms": round(latencies[max(0, int(len(latencies) * 0.95) - 1)] * 1000, 1),
            "planted": planted,
            "cpu_us_per_sample": per_sample,
            # The share of the machine's cores the bench's processes had: well under 1 when
            # something else was running.
            "cpu_share": round(sum(cpu.values()) / (elapsed * (os.cpu_count() or 1)), 2),
            "loadavg_before": round(load, 2) if load is not None else None,
        }

    @staticmethod
    def average(pool: Pool) -> float:
        overhead = len(b'{"sample_id": "t0-b00000-000", ') + 1  # and the comma between
        return sum(len(rest) for rest, _ in pool) / len(pool) + overhead

    # ------------------------------------------------------------------ the check

    def verify(self, app: Application, result: dict, domain: str) -> None:
        """The stored samples are the accepted ones, redacted: raises CommandError if not."""
        log("checking the stored samples")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*),"
                " coalesce(sum((redactions->>'email')::int), 0),"
                " coalesce(sum((redactions->>'phone')::int), 0),"
                " count(*) FILTER (WHERE strpos(concat_ws(' ', question, inputs::text, output,"
                "   context, sources::text, feedback_comment), %s) > 0"
                "   OR concat_ws(' ', question, inputs::text, output, context) ~ '7946 0[0-9]{3}')"
                " FROM samples_sample WHERE application_id = %s",
                ["@" + domain, app.pk],
            )
            stored, emails, phones, leaked = cursor.fetchone()
        problems = []
        if stored != result["samples"]:
            problems.append(f"{stored} samples stored, {result['samples']} accepted")
        if leaked:
            problems.append(f"{leaked} stored samples still hold a planted email or phone")
        wanted = result["planted"]
        if (emails, phones) != (wanted["email"], wanted["phone"]):
            problems.append(
                f"redacted {emails} emails and {phones} phones; planted {wanted['email']} and "
                f"{wanted['phone']}"
            )
        result["stored_redactions"] = {"email": emails, "phone": phones}
        if problems:
            self.stdout.write(json.dumps(result))
            raise CommandError("; ".join(problems))

    # ------------------------------------------------------------------ the monitor sweep

    def monitor_sweep(self, opts) -> dict:
        """N samples over the last D days, folded, 12 monitors, the sweep timed and checked."""
        count, days, runs = opts["monitor_samples"], opts["monitor_days"], opts["monitor_runs"]
        tag = uuid4().hex[:10]
        app = registry.create_application(
            actor=SYSTEM,
            key=f"bench-monitors-{tag}",
            name=f"bench monitors {tag}",
            environments=[
                {"key": "staging", "name": "staging"},
                {"key": "prod", "name": "prod", "protected": True, "required_approvals": 1},
            ],
        )
        prod = app.environments.get(key="prod")
        end = timezone.now()
        log(f"writing {count:,} samples over {days} days")
        t0 = time.perf_counter()
        self.monitor_samples(app, count, days, end)
        generate_s = time.perf_counter() - t0
        log(f"{count:,} samples written in {generate_s:.1f} s; folding them")
        t0 = time.perf_counter()
        while True:
            fold = rollups.rollup(settle=timedelta(0))
            if fold["skipped"]:  # a beat's pass holds the watermark: wait for it
                time.sleep(1)
                continue
            if not fold["samples"] and not fold["stale"]:
                break
            log(f"folded {fold['samples']:,} samples ({fold['hours']} hours)")
        rollup_s = time.perf_counter() - t0
        watched = [(metric, "") for metric in Monitor.Metric.values]
        watched += [(Monitor.Metric.FAITHFULNESS, "answer-question@4")]
        watched += [(Monitor.Metric.DRIFT, "answer-question@4")]
        ids = [
            services.create_monitor(
                actor=SYSTEM, application=app, environment=prod, metric=metric, version=version
            ).pk
            for metric, version in watched
        ]
        log(f"sweeping {len(ids)} monitors {runs} time(s)")
        timings, outcomes = [], []
        for run in range(runs):
            t0 = time.perf_counter()
            outcomes.append(monitors.sweep(end + timedelta(seconds=run), only=ids))
            timings.append(time.perf_counter() - t0)
        log("reading the same from the raw samples")
        t0 = time.perf_counter()
        memo: dict = {}
        at = end + timedelta(seconds=runs - 1)
        differ = []
        for monitor in Monitor.objects.filter(pk__in=ids).select_related("environment"):
            check, seen = monitors.evaluate(monitor, at, memo=memo, raw=True), monitor.last_check
            if not self.same(check.as_dict(at), seen):
                differ.append(f"{monitor}: {seen} from the rollups, {check.as_dict(at)} raw")
        raw_s = time.perf_counter() - t0
        quality = self.quality_page(app, end)
        result = {
            "samples": count,
            "days": days,
            "monitors": len(ids),
            "seconds": round(timings[0], 3),
            "runs_s": [round(t, 3) for t in timings],
            "outcome": outcomes[0],
            "generate_s": round(generate_s, 1),
            "rollup_s": round(rollup_s, 1),
            "rollup_rows": SampleHourly.objects.filter(application=app).count(),
            "raw_read_s": round(raw_s, 3),
            "agrees_with_raw": not differ,
            "aim_seconds<5": timings[0] < 5,
            **quality,
        }
        if not opts["keep"]:
            log(f"deleting the monitor bench's {count:,} samples")
            Monitor.objects.filter(application=app).delete()
            SampleHourly.objects.filter(application=app).delete()
            StaleSampleHour.objects.filter(application=app).delete()
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM samples_sample WHERE application_id = %s", [app.pk])
        if differ:
            self.stdout.write(json.dumps({"bench": "samples", "monitor_sweep": result}))
            raise CommandError("the sweep disagrees with the raw samples: " + "; ".join(differ))
        return result

    @staticmethod
    def quality_page(app: Application, end: datetime) -> dict:
        """The quality page's series over its longest span (every environment), timed; and
        whether it counts every sample of those days."""
        log(f"reading the quality series over {MAX_DAYS} days")
        timings, rows = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            rows = sample_selectors.quality(app, None, MAX_DAYS, end)
            timings.append((time.perf_counter() - t0) * 1000)
        first_day = end.astimezone(UTC).date() - timedelta(days=MAX_DAYS - 1)
        stored = Sample.objects.filter(
            application=app, at__gte=datetime.combine(first_day, dt_time.min, UTC)
        ).count()
        return {
            "quality_rows": len(rows),
            "quality_ms": round(statistics.median(timings), 1),
            "quality_counts_every_sample": sum(r.samples for r in rows) == stored,
        }

    @staticmethod
    def same(raw: dict, swept: dict) -> bool:
        """The sweep's reading is the raw one (sums added in another order: within 1e-9)."""
        for key in ("n", "baseline_n", "severity"):
            if raw[key] != swept.get(key):
                return False
        for key in ("value", "baseline", "change"):
            a, b = raw[key], swept.get(key)
            if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-9 * max(1, abs(a))):
                return False
        return True

    def monitor_samples(self, app: Application, count: int, days: int, end: datetime) -> None:
        """`count` samples of `app` over the `days` days before `end`, one INSERT … SELECT per
        day straight into its partition (made first)."""
        prod, staging = app.environments.get(key="prod"), app.environments.get(key="staging")
        start = end - timedelta(days=days)
        first_day, last_day = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        partitions.ensure(
            first_day + timedelta(days=d) for d in range((last_day - first_day).days + 1)
        )
        span = (end - start).total_seconds() / days
        per_day = count // days
        with connection.cursor() as cursor:
            cursor.execute("SELECT setseed(0.42)")
            first = 0
            for day in range(days):
                last = count if day == days - 1 else first + per_day
                if last > first:
                    cursor.execute(
                        MONITOR_SAMPLES,
                        {
                            "app": app.pk, "prod": prod.pk, "staging": staging.pk,
                            "first": first, "last": last - 1, "end": end,
                            "from": start + timedelta(seconds=span * day), "span": span,
                            "question": MONITOR_QUESTION, "answer": MONITOR_ANSWER,
                            "refusal": REFUSAL, "context": MONITOR_CONTEXT,
                            "pending_after": end - timedelta(minutes=5),
                            "worse_after": end - timedelta(minutes=40),
                        },
                    )  # fmt: skip
                first = last
                if days > 1 and (day + 1) % 5 == 0:
                    log(f"{first:,} samples written ({day + 1} of {days} days)")
            # What autovacuum does as each day's partition fills (it analyzes a table once a
            # tenth of it changed): every day written has statistics, as in production.
            for d in range((last_day - first_day).days + 1):
                day = first_day + timedelta(days=d)
                cursor.execute(f'ANALYZE "{partitions.TABLE}_p{day:%Y%m%d}"')


MONITOR_QUESTION = (
    "How do I export my invoices as CSV for the last quarter, and can I schedule it weekly? " * 20
)
MONITOR_ANSWER = (
    "To export your invoices, open Billing, choose Invoices, select the quarter and press Export "
    "as CSV. You can schedule a weekly export from the same page under Scheduled reports "
    "[kb-120]."
)
MONITOR_CONTEXT = (
    "Invoice export. Administrators export invoices from Billing > Invoices as CSV or PDF; "
    "scheduled exports are sent by email every week or month [kb-120]. "
) * 3
# One day of monitor samples: the rows first..last, at random times of [from, from + span).
MONITOR_SAMPLES = """
INSERT INTO samples_sample (application_id, environment_id, sample_id, at, received_at,
    prompt_version, model_config, flag, variant, question, inputs, output, context, sources,
    feedback, feedback_comment, redactions, refused, input_chars, judge_state, faithfulness,
    relevance, judge_reasons, judge_cost, judged_at, curated_into)
SELECT %(app)s, CASE WHEN r.env < 0.05 THEN %(staging)s ELSE %(prod)s END, 'm-' || r.i, r.at,
    least(r.at + make_interval(secs => 1 + 4 * r.env), %(end)s),
    CASE WHEN r.v4 THEN 'answer-question@4' ELSE 'answer-question@3' END, 'gpt-main@1',
    'support-prompt', CASE WHEN r.v4 THEN 'v4' ELSE 'v3' END,
    left(%(question)s, r.chars),
    jsonb_build_object('question', left(%(question)s, r.chars), 'locale', 'en-GB'),
    CASE WHEN r.refused THEN %(refusal)s ELSE %(answer)s END, %(context)s,
    '["kb-120", "kb-431"]'::jsonb,
    CASE WHEN r.fb < 0.05 THEN -1 WHEN r.fb < 0.15 THEN 1 ELSE 0 END,
    CASE WHEN r.fb < 0.05 THEN 'not what I asked' ELSE '' END, '{}'::jsonb, r.refused, r.chars,
    CASE WHEN NOT r.judged THEN 'skipped' WHEN r.at > %(pending_after)s THEN 'pending'
         ELSE 'done' END,
    CASE WHEN r.scored THEN round(((1 - 0.6 * r.f * r.f)
        * CASE WHEN r.v4 AND r.at > %(worse_after)s THEN 0.75 ELSE 1 END)::numeric, 4) END,
    CASE WHEN r.scored THEN round((1 - 0.5 * r.g * r.g)::numeric, 4) END,
    '{}'::jsonb, CASE WHEN r.scored THEN 0.0004 ELSE 0 END,
    CASE WHEN r.scored THEN r.at + interval '2 minutes' END, ''
FROM (
    SELECT *, judged AND at <= %(pending_after)s AS scored FROM (
        SELECT i, %(from)s::timestamptz + make_interval(secs => random() * %(span)s) AS at,
            random() AS env, random() >= 0.75 AS v4, random() AS fb, random() < 0.03 AS refused,
            random() < 0.1 AS judged, random() AS f, random() AS g,
            (20 + floor(1400 * power(random(), 3)))::int AS chars
        FROM generate_series(%(first)s, %(last)s) AS i
    ) drawn
) r
"""
