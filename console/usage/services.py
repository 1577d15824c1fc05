"""Usage writes: ingestion (idempotent, all-or-nothing), price corrections with repricing,
hourly rollups, and budget checks with their circuit-breaker actions."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, Count, F, FloatField, Max, Q, Sum, When
from django.db.models.functions import Cast, TruncHour
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from console.audit import services as audit
from console.core import bulk
from console.usage.models import (
    LATENCY_BUCKETS_MS,
    PricePoint,
    RollupState,
    UsageDaily,
    UsageEvent,
    UsageHourly,
)
from console.usage.pricing import PriceBook
from console.usage.rollups import DIMENSIONS, rebuild_days

MAX_BATCH = 1000
FUTURE_SKEW = timedelta(minutes=5)
STATUSES = {"ok", "error", "timeout"}
FEEDBACK = {"up": 1, "down": -1, "none": 0, 1: 1, -1: -1, 0: 0, None: 0}
LABELS = ("prompt_version", "feature", "variant", "user_id", "fallback_from", "flag", "shadow_of")
# Events committed less than this long ago are left for the next rollup pass, so a slow
# ingestion transaction with a lower id is never skipped by the watermark.
SETTLE = timedelta(seconds=10)

log = logging.getLogger(__name__)


# Bounds of one event (README "Usage API"). Text limits are the column sizes; tokens stay within
# PostgreSQL's integer column; a cost must fit its decimal column (and a day of them the
# rollups'); latency is at most a day.
MAX_TOKENS = 1_000_000_000
MAX_LATENCY_MS = 86_400_000
TEXT_LIMITS = {
    name: UsageEvent._meta.get_field(name).max_length
    for name in (
        "event_id",
        "model",
        "prompt_version",
        "feature",
        "variant",
        "fallback_from",
        "flag",
        "shadow_of",
    )
}
TEXT_LIMITS["user_id"] = 120  # stored hashed; bounded like the other labels
LABEL_LIMITS = tuple((name, TEXT_LIMITS[name]) for name in LABELS)
MODEL_REQUIRED = "required: model config key@version or provider model name"
ID_LIMIT, MODEL_LIMIT = TEXT_LIMITS["event_id"], TEXT_LIMITS["model"]
_cost_field = UsageEvent._meta.get_field("cost")
MAX_EVENT_COST = Decimal(10) ** (_cost_field.max_digits - _cost_field.decimal_places)


class BatchRejected(Exception):
    """The whole batch is refused; `errors` name each event by index and field. `status` is
    400 when the batch breaks the documented schema (types, bounds, lengths), 422 when it is
    well formed but breaks a rule a schema cannot state (time window, repeated ids, cost)."""

    def __init__(self, errors: list[dict], status: int = 400):
        self.errors = errors
        self.status = status
        super().__init__(f"{len(errors)} problem(s) in the batch")


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int


class Problems(list):
    """The batch's errors; `malformed` once any of them breaks the schema."""

    malformed = False

    def bad(self, index: int | None, name: str | None, message: str) -> None:
        self.malformed = True
        self.append({"index": index, "field": name, "message": message})

    def rule(self, index: int, name: str, message: str) -> None:
        self.append({"index": index, "field": name, "message": message})


def _int(event: dict, name: str, index: int, errors: Problems) -> int:
    value = event.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        errors.bad(index, name, f"must be a whole number from 0 to {MAX_TOKENS:,}")
        return 0
    return value


def _text_error(value: Any, name: str, required: str = "") -> str | None:
    """What is wrong with a text field (None when nothing): `required` is the message for a
    missing value, empty for an optional field. Text within its column size, without NUL
    characters (which PostgreSQL cannot store)."""
    if value is None or value == "":
        return required or None
    if type(value) is not str:
        return required or "must be text"
    if len(value) > TEXT_LIMITS[name]:
        return f"at most {TEXT_LIMITS[name]} characters"
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    if required and not value.strip():
        return required
    return None


