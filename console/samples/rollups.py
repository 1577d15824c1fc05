"""Hourly sample rollups: what the monitors need of each hour of samples (per environment and
prompt version), so a sweep reads a day of baseline as 24 rows instead of every sample.

The fold follows the usage rollups (console.usage.services.rollup): a watermark, the highest
sample id folded, moves forward over samples received at least SETTLE ago, and the hours those
samples fall in are recomputed from the raw samples (idempotent), counting only samples up to the
new watermark. So SampleHourly always holds exactly the samples with an id up to the watermark.
The judge scores samples after they were stored: it marks their hours stale (StaleSampleHour),
and the next pass recomputes them.

A reading over [start, end) is the raw reading, assembled: whole hours from the rollups, and from
the raw samples the partial hours at either end (the open hour among them, so alerts stay
timely), samples above the watermark (late arrivals and the last seconds), and stale hours. Each
pass raises the state's revision; a reading that saw it change is read again, and after a few
tries read whole from the raw samples."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from console.samples.models import (
    HALLUCINATION_BELOW,
    INPUT_BINS,
    Sample,
    SampleHourly,
    SampleRollupState,
    StaleSampleHour,
)
from console.usage.services import SETTLE

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
MAX_SAMPLES = 500_000  # folded per pass at most; a backlog takes several passes
MAX_RUN_HOURS = 48  # hours recomputed per query
STALE_PER_PASS = 5_000
READ_TRIES = 3


@dataclass(frozen=True)
class Tally:
    """Counts and sums over some samples: every sample metric is a ratio of two of them."""

    samples: int = 0
    judged: int = 0  # the judge is done with them (scored, or nothing it could score)
    faithfulness_n: int = 0
    faithfulness_sum: float = 0.0
    relevance_n: int = 0
    relevance_sum: float = 0.0
    hallucinated: int = 0  # judged faithfulness under HALLUCINATION_BELOW
    refused: int = 0
    rated: int = 0  # samples with feedback, up or down
    thumbs_down: int = 0
    input_bins: tuple[int, ...] = (0,) * len(INPUT_BINS)  # samples per INPUT_BINS bin

    def __add__(self, other: Tally) -> Tally:
        values = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name != "input_bins"
        }
        bins = tuple(a + b for a, b in zip(self.input_bins, other.input_bins, strict=True))
        return Tally(**values, input_bins=bins)

    @classmethod
    def of(cls, row: dict) -> Tally:
        """From one row of `aggregates()` (input_bins as the counts at or above each start)."""
        at_least = [row[f"b{n}"] or 0 for n in range(len(INPUT_BINS))]
        bins = tuple(a - b for a, b in zip(at_least, [*at_least[1:], 0], strict=True))
        return cls(
            **{f: row[f] or 0 for f in COUNTS},
            faithfulness_sum=row["faithfulness_sum"] or 0.0,
            relevance_sum=row["relevance_sum"] or 0.0,
            input_bins=bins,
        )

    @classmethod
    def of_rollup(cls, row: dict) -> Tally:
        """From a SampleHourly row read as values()."""
        return cls(
            **{f: row[f] for f in (*COUNTS, "faithfulness_sum", "relevance_sum")},
            input_bins=tuple(row["input_bins"]),
        )


COUNTS = (
    "samples", "judged", "faithfulness_n", "relevance_n", "hallucinated", "refused", "rated",
    "thumbs_down",
)  # fmt: skip
ROLLED = (*COUNTS, "faithfulness_sum", "relevance_sum", "input_bins")  # SampleHourly's sums


def aggregates() -> dict:
    """The aggregates of a Tally over sample rows (one query, any grouping)."""
    return {
        "samples": Count("id"),
        "judged": Count("id", filter=Q(judge_state=Sample.Judge.DONE)),
        "faithfulness_n": Count("faithfulness"),
        "faithfulness_sum": Sum("faithfulness"),
        "relevance_n": Count("relevance"),
        "relevance_sum": Sum("relevance"),
        "hallucinated": Count("id", filter=Q(faithfulness__lt=HALLUCINATION_BELOW)),
        "refused": Count("id", filter=Q(refused=True)),
        "rated": Count("id", filter=~Q(feedback=0)),
        "thumbs_down": Count("id", filter=Q(feedback=-1)),
        # At or above each bin's start; Tally.of takes the differences.
        **{f"b{n}": Count("id", filter=Q(input_chars__gte=at)) for n, at in enumerate(INPUT_BINS)},
    }


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------- reading


Key = tuple[datetime, str]  # (UTC hour, prompt version)


def _raw(rows: QuerySet) -> dict[Key, Tally]:
    grouped = (
        rows.annotate(h=TruncHour("at", tzinfo=UTC))
        .values("h", "prompt_version")
        .annotate(**aggregates())
        .order_by()
    )
    return {(row["h"], row["prompt_version"]): Tally.of(row) for row in grouped}


def _merge(into: defaultdict[Key, Tally], more: dict[Key, Tally]) -> None:
    for key, counted in more.items():
        into[key] += counted


def _spans(spans: Iterable[tuple[datetime, datetime]]) -> Q:
    """Samples received in any of these [low, high) spans (empty ones left out)."""
    where = Q(pk__in=[])  # none
    for low, high in spans:
        if low < high:
            where |= Q(at__gte=low, at__lt=high)
    return where


def _stale_hours(
    application_id: int, environment_id: int, low: datetime, high: datetime
) -> list[datetime]:
    hours = StaleSampleHour.objects.filter(
        application_id=application_id, environment_id=environment_id, hour__gte=low, hour__lt=high
    )
    return sorted(hours.values_list("hour", flat=True).order_by().distinct())


def tally(
    *,
    application_id: int,
    environment_id: int,
    version: str,
    start: datetime,
    end: datetime,
    raw: bool = False,
) -> Tally:
    """The samples of one environment (one prompt version, or all when blank) whose time is in
    [start, end), counted as the raw samples count them. `raw` reads them all from the raw
    samples (the reference the rollups must agree with)."""
    hours = hourly(
        application_id=application_id, environment_id=environment_id, version=version,
        start=start, end=end, raw=raw,
    )  # fmt: skip
    return sum(hours.values(), Tally())


def hourly(
    *,
    application_id: int,
    environment_id: int,
    version: str,
    start: datetime,
    end: datetime,
    raw: bool = False,
) -> dict[Key, Tally]:
    """As `tally`, per UTC hour and prompt version."""
    samples = Sample.objects.filter(application_id=application_id, environment_id=environment_id)
    if version:
        samples = samples.filter(prompt_version=version)
    whole_from = hour_of(start) if hour_of(start) == start else hour_of(start) + HOUR
    whole_to = hour_of(end)
    if raw or whole_from >= whole_to:
        return _raw(samples.filter(at__gte=start, at__lt=end))
    for _ in range(READ_TRIES):
        state = SampleRollupState.objects.filter(pk=1).values("last_sample_id", "revision").first()
        if state is None or not state["last_sample_id"]:
            break  # nothing folded yet
        stale = _stale_hours(application_id, environment_id, whole_from, whole_to)
        rollups = SampleHourly.objects.filter(
            application_id=application_id,
            environment_id=environment_id,
            hour__gte=whole_from,
            hour__lt=whole_to,
        ).exclude(hour__in=stale)
        if version:
            rollups = rollups.filter(prompt_version=version)
        found: defaultdict[Key, Tally] = defaultdict(
            Tally,
            {
                (row["hour"], row["prompt_version"]): Tally.of_rollup(row)
                for row in rollups.values("hour", "prompt_version", *ROLLED)
            },
        )
        # From the raw samples: the partial hours at either end, the stale hours whole, and
        # in the other whole hours the samples not folded yet.
        stale_spans = [(hour, hour + HOUR) for hour in stale]
        ends = [(start, whole_from), (whole_to, end)]
        _merge(found, _raw(samples.filter(_spans([*ends, *stale_spans]))))
        unfolded = samples.filter(
            pk__gt=state["last_sample_id"], at__gte=whole_from, at__lt=whole_to
        )
        _merge(found, _raw(unfolded.exclude(_spans(stale_spans)) if stale else unfolded))
        # A pass that committed while we read would make the parts disagree: read again.
        if SampleRollupState.objects.filter(pk=1, revision=state["revision"]).exists():
            return found
    return _raw(samples.filter(at__gte=start, at__lt=end))


# ---------------------------------------------------------------- folding


def mark_stale(application_id: int, environment_id: int, at: datetime) -> None:
    """A sample's scores, feedback, refusal or input changed after it may have been folded:
    the next pass recomputes its hour (and readings take that hour from the raw samples until
    then). Call it in the transaction that changes the sample, or after it commits."""
    StaleSampleHour.objects.create(
        application_id=application_id, environment_id=environment_id, hour=hour_of(at)
    )


def rollup(*, max_samples: int | None = MAX_SAMPLES, settle: timedelta = SETTLE) -> dict:
    """Fold samples stored since the last pass (received at least `settle` ago, so a slow
    ingestion transaction with a lower id is not skipped by the watermark), and the hours
    marked stale, into SampleHourly. Safe to run often; a pass already running makes this one
    return at once (skipped) rather than wait."""
    empty = {"samples": 0, "hours": 0, "rows": 0, "stale": 0, "skipped": False}
    SampleRollupState.objects.get_or_create(pk=1)
    with transaction.atomic():
        state = SampleRollupState.objects.select_for_update(skip_locked=True).filter(pk=1).first()
        if state is None:
            return {**empty, "skipped": True}
        watermark = state.last_sample_id
        ceiling = (
            Sample.objects.filter(pk__gt=watermark, received_at__lte=timezone.now() - settle)
            .aggregate(m=Max("pk"))["m"]
        )  # fmt: skip
        if ceiling is not None and max_samples is not None:
            ceiling = min(ceiling, watermark + max_samples)
        stale = list(
            StaleSampleHour.objects.order_by("pk").values_list(
                "pk", "application_id", "environment_id", "hour"
            )[:STALE_PER_PASS]
        )
        if ceiling is None and not stale:
            return empty
        ceiling = ceiling or watermark
        touched: dict[tuple[int, int], set[datetime]] = {}
        folded = 0
        for row in (
            Sample.objects.filter(pk__gt=watermark, pk__lte=ceiling)
            .annotate(h=TruncHour("at", tzinfo=UTC))
            .values("application_id", "environment_id", "h")
            .annotate(n=Count("id"))
            .order_by()
        ):
            touched.setdefault((row["application_id"], row["environment_id"]), set()).add(row["h"])
            folded += row["n"]
        for _, application_id, environment_id, hour in stale:
            touched.setdefault((application_id, environment_id), set()).add(hour)
        rows = sum(
            _refold(application_id, environment_id, hours, ceiling)
            for (application_id, environment_id), hours in sorted(touched.items())
        )
        StaleSampleHour.objects.filter(pk__in=[pk for pk, *_ in stale]).delete()
        state.last_sample_id = ceiling
        state.revision += 1
        state.updated_at = timezone.now()
        state.save(update_fields=["last_sample_id", "revision", "updated_at"])
    return {
        "samples": folded,
        "hours": sum(len(hours) for hours in touched.values()),
        "rows": rows,
        "stale": len(stale),
        "skipped": False,
    }


def _runs(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Consecutive stretches of the sorted hours (at most MAX_RUN_HOURS each), as [from, to)."""
    runs: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour and hour - runs[-1][0] < MAX_RUN_HOURS * HOUR:
            runs[-1] = (runs[-1][0], hour + HOUR)
        else:
            runs.append((hour, hour + HOUR))
    return runs


