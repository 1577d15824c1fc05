"""`manage.py bench_audit [--events 1000000]`: how fast is the audit log at scale?

1. Fills the audit table with N benchmark events (tagged `request_id="bench-audit"`), spread over
   five `bench-*` applications (one of them tiny), a handful of actors and a realistic mix of
   actions, appended to the existing chain and signed here like `record` does (`seal`, the
   newest AIRLOCK_AUDIT_KEYS key) and bulk-inserted (COPY on PostgreSQL). Filling is skipped when
   that many benchmark events exist already; a shortfall is topped up.
2. Times the /audit/ page through the Django test client, logged in as `bench-reader` (member of
   three of the applications): unfiltered, filtered by action / action prefix / actor /
   application / date range / object prefix, and an older page (`before`); plus worst cases (the
   oldest week, an object prefix matching nothing, and `bench-solo`, a member of the tiny
   application only). Median of --runs runs each, with the query count and the slowest query of
   one extra run (its SQL is logged to stderr).
3. Times `manage.py audit_verify` over the whole chain.

Prints ONE JSON line; progress goes to stderr.
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import time
from datetime import UTC, timedelta
from io import StringIO
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, reset_queries, transaction
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone

from console.accounts.roles import Role
from console.accounts.services import grant_role
from console.audit import selectors
from console.audit import services as audit_services
from console.audit.models import GENESIS_HASH, ActorType, AuditEvent
from console.audit.services import SYSTEM, seal, signing_key
from console.core.canonical import canonical_json
from console.registry import services as registry
from console.registry.models import Application

BENCH_TAG = "bench-audit"
READER = "bench-reader"  # member of alpha, beta, gamma
SOLO = "bench-solo"  # member of epsilon only: a tiny application among a million events
# (key, share of events)
APPS = (
    ("bench-alpha", 0.40), ("bench-beta", 0.30), ("bench-gamma", 0.20), ("bench-delta", 0.0999),
    ("bench-epsilon", 0.0001),
)  # fmt: skip
ACTORS = ("bench-ana", "bench-ben", "bench-cleo", "bench-dev", "bench-eli", "bench-fay", "ci-bot")
ACTIONS = (  # (action, share in ‰)
    ("prompt.version.create", 260), ("prompt.bind", 150), ("model_config.version.create", 140),
    ("model_config.bind", 90), ("flag.toggle", 180), ("membership.change", 40),
    ("promotion.request", 60), ("promotion.approve", 50), ("promotion.apply", 25),
    ("flag.kill", 5),
)  # fmt: skip
PROMPT_KEYS = ("answer", "summarise", "classify", "extract", "rewrite", "triage", "greet", "route")
MODEL_KEYS = ("main", "fallback", "cheap", "judge")
FLAG_KEYS = ("new-retriever", "streaming", "long-context", "tool-use", "safety-v2")
COLUMNS = (
    "seq", "at", "actor_type", "actor_id", "actor_label", "action", "object_type", "object_id",
    "object_label", "application_id", "environment_id", "before", "after", "reason",
    "request_id", "ip", "prev_hash", "hash", "key_id",
)  # fmt: skip


class _QueryTimer:
    """connection.execute_wrapper: wall time of every query, and the slowest one's SQL."""

    def __init__(self):
        self.times: list[float] = []
        self.slowest_sql = ""

    def __call__(self, execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            if not self.times or ms > max(self.times):
                self.slowest_sql = sql
            self.times.append(ms)


def _weighted(pairs) -> list:
    """A lookup table: index with randrange(len(table)) to draw by weight."""
    return [value for value, weight in pairs for _ in range(weight)]


class Command(BaseCommand):
    help = "Fill the audit log with N benchmark events and time the audit page against it."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=1_000_000)
        parser.add_argument("--runs", type=int, default=7, help="timed runs per page (median)")
        parser.add_argument("--chunk", type=int, default=50_000, help="events per transaction")
        parser.add_argument("--days", type=int, default=365, help="time span of the events")
        parser.add_argument("--no-verify", action="store_true", help="skip timing audit_verify")

    def handle(self, *args, events: int, runs: int, chunk: int, days: int, **options):
        if events < 1 or runs < 1 or chunk < 1 or days < 1:
            raise CommandError("--events, --runs, --chunk and --days must be positive")
        apps, reader, solo = self._setup()
        existing = AuditEvent.objects.filter(request_id=BENCH_TAG).count()
        missing = max(0, events - existing)
        started = time.perf_counter()
        if missing:
            self._log(f"filling {missing} benchmark events ({existing} present)")
            self._fill(missing, apps, chunk, days)
        else:
            self._log(f"{existing} benchmark events present: not filling")
        fill_s = time.perf_counter() - started
        if missing and connection.vendor in {"postgresql", "sqlite"}:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE audit_auditevent")

        result = {
            "db": connection.vendor,
            "events_total": AuditEvent.objects.count(),
            "bench_events": existing + missing,
            "filled": missing,
            "fill_s": round(fill_s, 1),
            "runs": runs,
            "pages": self._time_pages(reader, solo, apps, runs),
        }
        if not options["no_verify"]:
            result.update(self._time_verify())
        self.stdout.write(json.dumps(result, separators=(",", ":")))

    def _log(self, message: str) -> None:
        self.stderr.write(f"bench_audit: {message}")

    # --- setup ------------------------------------------------------------------------------

    def _setup(self) -> tuple[list[Application], object, object]:
        apps = []
        for key, _ in APPS:
            app = Application.objects.filter(key=key).first()
            if app is None:
                app = registry.create_application(
                    actor=SYSTEM, key=key, name=key.replace("-", " ").title(),
                    environments=[
                        {"key": "dev", "name": "dev"}, {"key": "staging", "name": "staging"},
                        {"key": "prod", "name": "prod", "protected": True,
                         "required_approvals": 1},
                    ],
                )  # fmt: skip
            apps.append(app)
        reader = self._user(READER)
        for app in apps[:3]:
            grant_role(actor=SYSTEM, user=reader, application=app, role=Role.VIEWER)
        solo = self._user(SOLO)
        grant_role(actor=SYSTEM, user=solo, application=apps[-1], role=Role.VIEWER)
        return apps, reader, solo

    @staticmethod
    def _user(username: str):
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user = user_model.objects.create_user(username=username)
            user.set_unusable_password()
            user.save(update_fields=["password"])
        return user

    # --- filling ------------------------------------------------------------------------------

    def _fill(self, n: int, apps: list[Application], chunk: int, days: int) -> None:
        envs = {
            app.pk: list(app.environments.order_by("order").values_list("pk", "key"))
            for app in apps
        }
        app_weights = list(itertools.accumulate(share for _, share in APPS))
        action_table = _weighted(ACTIONS)
        end = timezone.now().astimezone(UTC)
        step = timedelta(days=days) / n
        first = end - step * n
        rng = random.Random(20240501 + n)
        key = signing_key()
        done = 0
        while done < n:
            size = min(chunk, n - done)
            t0 = time.perf_counter()
            with transaction.atomic():
                audit_services._lock_chain()  # the same lock `record` takes: appends are serial
                last = AuditEvent.objects.order_by("-seq").only("seq", "hash").first()
                seq = last.seq if last else 0
                prev = last.hash if last else GENESIS_HASH
                batch = []
                for j in range(size):
                    seq += 1
                    app = rng.choices(apps, cum_weights=app_weights)[0]
                    event = self._event(
                        seq, first + step * (done + j), rng, app, action_table, envs
                    )
                    event.prev_hash = prev
                    prev = seal(event, key).hash
                    batch.append(event)
                self._insert(batch)
            done += size
            reset_queries()
            self._log(f"{done}/{n} events ({size / (time.perf_counter() - t0):,.0f}/s)")

    @staticmethod
    def _event(seq, at, rng, app, action_table, envs) -> AuditEvent:
        action = action_table[rng.randrange(len(action_table))]
        thing = action.split(".")[0]
        number = rng.randint(1, 400)
        env_pk, env_key = rng.choice(envs[app.pk])
        environment = None
        before = after = None
        if thing in {"prompt", "model_config"}:
            key = rng.choice(PROMPT_KEYS if thing == "prompt" else MODEL_KEYS)
            object_type = "prompt" if thing == "prompt" else "modelconfig"
            object_id = str(
                PROMPT_KEYS.index(key) + 1 if thing == "prompt" else MODEL_KEYS.index(key) + 1
            )
            if action.endswith(".bind"):
                environment = env_pk
                label = f"{key}@{number} → {env_key}"
                before, after = {"version": number - 1}, {"version": number}
            else:
                label = f"{key}@{number}"
                before = {"temperature": round(rng.random(), 2), "user": f"v{number - 1}"}
                after = {"temperature": round(rng.random(), 2), "user": f"v{number}"}
        elif thing == "flag":
            key = rng.choice(FLAG_KEYS)
            object_type, object_id, label = "flag", str(FLAG_KEYS.index(key) + 1), key
            environment = env_pk
            on = action == "flag.toggle" and rng.random() < 0.5
            before, after = {"on": not on}, {"on": on}
        elif thing == "membership":
            user = rng.randrange(1, 200)
            object_type, object_id, label = "membership", str(user), f"user{user} in {app.key}"
            before, after = {"role": "viewer"}, {"user": f"user{user}", "role": "engineer"}
        else:  # promotion.*
            key = rng.choice(PROMPT_KEYS)
            object_type, object_id = "promotion", str(number)
            label = f"{key}@{number} → prod"
            environment = envs[app.pk][-1][0]
            after = {"state": action.split(".")[1]}
        actor = rng.choice(ACTORS)
        return AuditEvent(
            seq=seq, at=at,
            actor_type=ActorType.API_KEY if actor == "ci-bot" else ActorType.USER,
            actor_id=ACTORS.index(actor) + 1, actor_label=actor, action=action,
            object_type=object_type, object_id=object_id, object_label=label,
            application_id=app.pk, environment_id=environment, before=before, after=after,
            reason=f"TICKET-{rng.randrange(1000, 9999)}" if rng.random() < 0.3 else "",
            request_id=BENCH_TAG, ip=f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        )  # fmt: skip

    @staticmethod
    def _insert(batch: list[AuditEvent]) -> None:
        if connection.vendor != "postgresql":
            AuditEvent.objects.bulk_create(batch, batch_size=1000)
            return
        copy_sql = f"COPY audit_auditevent ({', '.join(COLUMNS)}) FROM STDIN"
        with connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
            for e in batch:
                copy.write_row(
                    (
                        e.seq, e.at, e.actor_type, e.actor_id, e.actor_label, e.action,
                        e.object_type, e.object_id, e.object_label, e.application_id,
                        e.environment_id,
                        None if e.before is None else canonical_json(e.before),
                        None if e.after is None else canonical_json(e.after),
                        e.reason, e.request_id, e.ip, e.prev_hash, e.hash, e.key_id,
                    )
                )  # fmt: skip

    # --- measuring ----------------------------------------------------------------------------

    def _cases(self, reader, solo, apps: list[Application]) -> dict[str, tuple]:
        """name -> (user, query params)."""
        top = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
        middle = AuditEvent.objects.filter(seq__lte=max(1, top // 2)).order_by("-seq").first()
        mid_day = (middle.at if middle else timezone.now()).astimezone(UTC).date()
        oldest = AuditEvent.objects.order_by("at").values_list("at", flat=True).first()
        old_day = (oldest or timezone.now()).astimezone(UTC).date()

        def week(day):
            return {"since": day.isoformat(), "until": (day + timedelta(days=6)).isoformat()}

        return {
            "unfiltered": (reader, {}),
            "action": (reader, {"action": "prompt.bind"}),
            "action_rare": (reader, {"action": "flag.kill"}),
            "action_prefix": (reader, {"action": "model_config."}),
            "action_prefix_no_match": (reader, {"action": "no-such-thing."}),
            "actor": (reader, {"actor": "bench-cleo"}),
            "application": (reader, {"application": apps[1].key}),
            "date_range": (reader, week(mid_day)),
            "date_range_oldest_week": (reader, week(old_day)),
            "object_prefix": (reader, {"object": "triage@"}),
            "object_prefix_no_match": (reader, {"object": "no-such-object@"}),
            "later_page": (reader, {"before": str(max(1, top // 2))}),
            "tiny_app_member": (solo, {}),
        }

    def _time_pages(self, reader, solo, apps: list[Application], runs: int) -> dict:
        out = {}
        with override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]):
            clients = {}
            for user in (reader, solo):
                clients[user.pk] = Client()
                clients[user.pk].force_login(user)
            for name, (user, params) in self._cases(reader, solo, apps).items():
                client = clients[user.pk]
                url = "/audit/?" + urlencode(params)
                self._get(client, url)  # warm-up
                timings = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    self._get(client, url)
                    timings.append((time.perf_counter() - t0) * 1000)
                timer = _QueryTimer()
                with connection.execute_wrapper(timer):
                    self._get(client, url)
                out[name] = {
                    "ms": round(statistics.median(timings), 1),
                    "min_ms": round(min(timings), 1),
                    "queries": len(timer.times),
                    "slowest_query_ms": round(max(timer.times), 1),
                    "rows": self._rows(user, params),
                }
                where = timer.slowest_sql[timer.slowest_sql.find(" FROM ") :]
                self._log(f"{name}: {out[name]}; slowest query: SELECT …{where[:600]}")
        return out

    @staticmethod
    def _get(client: Client, url: str) -> None:
        response = client.get(url, secure=True)
        if response.status_code != 200:
            raise CommandError(f"GET {url} answered {response.status_code}")

    @staticmethod
    def _rows(reader, params: dict[str, str]) -> int:
        filters, errors = selectors.AuditFilters.from_query(params)
        if errors:
            raise CommandError(f"bad benchmark filters: {errors}")
        before = int(params["before"]) if "before" in params else None
        rows, _ = selectors.page(selectors.search(reader, filters), before)
        return len(rows)

    def _time_verify(self) -> dict:
        self._log("timing audit_verify")
        out = StringIO()
        t0 = time.perf_counter()
        try:
            call_command("audit_verify", stdout=out)
            ok, message = True, out.getvalue().strip()
        except CommandError as exc:
            ok, message = False, str(exc)
        elapsed = (time.perf_counter() - t0) * 1000
        return {"verify_ms": round(elapsed, 1), "verify_ok": ok, "verify": message}