def _resolve_model(application, ref: str) -> tuple[str, str]:
    """'key@N' of a model config → (provider model name, ref); anything else is a provider
    model name."""
    from console.registry.models import ModelConfigVersion

    key, _, number = ref.partition("@")
    if number.isdigit():
        version = ModelConfigVersion.objects.filter(
            head__application=application, head__key=key, number=int(number)
        ).first()
        if version is not None:
            return version.content.get("model", ref), ref
    return ref, ""


def parse_time(raw: Any):
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)  # fast path; accepts "Z" on Python 3.11+
    except ValueError:
        pass
    try:
        return parse_datetime(raw)
    except ValueError:  # well formed but impossible, e.g. minute 60
        return None


def anonymise(user_id: str) -> str:
    return hashlib.sha256(f"airlock-user:{user_id}".encode()).hexdigest()[:32] if user_id else ""


def validate_batch(application, environment, events: Any) -> list[dict]:
    """Every problem in the batch, or the events ready to store (with server-side cost), as
    column values by attribute name."""
    if not isinstance(events, list):
        raise BatchRejected([{"index": None, "field": "events", "message": "must be a list"}])
    if not events:
        raise BatchRejected([{"index": None, "field": "events", "message": "the batch is empty"}])
    if len(events) > MAX_BATCH:
        raise BatchRejected(
            [{"index": None, "field": "events", "message": f"at most {MAX_BATCH} events per batch"}]
        )
    errors = Problems()
    rows: list[dict] = []
    seen: dict[str, int] = {}
    book = PriceBook(application.pk)
    models_cache: dict[str, tuple[str, str]] = {}
    now = timezone.now()
    # Per batch, not per event: this loop runs for every event ingested. Each check below is a
    # fast path for a well-formed value; the slower helpers word the problem when there is one.
    application_id = application.pk
    environment_id = environment.pk if environment else None
    retention_days = settings.USAGE_RETENTION_DAYS
    latest, earliest = now + FUTURE_SKEW, now - timedelta(days=retention_days)
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            errors.bad(index, None, "must be a JSON object")
            continue
        start = len(errors)
        event_id = event.get("event_id")
        if not (
            type(event_id) is str
            and 0 < len(event_id) <= ID_LIMIT
            and "\x00" not in event_id
            and not event_id.isspace()
        ):
            errors.bad(index, "event_id", _text_error(event_id, "event_id", "required text"))
            event_id = ""
        elif event_id in seen:
            errors.rule(index, "event_id", f"repeats event {seen[event_id]}")
        else:
            seen[event_id] = index
        at = parse_time(event.get("time"))
        if at is None or at.tzinfo is None:
            errors.bad(index, "time", "ISO 8601 with a time zone, e.g. 2026-11-23T10:00:00Z")
        elif at > latest:
            errors.rule(index, "time", "is in the future")
        elif at < earliest:
            # Its hour may already be purged; rolling it up would rewrite that hour's history.
            errors.rule(index, "time", f"is older than the {retention_days}-day retention period")
        model_ref = event.get("model")
        if not (
            type(model_ref) is str
            and 0 < len(model_ref) <= MODEL_LIMIT
            and "\x00" not in model_ref
            and not model_ref.isspace()
        ):
            errors.bad(index, "model", _text_error(model_ref, "model", MODEL_REQUIRED))
            model_ref = ""
        labels = []
        for name, limit in LABEL_LIMITS:
            value = event.get(name)
            if value is None or value == "":
                labels.append("")
            elif type(value) is str and len(value) <= limit and "\x00" not in value:
                labels.append(value)
            else:
                errors.bad(index, name, _text_error(value, name))
                labels.append("")
        input_tokens = event.get("input_tokens", 0)
        if type(input_tokens) is not int or not 0 <= input_tokens <= MAX_TOKENS:
            input_tokens = _int(event, "input_tokens", index, errors)
        cached_tokens = event.get("cached_tokens", 0)
        if type(cached_tokens) is not int or not 0 <= cached_tokens <= MAX_TOKENS:
            cached_tokens = _int(event, "cached_tokens", index, errors)
        output_tokens = event.get("output_tokens", 0)
        if type(output_tokens) is not int or not 0 <= output_tokens <= MAX_TOKENS:
            output_tokens = _int(event, "output_tokens", index, errors)
        if cached_tokens > input_tokens:
            errors.rule(index, "cached_tokens", "cannot exceed input_tokens")
        latency = event.get("latency_ms")
        if latency is not None and (
            type(latency) not in (float, int) or not 0 <= latency <= MAX_LATENCY_MS  # NaN too
        ):
            errors.bad(index, "latency_ms", f"must be a number from 0 to {MAX_LATENCY_MS:,}")
        status = event.get("status", "ok")
        if type(status) is not str or status not in STATUSES:
            errors.bad(index, "status", "must be ok, error or timeout")
        cache_hit = event.get("cache_hit", False)
        if cache_hit is not True and cache_hit is not False:
            errors.bad(index, "cache_hit", "must be true or false")
        feedback = event.get("feedback")
        # Only scalars can be looked up: a list or object here is a wrong type, not a crash.
        if type(feedback) not in (str, int, type(None)) or feedback not in FEEDBACK:
            errors.bad(index, "feedback", "must be up, down or none")
        if len(errors) > start:
            continue
        if model_ref not in models_cache:
            models_cache[model_ref] = _resolve_model(application, model_ref)
        model, config_ref = models_cache[model_ref]
        cost, savings = book.cost_and_savings(model, at, input_tokens, cached_tokens, output_tokens)
        if cost >= MAX_EVENT_COST or savings >= MAX_EVENT_COST:
            errors.rule(
                index,
                "cost",
                f"${cost:,.2f} at the price of {model} in effect; one event may cost at most "
                f"${MAX_EVENT_COST - 1:,}.99: check the token counts",
            )
            continue
        rows.append(
            {
                "application_id": application_id,
                "environment_id": environment_id,
                "event_id": event_id,
                "at": at,
                "received_at": now,
                "model": model,
                "model_config": config_ref,
                "prompt_version": labels[0],
                "feature": labels[1],
                "variant": labels[2],
                "fallback_from": labels[4],
                "flag": labels[5],
                "shadow_of": labels[6],
                "latency_ms": None if latency is None else float(latency),
                "status": status,
                "cache_hit": cache_hit,
                "feedback": FEEDBACK[feedback],
                "user_hash": anonymise(labels[3]),
                "cost": cost,
                "savings": savings,
                "input_tokens": input_tokens,
                "cached_tokens": cached_tokens,
                "output_tokens": output_tokens,
            }
        )
    if errors:
        raise BatchRejected(errors, status=400 if errors.malformed else 422)
    return rows


