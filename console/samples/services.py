"""Sample writes: ingestion (redacted before anything is stored, idempotent, all-or-nothing),
shadow calls' answers (sent with their usage events), the judge sweep within each application's
share and daily spend (samples' quality, shadow answers' agreement with the live ones), the
sample policy, retention, and turning a sample into a golden-set item."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time as time_module
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from console.audit import services as audit
from console.core import bulk
from console.core.redaction import BUILTIN, PatternError, Redactor, clean_patterns
from console.datasets import services as dataset_services
from console.datasets.models import Dataset, DatasetItem
from console.evals.runner import RunSpec, judge
from console.evals.scorers import CITATION, refused
from console.registry.models import Application, ModelConfigVersion, PromptVersion
from console.samples import partitions, rollups
from console.samples.models import (
    JudgeSpend,
    Monitor,
    MonitorAlert,
    Sample,
    SamplePolicy,
    ShadowAnswer,
)
from console.usage.services import (
    FEEDBACK,
    FUTURE_SKEW,
    BatchRejected,
    IngestResult,
    Problems,
    parse_time,
)

log = logging.getLogger(__name__)
VERSION_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}@\d{1,6}")

MAX_BATCH = 500
TEXT_LIMITS = {
    "sample_id": 100,
    "prompt_version": 120,
    "model_config": 120,
    "variant": 120,
    "flag": 80,
    "output": 32_000,
    "context": 64_000,
    "feedback_comment": 2_000,
}
# A shadow call's answer, sent with its usage event (POST /api/v1/usage, `output`).
SHADOW_OUTPUT_LIMIT = 32_000
LABELS = ("prompt_version", "model_config", "variant", "flag")
MAX_INPUT_CHARS = 32_000  # the inputs object, as JSON
MAX_SOURCES = 50
MAX_SOURCE_CHARS = 300
JUDGED_METRICS = ("faithfulness", "relevance")
JUDGE_BATCH = 200
JUDGE_LOCK = "samples:judge-sweep"
JUDGE_LOCK_S = 900
JUDGE_DEADLINE_S = 480  # a sweep stops judging after 8 minutes; the next beat goes on


# ---------------------------------------------------------------- policy


def policy_of(application: Application) -> SamplePolicy:
    """The application's policy, or the default one (unsaved) when nobody has set it."""
    policy = SamplePolicy.objects.filter(application=application).first()
    return policy or SamplePolicy(application=application)


def redactor_of(policy: SamplePolicy) -> Redactor:
    return Redactor(kinds=policy.redact_kinds, patterns=policy.redact_patterns)


def update_policy(
    *,
    actor,
    application: Application,
    revision: int,
    redact_kinds: list[str],
    redact_patterns: str | list,
    judge_rate: float,
    judge_daily_cap: Decimal,
    judge_model: ModelConfigVersion | None,
    judge_prompts: dict[str, PromptVersion],
) -> SamplePolicy:
    """Change what is redacted and judged; audited. `revision` is the one the editor loaded: a
    change made since is refused rather than overwritten."""
    errors: dict[str, str] = {}
    unknown = [k for k in redact_kinds if k not in BUILTIN]
    if unknown:
        errors["redact_kinds"] = f"choose from {', '.join(BUILTIN)} (not {', '.join(unknown)})"
    try:
        patterns = clean_patterns(redact_patterns)
    except PatternError as exc:
        errors["redact_patterns"] = str(exc)
        patterns = []
    if not 0 <= judge_rate <= 1:
        errors["judge_rate"] = "a share from 0 to 1, e.g. 0.1 to judge one sample in ten"
    if not Decimal(0) <= judge_daily_cap <= Decimal(10_000):
        errors["judge_daily_cap"] = "from $0 to $10,000 a day"
    if judge_model is not None and judge_model.head.application_id != application.pk:
        errors["judge_model"] = "choose a model config of this application"
    for metric, prompt in judge_prompts.items():
        if metric not in JUDGED_METRICS:
            errors[f"judge_{metric}"] = f"no judged metric {metric!r}"
        elif prompt.head.application_id != application.pk:
            errors[f"judge_{metric}"] = "choose a prompt of this application"
    if judge_prompts and judge_model is None:
        errors["judge_model"] = "judge prompts need a judge model to ask"
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        policy = SamplePolicy.objects.select_for_update().filter(application=application).first()
        if policy is None:
            policy = SamplePolicy(application=application, revision=0)
        if policy.pk and policy.revision != revision:
            raise ValidationError(
                "someone changed this policy while you were editing; reload to see it"
            )
        before = _policy_state(policy) if policy.pk else None
        policy.redact_kinds = [k for k in BUILTIN if k in redact_kinds]
        policy.redact_patterns = patterns
        policy.judge_rate = judge_rate
        policy.judge_daily_cap = judge_daily_cap
        policy.judge_model = judge_model
        policy.judge_prompts = {metric: p.pk for metric, p in judge_prompts.items()}
        policy.revision += 1
        policy.updated_at = timezone.now()
        policy.updated_by = actor if getattr(actor, "pk", None) else None
        policy.save()
        audit.record(
            actor=actor, action="samples.policy.update", obj=policy,
            object_label=f"{application.key} sample policy", application=application,
            before=before, after=_policy_state(policy),
        )  # fmt: skip
    return policy