def _refold(application_id: int, environment_id: int, hours: set[datetime], ceiling: int) -> int:
    """Rebuild these hours' rollups of one environment from its samples up to `ceiling`."""
    written = 0
    for low, high in _runs(sorted(hours)):
        SampleHourly.objects.filter(
            application_id=application_id,
            environment_id=environment_id,
            hour__gte=low,
            hour__lt=high,
        ).delete()
        grouped = (
            Sample.objects.filter(
                application_id=application_id,
                environment_id=environment_id,
                at__gte=low,
                at__lt=high,
                pk__lte=ceiling,
            )
            .annotate(h=TruncHour("at", tzinfo=UTC))
            .values("h", "prompt_version")
            .annotate(**aggregates())
            .order_by()
        )
        rows = []
        for row in grouped:
            counted = Tally.of(row)
            rows.append(
                SampleHourly(
                    application_id=application_id,
                    environment_id=environment_id,
                    hour=row["h"],
                    prompt_version=row["prompt_version"],
                    **{f: getattr(counted, f) for f in (*COUNTS, "faithfulness_sum")},
                    relevance_sum=counted.relevance_sum,
                    input_bins=list(counted.input_bins),
                )
            )
        SampleHourly.objects.bulk_create(rows, batch_size=2000)
        written += len(rows)
    return written


def purge_before(cutoff: datetime) -> int:
    """Retention: the rollups (and stale marks) of hours before `cutoff` go with their
    samples."""
    StaleSampleHour.objects.filter(hour__lt=cutoff).delete()
    deleted, _ = SampleHourly.objects.filter(hour__lt=cutoff).delete()
    return deleted