def ingest(
    *, application, environment, events: Any, source: str = UsageEvent.Source.RUNTIME
) -> IngestResult:
    """Store a batch whole or not at all. Events already stored (same event_id in the same
    environment) are skipped, so a retried batch never double-counts."""
    rows = validate_batch(application, environment, events)
    for row in rows:
        row["source"] = source
    with transaction.atomic():
        if connection.vendor == "postgresql":
            accepted = _insert_new_events(rows)
        else:
            ids = [r["event_id"] for r in rows]
            existing = set(
                UsageEvent.objects.filter(
                    application=application, environment=environment, event_id__in=ids
                ).values_list("event_id", flat=True)
            )
            fresh = [UsageEvent(**r) for r in rows if r["event_id"] not in existing]
            UsageEvent.objects.bulk_create(fresh, batch_size=MAX_BATCH, ignore_conflicts=True)
            accepted = len(fresh)
    return IngestResult(accepted=accepted, duplicates=len(rows) - accepted)


def _insert_new_events(rows: list[dict]) -> int:
    """PostgreSQL: the whole batch in one statement (console.core.bulk), skipping event ids
    already stored in that environment. Returns how many were new."""
    # The conflict target is the unique constraint's expression index, word for word.
    return bulk.insert_new(
        UsageEvent,
        rows,
        '("application_id", (COALESCE("environment_id", 0)), "event_id") DO NOTHING',
    )