def _policy_state(policy: SamplePolicy) -> dict:
    return {
        "redact_kinds": policy.redact_kinds,
        "redact_patterns": policy.redact_patterns,
        "judge_rate": policy.judge_rate,
        "judge_daily_cap": str(policy.judge_daily_cap),
        "judge_model": policy.judge_model_id,
        "judge_prompts": policy.judge_prompts,
    }


# ---------------------------------------------------------------- ingestion


def judged_share(application_id: int, sample_id: str) -> float:
    """Where a sample falls in [0, 1): those under the policy's rate are judged. Fixed per
    sample, so a retried batch picks the same ones."""
    digest = hashlib.sha256(f"judge:{application_id}:{sample_id}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15


def _text(value: Any, limit: int) -> str | None:
    """The message for a text field that is not acceptable (None when it is)."""
    if type(value) is not str:
        return "must be text"
    if len(value) > limit:
        return f"at most {limit:,} characters"
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    return None


def _question(inputs: dict) -> str:
    value = inputs.get("question")
    if isinstance(value, str):
        return value
    return next((v for v in inputs.values() if isinstance(v, str)), "")


def _inputs_problem(inputs: dict) -> str | None:
    """What PostgreSQL's jsonb (or the size limit) would refuse in the inputs: NaN or infinite
    numbers, NUL anywhere (keys included), more than MAX_INPUT_CHARS characters as JSON."""
    try:
        encoded = json.dumps(inputs, allow_nan=False, ensure_ascii=False)
    except ValueError:
        return "numbers must be finite (no NaN or Infinity)"
    if len(encoded) > MAX_INPUT_CHARS:
        return f"at most {MAX_INPUT_CHARS:,} characters as JSON"
    if "\\u0000" in encoded:
        return "must not contain NUL (\\u0000) characters"
    return None


def validate_batch(application: Application, environment, samples: Any) -> list[dict]:
    """Every problem in the batch, or the samples ready to store (redacted), as column values
    by attribute name."""
    if not isinstance(samples, list):
        raise BatchRejected([{"index": None, "field": "samples", "message": "must be a list"}])
    if not samples:
        raise BatchRejected([{"index": None, "field": "samples", "message": "the batch is empty"}])
    if len(samples) > MAX_BATCH:
        raise BatchRejected(
            [{"index": None, "field": "samples", "message": f"at most {MAX_BATCH} per batch"}]
        )
    policy = policy_of(application)
    redactor = redactor_of(policy)
    # Only samples a judge will see wait for one: without a judge, the share is not taken.
    judges = policy.judge_model_id is not None and bool(policy.judge_prompts)
    errors = Problems()
    rows: list[dict] = []
    seen: dict[str, int] = {}
    now = timezone.now()
    retention = settings.SAMPLE_RETENTION_DAYS
    latest, earliest = now + FUTURE_SKEW, now - timedelta(days=retention)
    application_id, environment_id = application.pk, environment.pk
    judge_rate = policy.judge_rate if judges else 0.0
    for index, sample in enumerate(samples):
        if not isinstance(sample, dict):
            errors.bad(index, None, "must be a JSON object")
            continue
        start = len(errors)
        sample_id = sample.get("sample_id")
        problem = _text(sample_id, TEXT_LIMITS["sample_id"])
        if problem or not sample_id.strip():
            errors.bad(index, "sample_id", problem or "required text")
        elif sample_id in seen:
            errors.rule(index, "sample_id", f"repeats sample {seen[sample_id]}")
        else:
            seen[sample_id] = index
        at = parse_time(sample.get("time"))
        if at is None or at.tzinfo is None:
            errors.bad(index, "time", "ISO 8601 with a time zone, e.g. 2026-11-23T10:00:00Z")
        elif at > latest:
            errors.rule(index, "time", "is in the future")
        elif at < earliest:
            errors.rule(index, "time", f"is older than the {retention}-day retention period")
        inputs = sample.get("inputs", {})
        if not isinstance(inputs, dict):
            errors.bad(index, "inputs", "must be an object of the prompt's input variables")
        elif problem := _inputs_problem(inputs):
            errors.bad(index, "inputs", problem)
        texts = {}
        for name in ("output", "feedback_comment", *LABELS):
            value = sample.get(name)
            if value is None:
                texts[name] = ""
            elif problem := _text(value, TEXT_LIMITS[name]):
                errors.bad(index, name, problem)
            else:
                texts[name] = value
        context = sample.get("context")
        if isinstance(context, list) and all(isinstance(c, str) for c in context):
            context = "\n\n".join(context)
        if context is None:
            context = ""
        elif problem := _text(context, TEXT_LIMITS["context"]):
            errors.bad(index, "context", f"{problem} (text, or a list of passages)")
        sources = sample.get("sources") or []
        if not (
            isinstance(sources, list)
            and len(sources) <= MAX_SOURCES
            and all(_text(s, MAX_SOURCE_CHARS) is None for s in sources)
        ):
            errors.bad(
                index, "sources",
                f"a list of at most {MAX_SOURCES} source ids, each text of at most "
                f"{MAX_SOURCE_CHARS} characters",
            )  # fmt: skip
        feedback = sample.get("feedback")
        if type(feedback) not in (str, int, type(None)) or feedback not in FEEDBACK:
            errors.bad(index, "feedback", "must be up, down or none")
        if len(errors) > start:
            continue
        # Every value redacted in one walk, the labels and id too (an app may use an email
        # as an id), their replacements counted together.
        redacted, counts = redactor.redact(
            (inputs, texts["output"], context, texts["feedback_comment"], sources, sample_id,
             texts["prompt_version"], texts["model_config"], texts["variant"], texts["flag"])
        )  # fmt: skip
        r_inputs, r_output, r_context, r_comment, r_sources, r_id, *labels = redacted
        question = _question(r_inputs)
        pending = judged_share(application_id, sample_id) < judge_rate
        rows.append(
            {
                "application_id": application_id,
                "environment_id": environment_id,
                "sample_id": r_id,
                "at": at,
                "received_at": now,
                "prompt_version": labels[0],
                "model_config": labels[1],
                "variant": labels[2],
                "flag": labels[3],
                "question": question,
                "inputs": r_inputs,
                "output": r_output,
                "context": r_context,
                "sources": r_sources,
                "feedback": FEEDBACK[feedback],
                "feedback_comment": r_comment,
                "redactions": counts,
                "refused": bool(r_output) and refused(r_output),
                "input_chars": len(question),
                "judge_state": Sample.Judge.PENDING if pending else Sample.Judge.SKIPPED,
                "faithfulness": None,
                "relevance": None,
                "judge_reasons": {},
                "judge_cost": Decimal(0),
                "curated_into": "",
            }
        )
    if errors:
        raise BatchRejected(errors, status=400 if errors.malformed else 422)
    return rows


def ingest(*, application: Application, environment, samples: Any) -> IngestResult:
    """Store a batch whole or not at all, redacted by the application's policy first. Samples
    already stored (same sample_id and time in the same environment) are skipped."""
    rows = validate_batch(application, environment, samples)
    with transaction.atomic():
        if partitions.partitioned():
            partitions.ensure({row["at"].astimezone(UTC).date() for row in rows})
            accepted = bulk.insert_new(
                Sample,
                rows,
                '("application_id", "environment_id", "sample_id", "at") DO NOTHING',
                skip=("judged_at",),
            )
        else:
            keys = {(r["sample_id"], r["at"]) for r in rows}
            existing = set(
                Sample.objects.filter(
                    application=application,
                    environment=environment,
                    sample_id__in=[k[0] for k in keys],
                ).values_list("sample_id", "at")
            )
            fresh = [Sample(**r) for r in rows if (r["sample_id"], r["at"]) not in existing]
            Sample.objects.bulk_create(fresh, ignore_conflicts=True)
            accepted = len(fresh)
    return IngestResult(accepted=accepted, duplicates=len(rows) - accepted)


# ---------------------------------------------------------------- shadow answers


def shadow_output_problems(events: Any, may_store_answers: bool = True) -> list[dict]:
    """What is wrong with the `output` of the usage events in a batch (POST /api/v1/usage):
    only a shadow call (one with `shadow_of`) may carry its answer, as text of at most
    SHADOW_OUTPUT_LIMIT characters. Each problem names the event's index and the field. Checked
    before anything of the batch is stored, so a refused output refuses the whole batch. A key
    without samples:write (`may_store_answers=False`) may send no output at all."""
    if not isinstance(events, list):
        return []
    problems: list[dict] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or event.get("output") is None:
            continue
        problem = _text(event["output"], SHADOW_OUTPUT_LIMIT)
        if problem is None and not may_store_answers:
            # Answers are production text, like samples: a usage-only key stores none.
            problem = "storing answers needs a key with the samples:write scope"
        elif problem is None and not _shadow_of(event):
            problem = (
                "only a shadow call carries its output: give shadow_of, the event_id of the "
                "live call it ran beside"
            )
        if problem:
            problems.append({"index": index, "field": "output", "message": problem})
    return problems


def _shadow_of(event: dict) -> str:
    value = event.get("shadow_of")
    return value if isinstance(value, str) and value.strip() else ""


def store_shadow_answers(*, application: Application, environment, events: list) -> int:
    """Keep the answers of the shadow calls in a batch the usage ingestion has just accepted
    (so every event here is valid), redacted by the application's sample policy. Those in the
    judged share (by the live call's id, like its sample) wait for the agreement judge. A
    retried batch stores nothing twice. Returns how many answers the batch carried."""
    answered = [
        e for e in events if isinstance(e, dict) and e.get("output") is not None and _shadow_of(e)
    ]
    if not answered:
        return 0
    policy = policy_of(application)
    redactor = redactor_of(policy)
    judge_rate = policy.judge_rate if policy.judge_model_id is not None else 0.0
    now = timezone.now()
    rows = []
    for event in answered:
        (output, shadow_of), counts = redactor.redact((event["output"], event["shadow_of"]))
        model = event.get("model") or ""
        pending = judged_share(application.pk, event["shadow_of"]) < judge_rate
        rows.append(
            ShadowAnswer(
                application=application,
                environment=environment,
                event_id=event["event_id"],
                shadow_of=shadow_of[: ShadowAnswer._meta.get_field("shadow_of").max_length],
                at=parse_time(event["time"]),
                received_at=now,
                prompt_version=event.get("prompt_version") or "",
                model_config=model if VERSION_REF.fullmatch(model) else "",
                output=output,
                redactions=counts,
                judge_state=ShadowAnswer.Judge.PENDING if pending else ShadowAnswer.Judge.SKIPPED,
            )
        )
    ShadowAnswer.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


# ---------------------------------------------------------------- judging


@dataclass(frozen=True)
class SweepResult:
    judged: int = 0
    failed: int = 0
    capped: int = 0
    cost: Decimal = Decimal(0)


def _spec(policy: SamplePolicy) -> RunSpec | None:
    if policy.judge_model_id is None or not policy.judge_prompts:
        return None
    prompts = PromptVersion.objects.in_bulk(list(policy.judge_prompts.values()))
    return RunSpec(
        target_type="prompt",
        judge_model=policy.judge_model.content,
        judge_prompts={
            metric: prompts[pk].content
            for metric, pk in policy.judge_prompts.items()
            if pk in prompts
        },
        scorers=tuple(policy.judge_prompts),
    )


def judge_pending(*, limit: int = JUDGE_BATCH, now: datetime | None = None) -> SweepResult:
    """Judge waiting samples, oldest first, for every application with a judge: at most
    `limit` per application and sweep, and never past the day's spend cap (samples still
    waiting when the cap is reached are marked capped: that day's judging is over). One sweep
    at a time: a cache lock, held by a token and outliving the sweep's own deadline, so two
    beats cannot judge, and pay for, the same sample."""
    token = secrets.token_hex(8)
    if not cache.add(JUDGE_LOCK, token, timeout=JUDGE_LOCK_S):
        return SweepResult()
    deadline = time_module.monotonic() + JUDGE_DEADLINE_S
    try:
        total = SweepResult()
        for policy in SamplePolicy.objects.filter(judge_model__isnull=False).select_related(
            "judge_model", "application"
        ):
            if time_module.monotonic() >= deadline:
                break
            result = _judge_application(policy, limit, now or timezone.now(), deadline)
            total = SweepResult(
                total.judged + result.judged,
                total.failed + result.failed,
                total.capped + result.capped,
                total.cost + result.cost,
            )
        return total
    finally:
        if cache.get(JUDGE_LOCK) == token:  # never another sweep's lock
            cache.delete(JUDGE_LOCK)


def _judge_application(
    policy: SamplePolicy, limit: int, now: datetime, deadline: float
) -> SweepResult:
    """The application's waiting samples, then its waiting shadow answers, within one cap."""
    samples = _judge_samples(policy, limit, now, deadline)
    shadows = _judge_shadow_answers(policy, limit, now, deadline)
    return SweepResult(
        samples.judged + shadows.judged,
        samples.failed + shadows.failed,
        samples.capped + shadows.capped,
        samples.cost + shadows.cost,
    )


def _judge_samples(policy: SamplePolicy, limit: int, now: datetime, deadline: float) -> SweepResult:
    spec = _spec(policy)
    if spec is None:
        return SweepResult()
    application = policy.application
    day = now.astimezone(UTC).date()
    spend, _ = JudgeSpend.objects.get_or_create(application=application, day=day)
    earliest = now - timedelta(days=settings.SAMPLE_RETENTION_DAYS)
    pending = Sample.objects.filter(
        application=application, judge_state=Sample.Judge.PENDING, at__gte=earliest
    ).order_by("at")
    judged = failed = 0
    cost = Decimal(0)
    for sample in pending[:limit]:
        if spend.cost + cost >= policy.judge_daily_cap or time_module.monotonic() >= deadline:
            break
        sample_cost = Decimal(0)
        scores: dict[str, float] = {}
        reasons: dict[str, str] = {}
        for metric in spec.judge_prompts:
            if metric == "faithfulness" and not sample.context:
                reasons[metric] = "not judged: the sample came without retrieved context"
                continue
            score, reason, spent = judge(
                spec, metric, sample.question, sample.context, sample.output
            )
            sample_cost += Decimal(str(spent))
            if score is not None:
                scores[metric] = round(score, 4)
            if reason:
                reasons[metric] = reason[:500]
        ok = bool(scores) or all(r.startswith("not judged") for r in reasons.values())
        with transaction.atomic():
            Sample.objects.filter(pk=sample.pk, at=sample.at).update(
                judge_state=Sample.Judge.DONE if ok else Sample.Judge.FAILED,
                faithfulness=scores.get("faithfulness"),
                relevance=scores.get("relevance"),
                judge_reasons=reasons,
                judge_cost=sample_cost,
                judged_at=now,
            )
            if ok:  # its hour may be in the rollups already, counted unjudged
                rollups.mark_stale(application.pk, sample.environment_id, sample.at)
        JudgeSpend.objects.filter(pk=spend.pk).update(
            cost=F("cost") + sample_cost, judged=F("judged") + 1
        )
        cost += sample_cost
        judged += ok
        failed += not ok
    capped = 0
    if spend.cost + cost >= policy.judge_daily_cap:
        capped = Sample.objects.filter(
            application=application,
            judge_state=Sample.Judge.PENDING,
            at__gte=earliest,
            at__lt=now,
        ).update(judge_state=Sample.Judge.CAPPED)
    return SweepResult(judged, failed, capped, cost)


# The agreement judge: does the shadow's answer say what the live one said? Written for a real
# judge model, and in the shape the bundled simulator grades (a system prompt about
# faithfulness, QUESTION/CONTEXT/ANSWER sections): it scores the share of the shadow answer's
# statements the live answer supports.
AGREEMENT_PROMPT = {
    "system": (
        "You are an evaluator grading whether two answers to the same question agree in\n"
        "substance. The CONTEXT is the answer production served (the reference); the ANSWER is\n"
        "a candidate's. Grade how faithful the ANSWER is to the CONTEXT: 1 when it says the\n"
        "same things (wording, order and length do not matter), lower for each statement the\n"
        "CONTEXT does not support, 0 when it contradicts it or answers something else.\n"
        'Respond with JSON only: {"score": <0..1>, "reason": "<one sentence>"}.'
    ),
    "user": "QUESTION: {{ question }}\nCONTEXT: {{ context }}\nANSWER: {{ answer }}",
    "variables": ["question", "context", "answer"],
    "params": {},
}
# A shadow answer waits this long for its live call's sample before it is marked unmatched.
LIVE_SAMPLE_WAIT = timedelta(hours=1)
# How far apart in time a live sample and its shadow's answer may be.
LIVE_SAMPLE_SLACK = timedelta(days=1)


def agreement(
    spec: RunSpec, question: str, live: str, shadow: str
) -> tuple[float | None, str, float]:
    """(score 0..1 or None, reason, cost) of the shadow's answer against the live one, on what
    they say: the sources they cite ("[kb-12]") are left out. Identical answers agree, and an
    answer that declines where the other answers does not, without asking the judge; anything
    else is the judge's call (AGREEMENT_PROMPT)."""
    live, shadow = _uncited(live), _uncited(shadow)
    if live.casefold() == shadow.casefold():
        return 1.0, "The two answers are the same.", 0.0
    if not live.strip() or not shadow.strip():
        return 0.0, "One of the two answers is empty.", 0.0
    declined = refused(live), refused(shadow)
    if declined == (True, True):
        return 1.0, "Both answers decline.", 0.0
    if declined[0] != declined[1]:
        which = "live" if declined[0] else "shadow"
        return 0.0, f"Only the {which} answer declines.", 0.0
    return judge(spec, "agreement", question, live, shadow)


def _uncited(text: str) -> str:
    return " ".join(CITATION.sub(" ", text).split()).replace(" .", ".")


def _judge_shadow_answers(
    policy: SamplePolicy, limit: int, now: datetime, deadline: float
) -> SweepResult:
    """Judge waiting shadow answers whose live answer is known (the live call's sample), oldest
    first, with the policy's judge model, within the day's cap the samples share. Answers whose
    live call was not sampled within LIVE_SAMPLE_WAIT are marked unmatched; once the cap is
    reached, those still waiting are marked capped, like samples."""
    if policy.judge_model_id is None:
        return SweepResult()
    application = policy.application
    waiting = ShadowAnswer.objects.filter(
        application=application,
        judge_state=ShadowAnswer.Judge.PENDING,
        at__gte=now - timedelta(days=settings.SAMPLE_RETENTION_DAYS),
        at__lt=now + FUTURE_SKEW,
    )
    if not waiting.exists():
        return SweepResult()
    live = Sample.objects.filter(
        application=application,
        environment=OuterRef("environment"),
        sample_id=OuterRef("shadow_of"),
        at__gte=OuterRef("at") - LIVE_SAMPLE_SLACK,
        at__lte=OuterRef("at") + LIVE_SAMPLE_SLACK,
    )
    # Measured from arrival, not the call's time: a client flushing hourly is not too late.
    waiting.filter(received_at__lt=now - LIVE_SAMPLE_WAIT).exclude(Exists(live)).update(
        judge_state=ShadowAnswer.Judge.UNMATCHED,
        judge_reason="The live call's answer was not sent as a sample.",
    )
    spend, _ = JudgeSpend.objects.get_or_create(
        application=application, day=now.astimezone(UTC).date()
    )
    answers = []
    if spend.cost < policy.judge_daily_cap:
        answers = list(waiting.filter(Exists(live)).order_by("at")[:limit])
    lives = _live_answers(application, answers)
    spec = RunSpec(
        target_type="prompt",
        judge_model=policy.judge_model.content,
        judge_prompts={"agreement": AGREEMENT_PROMPT},
        scorers=("agreement",),
    )
    judged = failed = 0
    cost = Decimal(0)
    for answer in answers:
        if spend.cost + cost >= policy.judge_daily_cap or time_module.monotonic() >= deadline:
            break
        if answer.pk not in lives:
            continue
        question, live_output = lives[answer.pk]
        score, reason, spent = agreement(spec, question, live_output, answer.output)
        answer_cost = Decimal(str(spent))
        ShadowAnswer.objects.filter(pk=answer.pk).update(
            judge_state=ShadowAnswer.Judge.FAILED if score is None else ShadowAnswer.Judge.DONE,
            agreement=None if score is None else round(score, 4),
            judge_reason=(reason or "")[:500],
            judge_cost=answer_cost,
            judged_at=now,
        )
        JudgeSpend.objects.filter(pk=spend.pk).update(
            cost=F("cost") + answer_cost, judged=F("judged") + 1
        )
        cost += answer_cost
        judged += score is not None
        failed += score is None
    capped = 0
    if spend.cost + cost >= policy.judge_daily_cap:
        capped = waiting.filter(at__lt=now).update(judge_state=ShadowAnswer.Judge.CAPPED)
    return SweepResult(judged, failed, capped, cost)


def _live_answers(application: Application, answers: list[ShadowAnswer]) -> dict[int, tuple]:
    """answer pk → (question, output) of its live call's sample, in one query: the sample of
    the same environment whose sample_id is the answer's shadow_of, the nearest in time should
    an id have been reused."""
    if not answers:
        return {}
    found = Sample.objects.filter(
        application=application,
        environment_id__in={a.environment_id for a in answers},
        sample_id__in={a.shadow_of for a in answers},
        at__gte=min(a.at for a in answers) - LIVE_SAMPLE_SLACK,
        at__lte=max(a.at for a in answers) + LIVE_SAMPLE_SLACK,
    ).values_list("environment_id", "sample_id", "at", "question", "output")
    samples: dict[tuple[int, str], list[tuple]] = {}
    for environment_id, sample_id, at, question, output in found:
        samples.setdefault((environment_id, sample_id), []).append((at, question, output))
    lives = {}
    for answer in answers:
        candidates = samples.get((answer.environment_id, answer.shadow_of))
        if candidates:
            _at, question, output = min(candidates, key=lambda c: abs(c[0] - answer.at))
            lives[answer.pk] = (question, output)
    return lives


# ---------------------------------------------------------------- retention


def purge(*, older_than_days: int, today: date | None = None) -> int:
    """Retention: the days before the window go whole (partitions dropped on PostgreSQL, rows
    deleted elsewhere). Also makes the next two days' partitions, so ingestion rarely has to.
    Returns how many days (partitions) or rows went."""
    today = today or timezone.now().astimezone(UTC).date()
    first_kept = today - timedelta(days=older_than_days)
    # Shadow answers follow the samples' retention (a plain table: rows go).
    ShadowAnswer.objects.filter(at__lt=datetime.combine(first_kept, time.min, UTC)).delete()
    # So do the sample rollups, so monitors never count samples that are gone.
    rollups.purge_before(datetime.combine(first_kept, time.min, UTC))
    if partitions.partitioned():
        partitions.ensure([today, today + timedelta(days=1), today + timedelta(days=2)])
        return len(partitions.drop_before(first_kept))
    cutoff = datetime.combine(first_kept, time.min, UTC)
    deleted, _ = Sample.objects.filter(at__lt=cutoff).delete()
    return deleted


# ---------------------------------------------------------------- curation


def curate(*, actor, sample: Sample, dataset: Dataset, values: dict) -> DatasetItem:
    """A sample becomes a draft item of a golden set of its application: `values` are the
    item's fields as the curator left them (pre-filled from the sample), the provenance goes in
    the note, and the item id (prod-<sample>) is fixed, so one sample cannot be added twice.
    The sample remembers where it went."""
    if dataset.application_id != sample.application_id:
        raise ValidationError({"dataset": "choose a golden set of this application"})
    if sample.curated_into:
        raise ValidationError(
            f"this sample is already in a golden set, as {sample.curated_into}; each sample "
            "goes in once"
        )
    values = dict(values)
    values["id"] = f"prod-{sample.pk}"
    feedback = {1: "thumbs up", -1: "thumbs down"}.get(sample.feedback, "no feedback")
    provenance = (
        f"From production sample {sample.sample_id} (#{sample.pk}): "
        f"{sample.environment.name}, {sample.prompt_version or 'prompt version not reported'}, "
        f"{sample.at:%Y-%m-%d %H:%M} UTC, {feedback}"
        + (f": {sample.feedback_comment}" if sample.feedback_comment else ".")
    )
    if sample.output:
        provenance += f"\nThe answer it gave: {sample.output[:1000]}"
    values["note"] = "\n".join(filter(None, [str(values.get("note") or "").strip(), provenance]))
    tags = values.get("tags") or []
    values["tags"] = sorted({*tags, "production"})
    with transaction.atomic():
        item = dataset_services.add_item(actor=actor, dataset=dataset, values=values)
        Sample.objects.filter(pk=sample.pk, at=sample.at).update(
            curated_into=f"{dataset.key}#{item.item_id}"
        )
    return item


def prefill(sample: Sample) -> dict:
    """The golden-set item a sample suggests: its question and other inputs, the sources it
    cited, a refusal marked unanswerable; what the answer should and must not say is for the
    curator to write."""
    variables = {k: v for k, v in sample.inputs.items() if k != "question"}
    return {
        "question": sample.question,
        "variables": variables,
        "expected_sources": list(sample.sources),
        "unanswerable": sample.refused,
        "tags": ["thumbs-down"] if sample.feedback == -1 else [],
    }


# ---------------------------------------------------------------- monitors


def _monitor_state(monitor: Monitor) -> dict:
    return {
        "environment": monitor.environment.key, "version": monitor.version,
        "metric": monitor.metric, "window_minutes": monitor.window_minutes,
        "baseline_minutes": monitor.baseline_minutes, "warn": monitor.warn,
        "critical": monitor.critical, "min_samples": monitor.min_samples,
        "cooldown_minutes": monitor.cooldown_minutes, "enabled": monitor.enabled,
    }  # fmt: skip


def create_monitor(
    *,
    actor,
    application: Application,
    environment,
    metric: str,
    version: str = "",
    window_minutes: int = 60,
    baseline_minutes: int = 24 * 60,
    warn: float | None = None,
    critical: float | None = None,
    min_samples: int = 30,
    cooldown_minutes: int = 15,
) -> Monitor:
    """A new monitor (audited). Thresholds default to 10% / 15% worse than the baseline, or to
    PSI 0.1 / 0.25 for input drift; metrics read from the hourly usage rollups need whole
    hours."""
    from console.samples import monitors

    defaults = monitors.DRIFT_DEFAULTS if metric == Monitor.Metric.DRIFT else monitors.DEFAULTS
    warn = defaults["warn"] if warn is None else warn
    critical = defaults["critical"] if critical is None else critical
    errors: dict[str, str] = {}
    if metric not in Monitor.Metric.values:
        errors["metric"] = f"choose one of {', '.join(Monitor.Metric.values)}"
    if environment is None or environment.application_id != application.pk:
        errors["environment"] = "choose an environment of this application"
    if version and not VERSION_REF.fullmatch(version):
        errors["version"] = "a prompt version as key@N, e.g. answer-question@3, or blank for all"
    if not 5 <= window_minutes <= 7 * 24 * 60:
        errors["window_minutes"] = "from 5 minutes to 7 days (10,080 minutes)"
    elif metric in monitors.FROM_USAGE and window_minutes % 60:
        errors["window_minutes"] = "this metric comes from hourly rollups: use whole hours"
    if not window_minutes <= baseline_minutes <= 30 * 24 * 60:
        errors["baseline_minutes"] = "at least the window, at most 30 days (43,200 minutes)"
    elif metric in monitors.FROM_USAGE and baseline_minutes % 60:
        errors["baseline_minutes"] = "this metric comes from hourly rollups: use whole hours"
    if not 0 < warn < critical:
        errors["critical"] = "the warning threshold must be above 0 and below the critical one"
    if not 1 <= min_samples <= 100_000:
        errors["min_samples"] = "from 1 to 100,000"
    if not 0 <= cooldown_minutes <= 7 * 24 * 60:
        errors["cooldown_minutes"] = "from 0 to 7 days (10,080 minutes)"
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        if Monitor.objects.filter(
            application=application, environment=environment, version=version, metric=metric
        ).exists():
            raise ValidationError(
                {"metric": "this environment and version already have a monitor on this metric"}
            )
        monitor = Monitor.objects.create(
            application=application, environment=environment, version=version, metric=metric,
            window_minutes=window_minutes, baseline_minutes=baseline_minutes, warn=warn,
            critical=critical, min_samples=min_samples, cooldown_minutes=cooldown_minutes,
            created_by=actor if getattr(actor, "pk", None) else None,
        )  # fmt: skip
        audit.record(
            actor=actor, action="monitor.create", obj=monitor, object_label=str(monitor),
            application=application, environment=environment, after=_monitor_state(monitor),
        )  # fmt: skip
    return monitor


def set_monitor_enabled(*, actor, monitor: Monitor, enabled: bool) -> Monitor:
    with transaction.atomic():
        monitor = Monitor.objects.select_for_update().get(pk=monitor.pk)
        if monitor.enabled == enabled:
            return monitor
        before = _monitor_state(monitor)
        monitor.enabled = enabled
        monitor.save(update_fields=["enabled"])
        audit.record(
            actor=actor, action="monitor.enable" if enabled else "monitor.disable", obj=monitor,
            object_label=str(monitor), application=monitor.application_id,
            environment=monitor.environment_id, before=before, after=_monitor_state(monitor),
        )  # fmt: skip
    return monitor


def decide_alert(*, actor, alert: MonitorAlert, action: str, note: str = "") -> MonitorAlert:
    """Acknowledge (someone is on it) or resolve (it is over) an alert; audited. A resolved
    alert stays resolved; acknowledging twice changes nothing."""
    if action not in ("acknowledge", "resolve"):
        raise ValidationError({"action": "acknowledge or resolve"})
    with transaction.atomic():
        alert = MonitorAlert.objects.select_for_update().select_related("monitor").get(pk=alert.pk)
        if alert.state == MonitorAlert.State.RESOLVED:
            raise ValidationError("this alert is already resolved")
        if action == "acknowledge" and alert.state == MonitorAlert.State.ACKNOWLEDGED:
            return alert
        before = {"state": alert.state}
        now = timezone.now()
        user = actor if getattr(actor, "pk", None) else None
        if action == "acknowledge":
            alert.state = MonitorAlert.State.ACKNOWLEDGED
            alert.acknowledged_by, alert.acknowledged_at = user, now
        else:
            alert.state = MonitorAlert.State.RESOLVED
            alert.resolved_by, alert.resolved_at = user, now
        alert.note = (note or alert.note)[:500]
        alert.save()
        monitor = alert.monitor
        audit.record(
            actor=actor, action=f"monitor.alert.{action}", obj=alert,
            object_label=f"{alert.severity} on {monitor}", application=monitor.application_id,
            environment=monitor.environment_id, before=before,
            after={"state": alert.state, "note": alert.note},
        )  # fmt: skip
    return alert
