"""Sample reads: the filtered, keyset-paged list curators browse, and the quality series (per
day, environment and prompt version) everyone reads."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet, Sum

from console.registry.models import Application, Environment
from console.samples import rollups
from console.samples.models import JudgeSpend, Sample
from console.usage.services import FUTURE_SKEW

PAGE = 50
FEEDBACK = {"down": -1, "up": 1, "none": 0}
SCORES = ("faithfulness", "relevance")
MAX_DAYS = 30


@dataclass(frozen=True)
class SampleFilters:
    environment: str = ""
    version: str = ""  # prompt version, "key@N"
    feedback: str = ""  # "", "down", "up", "none"
    below: float | None = None  # a judged score under this
    refused: bool = False
    curated: str = ""  # "", "yes", "no"
    days: int = 7

    @classmethod
    def from_query(cls, params) -> tuple[SampleFilters, dict[str, str]]:
        errors: dict[str, str] = {}
        below = None
        raw = (params.get("below") or "").strip()
        if raw:
            try:
                below = float(raw)
                if not 0 < below <= 1:
                    raise ValueError
            except ValueError:
                errors["below"] = f"score below: {raw!r} is not a score from 0 to 1, e.g. 0.5"
                below = None
        feedback = params.get("feedback") or ""
        if feedback not in FEEDBACK:
            errors["feedback"] = "feedback: choose thumbs down, thumbs up or none"
            feedback = ""
        days = (params.get("days") or "7").strip()
        if not days.isdigit() or not 1 <= int(days) <= MAX_DAYS:
            errors["days"] = f"days: a whole number from 1 to {MAX_DAYS}"
            days = "7"
        curated = params.get("curated") or ""
        return (
            cls(
                environment=(params.get("environment") or "").strip(),
                version=(params.get("version") or "").strip()[:120],
                feedback=feedback,
                below=below,
                refused=params.get("refused") == "1",
                curated=curated if curated in {"yes", "no"} else "",
                days=int(days),
            ),
            errors,
        )

    def query(self) -> dict[str, str]:
        """The filters as query parameters (for the next page's link)."""
        values = {
            "environment": self.environment,
            "version": self.version,
            "feedback": self.feedback,
            "below": "" if self.below is None else str(self.below),
            "refused": "1" if self.refused else "",
            "curated": self.curated,
            "days": str(self.days) if self.days != 7 else "",
        }
        return {k: v for k, v in values.items() if v}


def filtered(application: Application, filters: SampleFilters, now: datetime) -> QuerySet:
    samples = Sample.objects.filter(application=application, at__gte=now - timedelta(filters.days))
    if filters.environment:
        samples = samples.filter(environment__name=filters.environment)
    if filters.version:
        samples = samples.filter(prompt_version=filters.version)
    if filters.feedback:
        samples = samples.filter(feedback=FEEDBACK[filters.feedback])
    if filters.below is not None:
        samples = samples.filter(Q(faithfulness__lt=filters.below) | Q(relevance__lt=filters.below))
    if filters.refused:
        samples = samples.filter(refused=True)
    if filters.curated == "yes":
        samples = samples.exclude(curated_into="")
    elif filters.curated == "no":
        samples = samples.filter(curated_into="")
    return samples


def page(
    application: Application, filters: SampleFilters, now: datetime, after: str = ""
) -> tuple[list[Sample], str]:
    """A page of samples, newest first, and the cursor of the next page ("" on the last).
    Keyset paging on (at, id): page 200 costs what page 1 does."""
    samples = filtered(application, filters, now).select_related("environment")
    at, _, pk = after.partition("_")
    if at and pk.isdigit():
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            moment = None
        if moment is not None:
            samples = samples.filter(Q(at__lt=moment) | Q(at=moment, id__lt=int(pk)))
    rows = list(
        samples.defer("inputs", "context", "judge_reasons").order_by("-at", "-id")[: PAGE + 1]
    )
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    cursor = f"{rows[-1].at.isoformat()}_{rows[-1].pk}" if more else ""
    return rows, cursor


def versions(application: Application) -> list[str]:
    """The prompt versions samples may name, "key@N", for the filter's suggestions."""
    from console.registry.models import PromptVersion

    return [
        f"{key}@{number}"
        for key, number in PromptVersion.objects.filter(head__application=application)
        .order_by("head__key", "-number")
        .values_list("head__key", "number")[:200]
    ]


@dataclass(frozen=True)
class QualityRow:
    day: date
    environment: str
    version: str
    samples: int
    judged: int
    faithfulness: float | None
    relevance: float | None
    refusal_rate: float | None
    hallucination_rate: float | None
    thumbs_down_rate: float | None


def quality(
    application: Application, environment: Environment | None, days: int, now: datetime
) -> list[QualityRow]:
    """Per UTC day, environment and prompt version: how many samples came, how many were
    judged, the mean judged scores, and the refusal, hallucination (faithfulness under 0.5)
    and thumbs-down rates (of the samples rated). Oldest day first. Read from the hourly
    rollups (and the raw samples they do not hold yet), so a month of millions of samples is
    a few thousand rows."""
    start = datetime.combine(now.astimezone(UTC).date() - timedelta(days=days - 1), time.min, UTC)
    environments = (
        [environment] if environment is not None else list(application.environments.all())
    )
    days_of: defaultdict[tuple[date, str, str], rollups.Tally] = defaultdict(rollups.Tally)
    for env in environments:
        hours = rollups.hourly(
            application_id=application.pk, environment_id=env.pk, version="",
            start=start, end=now + FUTURE_SKEW,
        )  # fmt: skip
        for (hour, version), counted in hours.items():
            days_of[(hour.astimezone(UTC).date(), env.name, version)] += counted
    return [
        QualityRow(
            day=day,
            environment=env_name,
            version=version or "—",
            samples=t.samples,
            judged=t.judged,
            faithfulness=_ratio(t.faithfulness_sum, t.faithfulness_n),
            relevance=_ratio(t.relevance_sum, t.relevance_n),
            refusal_rate=_ratio(t.refused, t.samples),
            hallucination_rate=_ratio(t.hallucinated, t.faithfulness_n),
            thumbs_down_rate=_ratio(t.thumbs_down, t.rated),
        )
        for (day, env_name, version), t in sorted(days_of.items())
        if t.samples
    ]


def _ratio(part: float, whole: int) -> float | None:
    return part / whole if whole else None


def judge_spend(application: Application, day: date) -> tuple[Decimal, int]:
    spent = JudgeSpend.objects.filter(application=application, day=day).aggregate(
        cost=Sum("cost"), judged=Sum("judged")
    )
    return spent["cost"] or Decimal(0), spent["judged"] or 0


def waiting(application: Application) -> int:
    return Sample.objects.filter(application=application, judge_state=Sample.Judge.PENDING).count()