# ---------------------------------------------------------------- prices


def clean_tiers(tiers: Any) -> list[dict]:
    """Tiers as [{"above_input_tokens": int, "input_per_1m": n, "output_per_1m": n,
    "cached_input_per_1m": n (optional)}], sorted; ValidationError names the tier and field."""
    from django.core.exceptions import ValidationError

    if tiers in (None, ""):
        return []
    if not isinstance(tiers, list):
        raise ValidationError({"tiers": "must be a JSON list of tiers"})
    cleaned = []
    for n, tier in enumerate(tiers, start=1):
        if not isinstance(tier, dict):
            raise ValidationError({"tiers": f"tier {n} must be an object"})
        above = tier.get("above_input_tokens")
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            raise ValidationError({"tiers": f"tier {n}: above_input_tokens must be a whole number"})
        item = {"above_input_tokens": above}
        for name, required in (
            ("input_per_1m", True),
            ("output_per_1m", True),
            ("cached_input_per_1m", False),
        ):
            value = tier.get(name)
            if value is None and not required:
                continue
            try:
                number = Decimal(str(value))
                if not number.is_finite() or number < 0:
                    raise ValueError
            except (ValueError, ArithmeticError):
                raise ValidationError({"tiers": f"tier {n}: {name} must be a price ≥ 0"}) from None
            item[name] = float(number)
        unknown = set(tier) - {
            "above_input_tokens",
            "input_per_1m",
            "output_per_1m",
            "cached_input_per_1m",
        }
        if unknown:
            raise ValidationError(
                {"tiers": f"tier {n}: unknown field(s) {', '.join(sorted(unknown))}"}
            )
        cleaned.append(item)
    return sorted(cleaned, key=lambda t: t["above_input_tokens"])


def record_price(
    *,
    actor,
    application,
    model: str,
    effective_from: datetime,
    input_per_1m,
    cached_input_per_1m,
    output_per_1m,
    tiers: list[dict] | None = None,
    note: str = "",
) -> dict:
    """Add a price point (a correction when it dates back) and reprice the usage it covers:
    events of that model from `effective_from` until the next point. Audited with the
    before/after totals."""
    from django.core.exceptions import ValidationError

    tiers = clean_tiers(tiers)
    if PricePoint.objects.filter(
        application=application, model=model, effective_from=effective_from
    ).exists():
        when = f"{effective_from:%Y-%m-%d %H:%M}"
        message = f"{model} already has a price from {when}; date the correction differently"
        raise ValidationError({"effective_from": message})
    with transaction.atomic():
        point = PricePoint.objects.create(
            application=application,
            model=model,
            effective_from=effective_from,
            input_per_1m=Decimal(str(input_per_1m)),
            cached_input_per_1m=Decimal(str(cached_input_per_1m)),
            output_per_1m=Decimal(str(output_per_1m)),
            tiers=tiers,
            note=note,
        )
        following = (
            PricePoint.objects.filter(
                application=application, model=model, effective_from__gt=effective_from
            )
            .order_by("effective_from")
            .values_list("effective_from", flat=True)
            .first()
        )
        # Events without tokens have nothing a price applies to: a judge call recorded at its
        # eval run's cost keeps that cost.
        affected = UsageEvent.objects.filter(
            application=application, model=model, at__gte=effective_from
        ).exclude(input_tokens=0, cached_tokens=0, output_tokens=0)
        if following is not None:
            affected = affected.filter(at__lt=following)
        before = affected.aggregate(total=Sum("cost"), n=Count("id"))
        book = PriceBook(application.pk)
        changed = []
        for event in affected.only(
            "id", "at", "model", "input_tokens", "cached_tokens", "output_tokens"
        ).iterator(chunk_size=5000):
            event.cost = book.cost(
                event.model, event.at, event.input_tokens, event.cached_tokens, event.output_tokens
            )
            event.savings = book.savings(event.model, event.at, event.cached_tokens)
            changed.append(event)
            if len(changed) >= 5000:
                UsageEvent.objects.bulk_update(changed, ["cost", "savings"])
                changed = []
        UsageEvent.objects.bulk_update(changed, ["cost", "savings"])
        after = affected.aggregate(total=Sum("cost"))
        hours = set(affected.annotate(h=TruncHour("at")).values_list("h", flat=True).distinct())
        _recompute(application.pk, hours)
        summary = {
            "model": model,
            "effective_from": effective_from.isoformat(),
            "events_repriced": before["n"],
            "cost_before": str(before["total"] or 0),
            "cost_after": str(after["total"] or 0),
        }
        audit.record(
            actor=actor,
            action="price.record",
            obj=point,
            object_label=f"{model} from {effective_from:%Y-%m-%d}",
            application=application,
            before={"cost": summary["cost_before"]},
            after={
                "prices": [str(input_per_1m), str(cached_input_per_1m), str(output_per_1m)],
                "tiers": tiers,
                **summary,
            },
            reason=note,
        )
    return summary


