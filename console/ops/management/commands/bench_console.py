"""Server time and query count for every console page at realistic sizes: a 10,000-item golden
set, 1,000 flags, ~1M audit events and rollups standing for ~10M usage events (the samples,
experiment and shadow pages on the demo's data). One JSON line.

Builds on the demo (`seed_demo`) and adds the bulk idempotently; run on PostgreSQL for figures
that mean something (DATABASE_URL=postgres://...; `manage.py migrate` first).
"""

from __future__ import annotations

import io
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection
from django.db.models import Sum
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from console.audit.models import AuditEvent
from console.datasets import services as datasets
from console.datasets.models import Dataset
from console.flags import services as flags
from console.flags.models import Flag
from console.ops.management.commands.bench_datasets import bench_item
from console.registry.models import Application
from console.releases.models import ShadowDeployment
from console.usage import services as usage
from console.usage.models import LATENCY_BUCKETS_MS, UsageDaily, UsageHourly

APP = "support-bot"
BUDGET_MS = 150


def rollup_requests(application) -> int:
    """Requests the application's hourly rollups stand for (summed in the database)."""
    total = UsageHourly.objects.filter(application=application).aggregate(n=Sum("requests"))
    return total["n"] or 0


class Command(BaseCommand):
    help = "Time every console page at realistic sizes; print one JSON line."

    def add_arguments(self, parser):
        parser.add_argument("--items", type=int, default=10_000)
        parser.add_argument("--flags", type=int, default=1_000)
        parser.add_argument("--audit-events", type=int, default=1_000_000)
        parser.add_argument("--usage-events", type=int, default=10_000_000)
        parser.add_argument("--runs", type=int, default=5)

    def handle(self, *args, items, flags, audit_events, usage_events, runs, **options):
        started = time.perf_counter()
        call_command("seed_demo", verbosity=0, stdout=io.StringIO())
        application = Application.objects.get(key=APP)
        admin = get_user_model().objects.get(username="admin")
        dataset = self._golden_set(application, admin, items)
        self._flags(application, admin, flags)
        self._audit(audit_events)
        self._usage(application, usage_events)
        built_s = round(time.perf_counter() - started, 1)

        client = Client()
        client.force_login(admin)
        pages = self._pages(application, dataset)
        results = {}
        with override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]):
            for name, url in pages.items():
                results[name] = self._time(client, url, runs)
        slowest = max(results.items(), key=lambda kv: kv[1]["ms"])
        self.stdout.write(
            json.dumps(
                {
                    "bench": "console",
                    "db": connection.vendor,
                    "sizes": {
                        "dataset_items": dataset.draft_items.count(),
                        "flags": Flag.objects.filter(application=application).count(),
                        "audit_events": AuditEvent.objects.count(),
                        "usage_events_in_rollups": rollup_requests(application),
                    },
                    "setup_s": built_s,
                    "budget_ms": BUDGET_MS,
                    "all_under_budget": all(r["ms"] < BUDGET_MS for r in results.values()),
                    "slowest": {"page": slowest[0], **slowest[1]},
                    "pages": results,
                }
            )
        )

    # ------------------------------------------------------------------ data

    def _golden_set(self, application, admin, items: int) -> Dataset:
        dataset = Dataset.objects.filter(application=application, key="bench-golden").first()
        if dataset is None:
            dataset = datasets.create_dataset(
                actor=admin, application=application, key="bench-golden", name="Bench golden set"
            )
        missing = items - dataset.draft_items.count()
        if missing > 0:
            start = dataset.draft_items.count()
            lines = "\n".join(json.dumps(bench_item(start + n)) for n in range(missing))
            datasets.import_file(
                actor=admin, dataset=dataset, data=lines.encode(), filename="bench.jsonl"
            )
            datasets.publish(actor=admin, dataset=dataset, message=f"{items} items")
        return dataset

    def _flags(self, application, admin, count: int) -> None:
        have = Flag.objects.filter(application=application, key__startswith="bench-").count()
        for n in range(have, count):
            flags.create_flag(
                actor=admin,
                application=application,
                key=f"bench-{n:04d}",
                name=f"Bench flag {n}",
                flag_type="boolean",
                kind=("release", "experiment", "operational")[n % 3],
            )

    def _audit(self, wanted: int) -> None:
        missing = wanted - AuditEvent.objects.count()
        if missing > 0:
            call_command(
                "bench_audit", events=missing, runs=1, no_verify=True, stdout=io.StringIO()
            )

    def _usage(self, application, events: int) -> None:
        """Hourly rollup rows for 60 days that add up to about `events` requests."""
        if rollup_requests(application) >= events * 0.9:
            if not UsageDaily.objects.filter(application=application).exists():
                usage.rebuild_daily(application.pk)
            return
        rng = random.Random(7)
        envs = list(application.environments.values_list("pk", flat=True))
        dims = [
            (env, model, prompt, feature)
            for env in envs
            for model in ("gpt-4o-mini", "gpt-4o")
            for prompt in ("answer-question@2", "answer-question@3", "summarise-ticket@2")
            for feature in ("answer", "summarise", "escalate")
        ]
        hours = 60 * 24
        per_row = max(1, events // (hours * len(dims)))
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
            hours=hours
        )
        batch = []
        for h in range(hours):
            hour = start + timedelta(hours=h)
            for env, model, prompt, feature in dims:
                requests = max(1, int(per_row * rng.uniform(0.5, 1.5)))
                buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
                buckets[rng.randrange(2, 7)] = requests
                batch.append(
                    UsageHourly(
                        application=application,
                        environment_id=env,
                        hour=hour,
                        model=model,
                        prompt_version=prompt,
                        feature=feature,
                        source="runtime",
                        requests=requests,
                        errors=requests // 50,
                        input_tokens=requests * 1500,
                        cached_tokens=requests * 300,
                        output_tokens=requests * 200,
                        cost=Decimal(requests) * Decimal("0.0004"),
                        cache_savings=Decimal(requests) * Decimal("0.00002"),
                        cache_hits=requests // 4,
                        thumbs_up=requests // 10,
                        thumbs_down=requests // 100,
                        latency_buckets=buckets,
                    )
                )
            if len(batch) >= 5000:
                UsageHourly.objects.bulk_create(batch, ignore_conflicts=True)
                batch = []
        UsageHourly.objects.bulk_create(batch, ignore_conflicts=True)
        usage.rebuild_daily(application.pk)

    # ------------------------------------------------------------------ pages

    def _pages(self, application, dataset) -> dict[str, str]:
        app = application.key
        run = application.eval_runs.order_by("pk").first()
        runs = list(application.eval_runs.order_by("pk").values_list("pk", flat=True)[:2])
        promotion = application.promotions.order_by("pk").first()
        prompt = application.prompts.get(key="answer-question")

        def u(name, **kwargs):
            return reverse(name, kwargs={"app": app, **kwargs})

        pages = {
            "home": reverse("registry:home"),
            "dashboard": u("registry:dashboard"),
            "prompts": u("registry:head_list", kind="prompts"),
            "prompt detail": u("registry:head_detail", kind="prompts", key=prompt.key),
            "prompt editor": u("registry:head_edit", kind="prompts", key=prompt.key),
            "prompt diff": u("registry:diff", kind="prompts", key=prompt.key),
            "model configs": u("registry:head_list", kind="models"),
            "environments": u("registry:environments"),
            "golden sets": u("datasets:list"),
            "golden set editor (10k)": u("datasets:editor", key=dataset.key),
            "golden set editor search": u("datasets:editor", key=dataset.key) + "?q=refund",
            "golden set hints (10k)": u("datasets:hints", key=dataset.key),
            "golden set versions": u("datasets:versions", key=dataset.key),
            "golden set version (10k)": u("datasets:version", key=dataset.key, number=1),
            "flags (1k)": u("flags:list"),
            "flag detail": u("flags:detail", key="support-prompt"),
            "evals": u("evals:runs"),
            "eval run": u("evals:run", pk=run.pk),
            "eval compare": u("evals:compare") + f"?a={runs[0]}&b={runs[-1]}",
            "releases inbox": u("releases:inbox"),
            "promotion": u("releases:detail", pk=promotion.pk),
            "prod history": u("releases:history", env="prod"),
            "costs (10M events)": u("usage:dashboard")
            + "?since="
            + (datetime.now(UTC).date() - timedelta(days=59)).isoformat(),
            "budgets": u("usage:budgets"),
            "prices": u("usage:prices"),
            "members": u("accounts:members"),
            "api keys": u("accounts:api_keys"),
            "webhooks": u("notifications:webhooks"),
            "audit log (1M)": reverse("audit:log"),
            "audit log, this app": reverse("audit:log") + f"?application={app}",
            "quality": u("samples:quality"),
            "samples": u("samples:list"),
            "monitors": u("samples:monitors"),
            "experiments": u("experiments:list"),
            "experiment report": u("experiments:report", env="prod", flag="support-prompt"),
            "shadows": u("experiments:shadows"),
        }
        shadow = ShadowDeployment.objects.filter(environment__application=application).first()
        if shadow is not None:  # the demo's, unless its seeding found no simulator
            pages["shadow comparison"] = u("experiments:shadow", pk=shadow.pk)
        return pages

    @staticmethod
    def _time(client: Client, url: str, runs: int) -> dict:
        client.get(url)  # warm caches and connections
        timings = []
        queries = 0
        for _ in range(runs):
            with CaptureQueriesContext(connection) as ctx:
                started = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
            queries = len(ctx.captured_queries)
            assert response.status_code == 200, (url, response.status_code)
        return {"ms": round(statistics.median(timings), 1), "queries": queries}
