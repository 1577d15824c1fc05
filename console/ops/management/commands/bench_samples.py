"""`manage.py bench_samples [--seconds 20] [--threads 8] [--batch 200]`: sample ingestion.

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
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.audit.services import SYSTEM
from console.ops.processes import post_batch, production_env, running_web
from console.registry import services as registry
from console.registry.models import Application

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

    def handle(self, *args, **opts):
        if connection.vendor != "postgresql":
            raise CommandError("bench_samples runs on PostgreSQL (set DATABASE_URL=postgres://…)")
        if not 1 <= opts["batch"] <= 500:
            raise CommandError("--batch: from 1 to 500 (the API's limit)")
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
        self.stdout.write(json.dumps(result))

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