# ---------------------------------------------------------------- rollups


def _bucket_counts() -> dict:
    counts = {}
    lower = None
    for n, upper in enumerate(LATENCY_BUCKETS_MS):
        condition = (
            Q(latency_ms__lt=upper)
            if lower is None
            else Q(latency_ms__gte=lower, latency_ms__lt=upper)
        )
        counts[f"b{n}"] = Count("id", filter=condition)
        lower = upper
    counts[f"b{len(LATENCY_BUCKETS_MS)}"] = Count("id", filter=Q(latency_ms__gte=lower))
    return counts


def _recompute(application_id: int, hours: set) -> int:
    """Rebuild the rollup rows of these hours from raw events (idempotent)."""
    if not hours:
        return 0
    hours = sorted(hours)
    buckets = _bucket_counts()
    rows = []
    for start in range(0, len(hours), 200):
        chunk = hours[start : start + 200]
        UsageHourly.objects.filter(application_id=application_id, hour__in=chunk).delete()
        aggregates = (
            UsageEvent.objects.filter(
                application_id=application_id,
                at__gte=chunk[0],
                at__lt=chunk[-1] + timedelta(hours=1),
            )
            .annotate(
                h=TruncHour("at"),
                shadow=Case(When(shadow_of="", then=False), default=True),
            )
            .filter(h__in=chunk)
            .values("h", *DIMENSIONS)
            .annotate(
                requests=Count("id"),
                errors=Count("id", filter=~Q(status="ok")),
                input_tokens_sum=Sum("input_tokens"),
                cached_tokens_sum=Sum("cached_tokens"),
                output_tokens_sum=Sum("output_tokens"),
                cost_sum=Sum("cost"),
                cost_squares=Sum(Cast(F("cost") * F("cost"), FloatField())),
                savings_sum=Sum("savings"),
                cache_hits=Count("id", filter=Q(cache_hit=True)),
                thumbs_up=Count("id", filter=Q(feedback=1)),
                thumbs_down=Count("id", filter=Q(feedback=-1)),
                **buckets,
            )
            .order_by()
        )
        for a in aggregates:
            rows.append(
                UsageHourly(
                    application_id=application_id,
                    hour=a["h"],
                    environment_id=a["environment_id"],
                    model=a["model"],
                    prompt_version=a["prompt_version"],
                    feature=a["feature"],
                    flag=a["flag"],
                    variant=a["variant"],
                    shadow=a["shadow"],
                    source=a["source"],
                    requests=a["requests"],
                    errors=a["errors"],
                    input_tokens=a["input_tokens_sum"] or 0,
                    cached_tokens=a["cached_tokens_sum"] or 0,
                    output_tokens=a["output_tokens_sum"] or 0,
                    cost=a["cost_sum"] or 0,
                    cost_squares=a["cost_squares"] or 0.0,
                    cache_savings=a["savings_sum"] or 0,
                    cache_hits=a["cache_hits"],
                    thumbs_up=a["thumbs_up"],
                    thumbs_down=a["thumbs_down"],
                    latency_buckets=[a[f"b{n}"] for n in range(len(LATENCY_BUCKETS_MS) + 1)],
                )
            )
    UsageHourly.objects.bulk_create(rows, batch_size=2000)
    rebuild_daily(application_id, {hour.astimezone(UTC).date() for hour in hours})
    return len(rows)


