"""`manage.py bench_datasets [--items 10000] [--import-rows 50000]`: golden sets at scale.

1. Ensures (idempotently) the application `bench-datasets`, the curator `bench-curator` and the
   golden set `bench-golden` holding exactly --items deterministic items (`b000001`…).
2. Times, through the Django test client logged in as the curator (median of --runs after one
   warm-up, with the query count of one extra run): the editor page, a page in the middle, the
   editor filtered by text, by tag and by both, and the quality-hints fragment.
3. Times services.import_file of an --import-rows CSV into a fresh golden set `bench-import`
   (dropped and recreated every run; never published), and the parse step on its own.
4. Times services.publish of the --items set three ways: every item changed (all snapshots
   new), 1% changed (the usual republish), nothing changed (no version).
5. Times the streaming CSV export of the draft and of the latest version (the whole generator
   is consumed), in rows/s.

Prints ONE JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse

from console.accounts.roles import Role
from console.accounts.services import grant_role
from console.audit.services import SYSTEM
from console.datasets import io as dataset_io
from console.datasets import selectors, services
from console.datasets.models import Dataset
from console.registry import services as registry
from console.registry.models import Application

APP = "bench-datasets"
CURATOR = "bench-curator"
DATASET = "bench-golden"
IMPORT_DATASET = "bench-import"
TOPICS = (
    "refund", "shipping", "account", "payment", "delivery", "warranty", "exchange", "invoice",
    "loyalty", "gift", "order", "privacy", "coupon", "subscription", "return", "tracking",
)  # fmt: skip
VERBS = ("change", "cancel", "find", "update", "check", "request", "get", "use", "reset", "see")
OBJECTS = ("my order", "the label", "a receipt", "my card", "the parcel", "my points", "an item")


def bench_item(n: int, prefix: str = "b", note: str = "") -> dict:
    """A deterministic, realistic item: varied questions, 1-2 tags, facts, some unanswerable."""
    topic = TOPICS[n % len(TOPICS)]
    verb = VERBS[(n // 3) % len(VERBS)]
    obj = OBJECTS[(n // 7) % len(OBJECTS)]
    unanswerable = n % 17 == 0
    return {
        "id": f"{prefix}{n:06d}",
        "question": f"How do I {verb} {obj} for my {topic} request number {n}?",
        "variables": {"customer_tier": ("gold", "standard", "new")[n % 3], "locale": "en"},
        "expected_contains": [] if unanswerable else [f"{topic} policy", f"step {n % 5 + 1}"],
        "expected_not_contains": ["I am not sure"] if n % 4 == 0 else [],
        "expected_sources": [f"docs/{topic}.md"],
        "reference_answer": f"Open Settings, choose {topic.title()}, then {verb} {obj}.",
        "unanswerable": unanswerable,
        "tags": sorted({topic, ("priority", "long-tail", "seasonal")[n % 3]}),
        "note": note,
    }


class _QueryCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


class Command(BaseCommand):
    help = "Time the golden-set editor, hints, import, publish and export at scale."

    def add_arguments(self, parser):
        parser.add_argument("--items", type=int, default=10_000)
        parser.add_argument("--import-rows", type=int, default=50_000)
        parser.add_argument("--runs", type=int, default=10, help="timed runs per page (median)")

    def handle(self, *args, items: int, import_rows: int, runs: int, **options):
        if items < 100 or import_rows < 1 or runs < 1:
            raise CommandError("--items must be ≥ 100, --import-rows and --runs positive")
        user, application = self._setup()
        dataset, seeded_s = self._ensure_dataset(application, user, items)
        result: dict = {
            "bench": "datasets",
            "db": connection.vendor,
            "items": items,
            "seeded_s": round(seeded_s, 1),
            "runs": runs,
        }
        with override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]):
            client = Client()
            client.force_login(user)
            result["pages"] = self._time_pages(client, dataset, items, runs)
            result.update(self._time_import(application, user, import_rows))
            result.update(self._time_publish(dataset, user, items))
            result.update(self._time_export(client, dataset, items, max(3, runs // 3)))
        self.stdout.write(json.dumps(result, separators=(",", ":")))

    def _log(self, message: str) -> None:
        self.stderr.write(f"bench_datasets: {message}")

    # --- setup ------------------------------------------------------------------------------

    def _setup(self):
        application = Application.objects.filter(key=APP).first()
        if application is None:
            application = registry.create_application(
                actor=SYSTEM, key=APP, name="Bench datasets",
                environments=[{"key": "dev", "name": "dev"}],
            )  # fmt: skip
        user_model = get_user_model()
        user = user_model.objects.filter(username=CURATOR).first()
        if user is None:
            user = user_model.objects.create_user(username=CURATOR)
            user.set_unusable_password()
            user.save(update_fields=["password"])
        grant_role(actor=SYSTEM, user=user, application=application, role=Role.CURATOR)
        return user, application

    def _ensure_dataset(self, application, user, items: int) -> tuple[Dataset, float]:
        dataset = Dataset.objects.filter(application=application, key=DATASET).first()
        if dataset is None:
            dataset = services.create_dataset(
                actor=user, application=application, key=DATASET, name="Bench golden set"
            )
        wanted = [f"b{n:06d}" for n in range(1, items + 1)]
        have = list(
            dataset.draft_items.order_by("position", "id").values_list("item_id", flat=True)
        )
        if have == wanted:
            self._log(f"{DATASET} holds its {items} items: not seeding")
            return dataset, 0.0
        self._log(f"seeding {DATASET} with {items} items ({len(have)} present)")
        started = time.perf_counter()
        data = "".join(dataset_io.jsonl_lines(bench_item(n) for n in range(1, items + 1)))
        services.import_file(
            actor=user, dataset=dataset, data=data.encode(), filename="seed.jsonl", mode="replace"
        )
        order = dataset.draft_items.order_by("position", "id").values_list("item_id", flat=True)
        if list(order) != wanted:
            raise CommandError(
                f"{APP}/{DATASET} keeps items in another order; delete its items and run again"
            )
        return dataset, time.perf_counter() - started

    # --- pages ------------------------------------------------------------------------------

    def _time_pages(self, client: Client, dataset: Dataset, items: int, runs: int) -> dict:
        editor = reverse("datasets:editor", kwargs={"app": APP, "key": dataset.key})
        hints = reverse("datasets:hints", kwargs={"app": APP, "key": dataset.key})
        middle = max(1, items // selectors.PAGE_SIZE // 2)
        cases = {
            "editor": (editor, {}, {}),
            "editor_middle_page": (editor, {"page": middle}, {}),
            "editor_search_text": (editor, {"q": "warranty request"}, {}),
            "editor_search_id": (editor, {"q": f"b{items // 2:06d}"}, {}),
            "editor_tag": (editor, {"tag": "seasonal"}, {}),
            "editor_text_and_tag": (editor, {"q": "my card", "tag": "refund"}, {}),
            "editor_items_fragment": (editor, {"tag": "seasonal"}, {"HX-Request": "true",
                                                                   "HX-Target": "items"}),
            "hints_fragment": (hints, {}, {"HX-Request": "true"}),
        }  # fmt: skip
        out = {}
        for name, (path, params, headers) in cases.items():
            url = f"{path}?{urlencode(params)}" if params else path
            self._get(client, url, headers)  # warm-up
            timings = []
            for _ in range(runs):
                t0 = time.perf_counter()
                self._get(client, url, headers)
                timings.append((time.perf_counter() - t0) * 1000)
            counter = _QueryCounter()
            with connection.execute_wrapper(counter):
                self._get(client, url, headers)
            out[name] = {
                "ms": round(statistics.median(timings), 1),
                "min_ms": round(min(timings), 1),
                "queries": counter.count,
            }
            if "q" in params or "tag" in params:
                filters = selectors.ItemFilters.from_query(params)
                out[name]["matches"] = selectors.draft_items(dataset, filters).count()
            self._log(f"{name}: {out[name]}")
        return out

    @staticmethod
    def _get(client: Client, url: str, headers: dict):
        response = client.get(url, secure=True, headers=headers)
        if response.status_code != 200:
            raise CommandError(f"GET {url} answered {response.status_code}")
        if getattr(response, "streaming", False):
            for _ in response.streaming_content:
                pass
        return response

    # --- import -----------------------------------------------------------------------------

    def _time_import(self, application, user, rows: int) -> dict:
        data = "".join(
            dataset_io.csv_lines(bench_item(n, prefix="i") for n in range(1, rows + 1))
        ).encode()
        t0 = time.perf_counter()
        parsed = dataset_io.parse(data, "csv")
        parse_s = time.perf_counter() - t0
        if not parsed.ok or len(parsed.rows) != rows:
            raise CommandError(f"the generated import file does not parse: {parsed.problems[:3]}")
        old = Dataset.objects.filter(application=application, key=IMPORT_DATASET).first()
        if old is not None:
            if old.latest_number:
                raise CommandError(f"{APP}/{IMPORT_DATASET} was published; it cannot be reset")
            old.delete()
        target = services.create_dataset(
            actor=user, application=application, key=IMPORT_DATASET, name="Bench import"
        )
        self._log(f"importing {rows} rows ({len(data) / 1e6:.1f} MB CSV)")
        t0 = time.perf_counter()
        summary = services.import_file(actor=user, dataset=target, data=data, filename="bench.csv")
        import_s = time.perf_counter() - t0
        if summary["added"] != rows:
            raise CommandError(f"import added {summary['added']} of {rows} rows")
        out = {
            "import_rows": rows,
            "import_mb": round(len(data) / 1e6, 1),
            "import_s": round(import_s, 2),
            "import_rows_per_s": round(rows / import_s),
            "import_parse_rows_per_s": round(rows / parse_s),
        }
        self._log(str(out))
        return out

    # --- publish ----------------------------------------------------------------------------

    def _change(self, dataset: Dataset, user, numbers, note: str) -> None:
        data = "".join(dataset_io.jsonl_lines(bench_item(n, note=note) for n in numbers))
        services.import_file(actor=user, dataset=dataset, data=data.encode(), filename="c.jsonl")

    def _time_publish(self, dataset: Dataset, user, items: int) -> dict:
        run = uuid.uuid4().hex[:8]
        out = {}
        cases = (
            ("publish_all_changed_s", range(1, items + 1)),
            ("publish_1pct_changed_s", range(1, items + 1, 100)),
            ("publish_unchanged_s", ()),
        )
        for name, numbers in cases:
            if numbers:
                self._change(dataset, user, numbers, note=f"{name} {run}")  # not timed
            dataset.refresh_from_db()
            t0 = time.perf_counter()
            version = services.publish(actor=user, dataset=dataset, message=f"bench {name}")
            out[name] = round(time.perf_counter() - t0, 2)
            if (version is None) != (not numbers):
                raise CommandError(f"{name}: publish returned {version!r}")
            self._log(f"{name}: {out[name]} s (v{getattr(version, 'number', '-')})")
        return out

    # --- export -----------------------------------------------------------------------------

    def _time_export(self, client: Client, dataset: Dataset, items: int, runs: int) -> dict:
        dataset.refresh_from_db()
        path = reverse("datasets:export", kwargs={"app": APP, "key": dataset.key})
        out = {}
        for name, params in (
            ("export_draft_csv_rows_per_s", {"format": "csv"}),
            ("export_version_csv_rows_per_s", {"format": "csv", "version": dataset.latest_number}),
            (
                "export_version_jsonl_rows_per_s",
                {"format": "jsonl", "version": dataset.latest_number},
            ),
        ):
            url = f"{path}?{urlencode(params)}"
            timings = []
            for _ in range(runs):
                t0 = time.perf_counter()
                response = client.get(url, secure=True)
                if response.status_code != 200 or not response.streaming:
                    raise CommandError(f"GET {url} answered {response.status_code}")
                lines = sum(chunk.count(b"\n") for chunk in response.streaming_content)
                timings.append(time.perf_counter() - t0)
            expected = items + (1 if params["format"] == "csv" else 0)
            if lines < expected:
                raise CommandError(f"{url} streamed {lines} lines, expected at least {expected}")
            out[name] = round(items / statistics.median(timings))
            self._log(f"{name}: {out[name]}")
        return out