def rebuild_daily(application_id: int, days: set | None = None) -> int:
    """Refold daily rows from the hourly ones (all days that have hourly rows by default), for
    rollups written or repaired by hand."""
    if days is None:
        hours = UsageHourly.objects.filter(application_id=application_id).values_list("hour")
        days = {hour.astimezone(UTC).date() for (hour,) in hours.distinct().iterator()}
    return rebuild_days(UsageHourly, UsageDaily, application_id, days)


def rollup(*, max_events: int = 500_000, settle: timedelta = SETTLE) -> dict:
    """Fold events stored since the last pass into the hourly rollups. Safe to run often and
    concurrently (the watermark row is locked).

    Each application is folded in its own savepoint: a row that makes one application's
    rollup fail (a sum no column can hold, say) is logged and that application skipped for
    this pass, so no tenant's data can stop every other tenant's rollups. The skipped hours are
    rebuilt by `manage.py usage_rollup_repair APP` once the bad row is dealt with."""
    with transaction.atomic():
        state, _ = RollupState.objects.select_for_update().get_or_create(name="usage")
        settled = UsageEvent.objects.filter(received_at__lte=timezone.now() - settle)
        ceiling = settled.filter(pk__gt=state.last_event_id).aggregate(m=Max("pk"))["m"]
        if ceiling is None:
            return {"events": 0, "hours": 0, "rows": 0, "failed_applications": []}
        ceiling = min(ceiling, state.last_event_id + max_events)
        new = UsageEvent.objects.filter(pk__gt=state.last_event_id, pk__lte=ceiling)
        touched = (
            new.annotate(h=TruncHour("at")).values("application_id", "h").distinct().order_by()
        )
        by_app: dict[int, set] = {}
        for row in touched:
            by_app.setdefault(row["application_id"], set()).add(row["h"])
        count = new.count()
        rows, failed = 0, []
        for app_id, hours in sorted(by_app.items()):
            try:
                with transaction.atomic():
                    rows += _recompute(app_id, hours)
            except (DatabaseError, ArithmeticError, OverflowError) as exc:
                if not connection.is_usable():
                    raise  # the database is gone, not one tenant's data: retry the whole pass
                failed.append(app_id)
                log.error(
                    "usage rollup skipped application %s (%d hour(s)): %s: %s",
                    app_id,
                    len(hours),
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                )
        state.last_event_id = ceiling
        state.updated_at = timezone.now()
        state.save(update_fields=["last_event_id", "updated_at"])
    return {
        "events": count,
        "hours": sum(len(h) for h in by_app.values()),
        "rows": rows,
        "failed_applications": failed,
    }


def repair_rollups(application_id: int) -> int:
    """Rebuild every hour of an application that still has raw events: after a rollup pass
    skipped it (see rollup) and the row that broke it was removed or corrected."""
    hours = set(
        UsageEvent.objects.filter(application_id=application_id)
        .annotate(h=TruncHour("at"))
        .values_list("h", flat=True)
        .distinct()
    )
    with transaction.atomic():
        return _recompute(application_id, hours)


def purge_raw_events(*, older_than_days: int) -> int:
    """Retention for raw events: rollups keep the history, raw rows go after N days."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    state = RollupState.objects.filter(name="usage").first()
    watermark = state.last_event_id if state else 0
    deleted, _ = UsageEvent.objects.filter(at__lt=cutoff, pk__lte=watermark).delete()
    return deleted
