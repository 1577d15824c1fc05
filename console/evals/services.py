"""Eval writes: launch, execute (bounded concurrency, resumable), cancel — each audited."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import slug_re
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from console.audit import services as audit
from console.audit.services import SYSTEM
from console.core import egress
from console.core.canonical import content_hash
from console.datasets import services as dataset_services
from console.datasets.items import CONTENT_FIELDS, TAG_PATTERN
from console.datasets.models import Dataset, DatasetItem, PublishedItem
from console.datasets.selectors import item_checks, version_items
from console.evals import metrics as eval_metrics
from console.evals.models import EvalResult, EvalRun, EvalShard, GatePolicy, ResultReview
from console.evals.runner import RunSpec, evaluate_item, prompt_messages
from console.evals.scorers import (
    AGENT,
    ALL_SCORERS,
    DEFAULT_K,
    DEFAULT_MAX_STEPS,
    DEFAULT_SCORERS,
    JUDGED,
    MAX_K,
    MAX_STEPS,
    SAFETY,
)
from console.evals.simulator import tokens
from console.registry.templating import MissingVariables
from console.registry.validation import DESTINATION_REFUSED, model_config_problems
from console.usage import services as usage
from console.usage.models import UsageEvent

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=30)
PROGRESS_EVERY_S = 0.5
MAX_CONCURRENCY = 256  # no more than the connections a model client keeps (llm.KEEP_ALIVE)
SLICED_METRIC = re.compile(r"^(?P<metric>[a-z0-9_]+)\[(?P<slice>[^\]]*)\]$")


class DuplicateRun(Exception):
    def __init__(self, run: EvalRun):
        self.run = run
        super().__init__(
            f"The same evaluation is already {run.status} (run #{run.pk}); follow that one."
        )


def default_gates(application, dataset) -> tuple[list[dict], float]:
    policy = (
        GatePolicy.objects.filter(application=application)
        .filter(Q(dataset=dataset) | Q(dataset__isnull=True))
        # The dataset's own policy first; NULL (the application default) last on every database.
        .order_by(F("dataset_id").asc(nulls_last=True))
        .first()
    )
    return (policy.gates, policy.max_error_rate) if policy else ([], 0.1)


def clean_gates(gates: list[dict]) -> list[dict]:
    """Gates as stored: {"metric", "op", "threshold"} and, for a slice of the items, "slice"
    (a tag). A metric written `metric[tag]` is read as that slice. A release policy's gate may
    also name the golden set it holds for ("dataset")."""
    cleaned = []
    for n, gate in enumerate(gates, start=1):
        metric, op, tag = gate.get("metric"), gate.get("op"), gate.get("slice")
        if isinstance(metric, str) and (match := SLICED_METRIC.match(metric)):
            metric, tag = match["metric"], match["slice"]
        if metric not in eval_metrics.METRICS:
            raise ValidationError({"gates": f"gate {n}: unknown metric {metric!r}"})
        if tag is not None and (not isinstance(tag, str) or not TAG_PATTERN.match(tag)):
            raise ValidationError(
                {"gates": f"gate {n}: {tag!r} is not a tag (lowercase letters, digits, - and _)"}
            )
        if op not in eval_metrics.OPS:
            raise ValidationError({"gates": f"gate {n}: operator must be >= or <="})
        try:
            threshold = float(gate.get("threshold"))
        except (TypeError, ValueError):
            raise ValidationError({"gates": f"gate {n}: threshold must be a number"}) from None
        scope = gate.get("dataset")
        if scope is not None and (not isinstance(scope, str) or not slug_re.match(scope)):
            raise ValidationError({"gates": f"gate {n}: {scope!r} is not a golden set key"})
        cleaned.append(
            {
                "metric": metric,
                "op": op,
                "threshold": threshold,
                **({"slice": tag} if tag else {}),
                **({"dataset": scope} if scope else {}),
            }
        )
    return cleaned


def estimate(
    *, prompt_version, model_version, dataset_version, judge_model_version=None, scorers=()
) -> dict:
    """Rough cost before launching: prompt tokens from the rendered templates, output tokens at
    a sixth of max_tokens, plus the judge's calls. Items that leave a prompt variable unfilled
    are never sent (they are item errors), so they cost nothing; `unfilled` counts them. A
    prompt offering tools is called once per tool call the item expects and once more for the
    answer, each call sending the tools along (an agent that loops costs more than this)."""
    items = list(version_items(dataset_version))
    config = model_version.content if model_version else {}
    input_tokens = output_tokens = unfilled = calls = 0
    sent = len(items)
    if prompt_version is not None:
        offered = prompt_version.content.get("tools")
        tools_tokens = tokens(json.dumps(offered)) if offered else 0
        for item in items:
            try:
                messages = prompt_messages(prompt_version.content, item)
            except MissingVariables:
                unfilled += 1
                continue
            turns = 1
            if offered:
                expected = item.get("expected_tools") or []
                turns += sum(1 for entry in expected if not entry.get("forbidden"))
            calls += turns
            input_tokens += turns * (sum(tokens(m["content"]) for m in messages) + tools_tokens)
        sent = len(items) - unfilled
        # Answers rarely use their whole budget: a sixth of max_tokens tracks real runs.
        output_tokens = calls * int(config.get("max_tokens", 512)) // 6
    from console.evals.llm import Prices

    cost = Prices.of(config).cost(input_tokens, 0, output_tokens)
    judged = [m for m in JUDGED if m in scorers]
    if judge_model_version is not None and judged:
        judge_in = (input_tokens + output_tokens) * len(judged)
        cost += Prices.of(judge_model_version.content).cost(judge_in, 0, 60 * sent * len(judged))
    return {
        "items": len(items),
        "unfilled": unfilled,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost": round(cost, 6),
        "per_item": round(cost / len(items), 8) if items else 0.0,
    }


def launch_run(
    *,
    actor,
    application,
    dataset_version,
    prompt_version=None,
    model_version=None,
    http_target: dict | None = None,
    judge_model_version=None,
    judge_prompts: dict | None = None,
    scorers: list[str] | None = None,
    scorer_options: dict | None = None,
    gates: list[dict] | None = None,
    max_error_rate: float | None = None,
    cost_cap: float | None = None,
    concurrency: int | None = None,
) -> EvalRun:
    """Queue a run (enqueued after commit). The same combination already queued or running
    raises DuplicateRun instead of paying for the work twice."""
    target_type = EvalRun.Target.HTTP if http_target else EvalRun.Target.PROMPT_MODEL
    errors = {}
    if target_type == EvalRun.Target.PROMPT_MODEL and (
        prompt_version is None or model_version is None
    ):
        errors["target"] = (
            "choose a prompt version and a model config version (or an HTTP endpoint)"
        )
    if http_target and not str(http_target.get("url", "")).startswith(("http://", "https://")):
        errors["http_target"] = "the endpoint must be an http(s) URL"
    elif http_target:
        try:
            egress.check_url(str(http_target["url"]), unresolved_ok=True)
        except egress.EgressRefused:
            errors["http_target"] = DESTINATION_REFUSED
    for name, version in (
        ("model_version", model_version),
        ("judge_model_version", judge_model_version),
    ):
        problems = model_config_problems(version.content) if version is not None else []
        if problems:
            errors[name] = (
                f"{version.head.key} v{version.number} cannot be used for runs: {problems[0]}"
            )
    for obj in (prompt_version, model_version, judge_model_version, dataset_version):
        if obj is not None and obj.head.application_id != application.pk:
            errors["target"] = "every version must belong to this application"
    scorers = list(scorers or DEFAULT_SCORERS)
    # Safety and agent cases always run their own checks: a suite scored without them would
    # pass vacuously.
    checks = item_checks(dataset_version)
    for scorer in [SAFETY[v] for v in checks if v in SAFETY] + (
        list(AGENT) if "expected_tools" in checks else []
    ):
        if scorer not in scorers:
            scorers.append(scorer)
    unknown = [s for s in scorers if s not in ALL_SCORERS]
    if unknown:
        errors["scorers"] = f"unknown scorer(s): {', '.join(unknown)}"
    if any(m in scorers for m in JUDGED) and judge_model_version is None:
        errors["judge"] = "LLM-as-judge scorers need a judge model config"
    if cost_cap is not None and cost_cap <= 0:
        errors["cost_cap"] = "must be a positive amount in USD"
    # Every run records its retrieval depth, so what its @k scores mean never depends on a default.
    scorer_options = {"k": DEFAULT_K, **(scorer_options or {})}
    k = scorer_options["k"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        errors["retrieval_k"] = f"the retrieval depth k must be a whole number from 1 to {MAX_K}"
    offers_tools = bool(prompt_version is not None and prompt_version.content.get("tools"))
    if "expected_tools" in checks and prompt_version is not None and not offers_tools:
        errors["prompt_version"] = (
            f"{dataset_version.head.key}@{dataset_version.number} expects tool calls, but "
            f"{prompt_version.head.key}@{prompt_version.number} offers no tools: choose a prompt "
            "version that lists them"
        )
    if set(AGENT) & set(scorers) or offers_tools:  # agent runs record their step bound, as k
        scorer_options.setdefault("max_steps", DEFAULT_MAX_STEPS)
        steps = scorer_options["max_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            errors["max_steps"] = f"the step bound must be a whole number from 1 to {MAX_STEPS}"
    else:
        scorer_options.pop("max_steps", None)
    context_path = (http_target or {}).get("context_path", "-")
    if not isinstance(context_path, str) or not context_path:
        errors["http_target"] = "context_path must name a JSON path, e.g. data.passages"
    if errors:
        raise ValidationError(errors)
    default, default_max_error = default_gates(application, dataset_version.head)
    gates = clean_gates(default if gates is None else gates)
    concurrency = concurrency or int(
        (model_version.content if model_version else {}).get("max_concurrency", 8)
    )
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    judge_prompts = {k: v for k, v in (judge_prompts or {}).items() if k in scorers}
    fingerprint = content_hash(
        {
            "target": target_type,
            "prompt": getattr(prompt_version, "pk", None),
            "model": getattr(model_version, "pk", None),
            "http": http_target or {},
            "dataset": dataset_version.pk,
            "judge": getattr(judge_model_version, "pk", None),
            "judge_prompts": {k: v.pk for k, v in judge_prompts.items()},
            "scorers": sorted(scorers),
            "options": scorer_options,
        }
    )
    label = _label(prompt_version, model_version, http_target, dataset_version)
    with transaction.atomic():
        existing = (
            EvalRun.objects.select_for_update()
            .filter(application=application, fingerprint=fingerprint, status__in=EvalRun.ACTIVE)
            .first()
        )
        if existing is not None:
            raise DuplicateRun(existing)
        guess = estimate(
            prompt_version=prompt_version,
            model_version=model_version,
            dataset_version=dataset_version,
            judge_model_version=judge_model_version,
            scorers=scorers,
        )
        run = EvalRun.objects.create(
            application=application,
            target_type=target_type,
            prompt_version=prompt_version,
            model_version=model_version,
            http_target=http_target or {},
            dataset_version=dataset_version,
            judge_model_version=judge_model_version,
            judge_prompts={k: v.pk for k, v in judge_prompts.items()},
            scorers=scorers,
            scorer_options=scorer_options,
            gates=gates,
            max_error_rate=default_max_error if max_error_rate is None else max_error_rate,
            cost_cap=cost_cap,
            concurrency=concurrency,
            shards=(shards := shard_count(concurrency, guess["items"])),
            fingerprint=fingerprint,
            label=label,
            total_items=guess["items"],
            metrics={"estimate": guess},
            created_by=actor,
        )
        if shards > 1:
            EvalShard.objects.bulk_create(EvalShard(run=run, index=i) for i in range(shards))
        audit.record(
            actor=actor,
            action="eval.launch",
            obj=run,
            object_label=f"run #{run.pk} {label}",
            application=application,
            after={"gates": gates, "scorers": scorers, "cost_cap": cost_cap, "estimate": guess},
        )
        transaction.on_commit(lambda: enqueue(run))
    return run


def enqueue(run: EvalRun, queue: str | None = None) -> None:
    """Publish the run's tasks: one, or one per shard, so that idle workers each take a shard
    at once. (A run_eval without a shard, as requeue_stalled sends, fans out by itself.)"""
    from console.evals.tasks import run_eval

    if run.shards > 1:
        for index in range(run.shards):
            run_eval.apply_async((run.pk,), {"shard": index}, queue=queue)
    else:
        run_eval.apply_async((run.pk,), queue=queue)


def shard_count(concurrency: int, items: int) -> int:
    """Tasks a run is split into: one per AIRLOCK_EVAL_SHARD_CONCURRENCY calls in flight (so
    that more worker processes share a run past what one process's threads keep up with),
    never more than there are items."""
    per_task = settings.AIRLOCK_EVAL_SHARD_CONCURRENCY
    return max(1, min(-(-concurrency // per_task), items))


@dataclass(frozen=True)
class Part:
    """The share of a run one task evaluates: every `count`-th item from `index` (all of them
    when count is 1), with its share of the concurrency and of the cost cap."""

    index: int = 0
    count: int = 1

    def holds(self, position: int) -> bool:
        return (position - 1) % self.count == self.index

    def concurrency(self, total: int) -> int:
        return max(1, total // self.count + (self.index < total % self.count))

    @property
    def sharded(self) -> bool:
        return self.count > 1


def _label(prompt_version, model_version, http_target, dataset_version) -> str:
    if http_target:
        target = http_target["url"]
    else:
        prompt = f"{prompt_version.head.key}@{prompt_version.number}"
        target = f"{prompt} × {model_version.head.key}@{model_version.number}"
    return f"{target} on {dataset_version.head.key}@{dataset_version.number}"[:300]


def cancel_run(*, actor, run: EvalRun) -> EvalRun:
    with transaction.atomic():
        locked = EvalRun.objects.select_for_update().get(pk=run.pk)
        if not locked.active:
            raise ValidationError(
                f"Run #{run.pk} is already {locked.get_status_display().lower()}."
            )
        locked.cancel_requested = True
        fields = ["cancel_requested"]
        if locked.status == EvalRun.Status.QUEUED and locked.lease_until is None:
            locked.status = EvalRun.Status.CANCELLED
            locked.finished_at = timezone.now()
            fields += ["status", "finished_at"]
        locked.save(update_fields=fields)
        audit.record(
            actor=actor,
            action="eval.cancel",
            obj=locked,
            object_label=f"run #{locked.pk} {locked.label}",
            application=locked.application_id,
        )
    return locked


MAX_REVIEW_NOTE = 2000


def review_result(
    *, actor, result: EvalResult, verdict: str, note: str = "", base_revision: int = 0
) -> ResultReview:
    """A person's pass/fail (and note) on one answer. `base_revision` is the revision of the
    review the reviewer saw (0: none yet); a review changed since is a conflict, not an
    overwrite. Errored rows have no answer to review."""
    errors = {}
    if verdict not in ResultReview.Verdict.values:
        errors["verdict"] = "choose pass or fail"
    note = (note or "").strip()
    if len(note) > MAX_REVIEW_NOTE:
        errors["note"] = f"keep the note under {MAX_REVIEW_NOTE} characters (it has {len(note)})"
    if result.status != EvalResult.Status.OK:
        errors["result"] = "an errored item has no answer to review"
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        existing = ResultReview.objects.select_for_update().filter(result=result).first()
        seen = existing.revision if existing else 0
        if seen != base_revision:
            who = existing.reviewer.username if existing and existing.reviewer else "someone"
            raise ValidationError(
                {
                    "revision": f"{who} reviewed this answer meanwhile "
                    f"({existing.verdict if existing else 'removed'}): reload to see it"
                }
            )
        before = {"verdict": existing.verdict, "note": existing.note} if existing else None
        review = existing or ResultReview(result=result, revision=0)
        review.verdict, review.note, review.reviewer = verdict, note, actor
        review.revision += 1
        review.reviewed_at = timezone.now()
        review.save()
        run = result.run
        audit.record(
            actor=actor,
            action="eval.review",
            obj=review,
            object_label=f"run #{run.pk} item {result.item_id}",
            application=run.application_id,
            before=before,
            after={"verdict": verdict, "note": note},
        )
    return review


def reviewed_to_item(*, actor, result: EvalResult, dataset: Dataset) -> DatasetItem:
    """A reviewed answer becomes a draft item of a golden set of the run's application: the
    run's item as it was published, tagged reviewed-pass or reviewed-fail, with its provenance
    in the note. An answer people passed becomes the reference answer; a failed one is quoted
    in the note, for the curator to turn into expected or forbidden facts. The id
    (rev<run>-<item>) is fixed, so the same answer cannot be added twice."""
    review = ResultReview.objects.select_related("reviewer").filter(result=result).first()
    run = result.run
    errors = {}
    if review is None:
        errors["result"] = "review the answer first: only reviewed answers become items"
    if dataset.application_id != run.application_id:
        errors["dataset"] = "choose a golden set of this application"
    if errors:
        raise ValidationError(errors)
    source = (
        PublishedItem.objects.filter(version_id=run.dataset_version_id, item_id=result.item_id)
        .select_related("snapshot")
        .first()
    )
    content = dict(source.snapshot.content) if source else {"question": result.question}
    values = {name: content.get(name) for name in CONTENT_FIELDS}
    values["id"] = f"rev{run.pk}-{result.item_id}"[:64]
    values["tags"] = sorted({*(content.get("tags") or []), f"reviewed-{review.verdict}"})
    who = review.reviewer.username if review.reviewer else "a former member"
    provenance = (
        f"From run #{run.pk} ({run.label}), item {result.item_id}: reviewed {review.verdict} "
        f"by {who}" + (f": {review.note}" if review.note else ".")
    )
    if review.verdict == ResultReview.Verdict.PASS and result.output:
        values["reference_answer"] = result.output
    elif result.output:
        provenance += f"\nThe answer it failed: {result.output[:1000]}"
    values["note"] = "\n".join(filter(None, [content.get("note") or "", provenance]))
    return dataset_services.add_item(actor=actor, dataset=dataset, values=values)


def build_spec(run: EvalRun) -> RunSpec:
    from console.registry.models import PromptVersion

    judge_prompts = {
        metric: PromptVersion.objects.get(pk=pk).content
        for metric, pk in (run.judge_prompts or {}).items()
    }
    return RunSpec(
        target_type=run.target_type,
        prompt=run.prompt_version.content if run.prompt_version_id else {},
        model=run.model_version.content if run.model_version_id else {},
        http_target=run.http_target,
        judge_model=run.judge_model_version.content if run.judge_model_version_id else {},
        judge_prompts=judge_prompts,
        scorers=tuple(run.scorers),
        scorer_options=run.scorer_options,
    )


@dataclass(frozen=True)
class Outcome:
    status: str
    retry_in: float = 0.0


def worker_name() -> str:
    """Unique per execution: a redelivered copy of a task on the same worker is someone else."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _claim(run_id: int, owner: str) -> bool:
    now = timezone.now()
    return bool(
        EvalRun.objects.filter(pk=run_id, status__in=EvalRun.ACTIVE)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_owner=owner, lease_until=now + LEASE, status=EvalRun.Status.RUNNING)
    )


def _claim_shard(run_id: int, index: int, owner: str) -> bool:
    """Take shard `index`'s lease. The run's own lease only says that some shard is alive:
    every shard renews it, so the run is requeued only once all of them stopped beating."""
    now = timezone.now()
    with transaction.atomic():
        if not EvalRun.objects.filter(pk=run_id, status__in=EvalRun.ACTIVE).update(
            lease_until=now + LEASE, status=EvalRun.Status.RUNNING
        ):
            return False
        return bool(
            EvalShard.objects.filter(run_id=run_id, index=index, finished_at__isnull=True)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .update(lease_owner=owner, lease_until=now + LEASE)
        )


def unfinished_shards(run_id: int) -> list[int]:
    """The shards of an active sharded run still to be evaluated ([] for a run in one task)."""
    return list(
        EvalShard.objects.filter(
            run_id=run_id, run__status__in=EvalRun.ACTIVE, finished_at__isnull=True
        ).values_list("index", flat=True)
    )


def execute_run(run_id: int, owner: str | None = None, shard: int | None = None) -> Outcome:
    """Run (or resume) an eval, or shard `shard` of a sharded one. Items already stored are
    skipped, so a redelivered task picks up where a killed worker stopped; a lease keeps two
    workers off the same run (or shard). Without `shard`, a sharded run's unfinished shards
    run here side by side, each in a thread of its own."""
    owner = owner or worker_name()
    shards = EvalRun.objects.filter(pk=run_id).values_list("shards", flat=True).get()
    if shards > 1 and shard is None:
        return _execute_shards_here(run_id, owner)
    part = Part(shard or 0, shards) if shards > 1 else Part()
    if not (_claim_shard(run_id, part.index, owner) if part.sharded else _claim(run_id, owner)):
        return _not_claimed(run_id, part)
    run = EvalRun.objects.select_related(
        "prompt_version__head",
        "model_version__head",
        "judge_model_version",
        "dataset_version__head",
    ).get(pk=run_id)
    if run.started_at is None:
        EvalRun.objects.filter(pk=run.pk, started_at__isnull=True).update(started_at=timezone.now())
    try:
        stop_reason, progress = _execute(run, owner, part)
    except (OperationalError, InterfaceError):
        # The database went away (a restart, a failover): not the run's fault. Stored items are
        # kept; the task retries and resumes once the lease it holds runs out.
        log.warning("eval run %s lost its database connection; it will resume", run_id)
        raise
    except Exception:
        log.exception("eval run %s crashed", run_id)
        EvalRun.objects.filter(pk=run.pk).update(
            status=EvalRun.Status.FAILED,
            finished_at=timezone.now(),
            lease_owner="",
            lease_until=None,
        )
        raise
    if part.sharded:
        return _finish_shard(run, part, owner, stop_reason, progress)
    return Outcome(_finalize(run, stop_reason))


def _not_claimed(run_id: int, part: Part) -> Outcome:
    run = EvalRun.objects.get(pk=run_id)
    lease_until = run.lease_until
    if part.sharded:
        shard = EvalShard.objects.get(run_id=run_id, index=part.index)
        lease_until = None if shard.finished_at else shard.lease_until
    if run.active and lease_until:
        return Outcome("busy", max(1.0, (lease_until - timezone.now()).total_seconds()))
    return Outcome(run.status)


def _execute_shards_here(run_id: int, owner: str) -> Outcome:
    """Every unfinished shard of a run in this process, one thread each (for callers without
    Celery workers: bench_evals in process, a shell). Each thread closes its own connection."""
    failures: list[BaseException] = []

    def shard_in_thread(index: int) -> None:
        try:
            execute_run(run_id, owner=f"{owner}/{index}", shard=index)
        except BaseException as exc:  # re-raised in the caller's thread below
            failures.append(exc)
        finally:
            connection.close()  # this thread's own connection

    threads = [
        threading.Thread(target=shard_in_thread, args=(i,), name=f"eval-{run_id}-shard-{i}")
        for i in unfinished_shards(run_id)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return Outcome(finalize_sharded(run_id))


def _finish_shard(
    run: EvalRun, part: Part, owner: str, stop_reason: str, progress: dict
) -> Outcome:
    """Mark this shard finished; the last shard of the run to finish finalises it, once."""
    EvalShard.objects.filter(run=run, index=part.index, lease_owner=owner).update(
        **progress,
        stop_reason=stop_reason,
        finished_at=timezone.now(),
        lease_owner="",
        lease_until=None,
    )
    return Outcome(finalize_sharded(run.pk))


def finalize_sharded(run_id: int) -> str:
    """Finalise a sharded run if every shard has finished and nobody has yet: the run's row
    lock makes the last two shards to finish take turns, and only the first finds it active."""
    with transaction.atomic():
        run = EvalRun.objects.select_for_update().get(pk=run_id)
        reasons = list(EvalShard.objects.filter(run=run).values_list("finished_at", "stop_reason"))
        if not run.active or any(finished is None for finished, _ in reasons):
            return run.status
        given = {reason for _, reason in reasons}
        reason = next((r for r in ("cancelled", "cost_cap") if r in given), "")
        run = EvalRun.objects.select_related("application").get(pk=run_id)
        return _finalize(run, reason)


# A run whose lease ran out this long ago, or that has waited queued this long without a worker
# taking it, has lost its task message (a broker restarted without persistence, a purge).
STALLED_AFTER = timedelta(minutes=2)
REQUEUE_EVERY = timedelta(minutes=5)


def requeue_stalled(now=None) -> list[int]:
    """Publish run_eval again for active runs nobody is working on. Safe when the original
    message still exists: the lease lets exactly one copy run, the others find it busy or done.
    A run is requeued at most every REQUEUE_EVERY, so a long queue is not flooded."""
    from django.core.cache import cache

    from console.evals.tasks import run_eval

    now = now or timezone.now()
    stalled = EvalRun.objects.filter(status__in=EvalRun.ACTIVE).filter(
        Q(lease_until__lt=now - STALLED_AFTER)
        | Q(lease_until__isnull=True, created_at__lt=now - STALLED_AFTER)
    )
    requeued = []
    for run_id in stalled.values_list("pk", flat=True)[:100]:
        if not cache.add(f"airlock:eval-requeued:{run_id}", 1, REQUEUE_EVERY.total_seconds()):
            continue
        run_eval.delay(run_id)
        requeued.append(run_id)
    if requeued:
        log.warning("requeued stalled eval runs %s", requeued)
    return requeued


STORE_EVERY_S = 0.2


class _Slots:
    """The run's calls in flight, shared by its worker threads and its own thread.

    Each worker takes the next item itself as soon as its call is done, so a free slot never
    waits for the run's thread (which writes results, beats the lease and looks for a cancel).
    Every field is read and written under `lock`."""

    def __init__(self, pending, budget: CostGuard, spent: float, counts: dict, workers: int):
        self.lock = threading.Condition()
        self.pending = pending
        self.budget = budget
        self.spent = spent
        self.counts = counts
        self.in_flight = 0
        self.workers = workers
        self.unsaved: list[dict] = []
        self.stop_reason = ""
        self.crash: BaseException | None = None
        self.over = threading.Event()  # every worker has left, or one crashed
        self.first = threading.Event()  # a result is in (or it is over)

    def take(self) -> dict | None:
        """The next item to evaluate, or None when there is none or the run must stop."""
        with self.lock:
            while not self.stop_reason:
                verdict = self.budget.admit(self.spent, self.in_flight)
                if verdict == "stop":
                    self.stop_reason = "cost_cap"
                    self.lock.notify_all()  # workers waiting to be admitted leave too
                    break
                if verdict == "wait":
                    # A call in flight will show what an item really costs; it wakes us.
                    self.lock.wait()
                    continue
                item = next(self.pending, None)
                if item is None:
                    break
                self.in_flight += 1
                return item
            return None

    def finish(self, item: dict, data: dict) -> None:
        item_cost = data.get("cost", 0.0) + data.get("judge_cost", 0.0)
        with self.lock:
            self.in_flight -= 1
            self.unsaved.append({"position": item["position"], **data})
            self.spent += item_cost
            self.budget.seen(item_cost)
            self.counts["done"] += 1
            self.counts["errors"] += data["status"] == "error"
            self.counts["passed"] += bool(data.get("passed"))
            self.lock.notify_all()
        if not self.first.is_set():
            self.first.set()

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.in_flight -= 1
            self.crash = self.crash or exc
            self.stop_reason = self.stop_reason or "crashed"
            self.lock.notify_all()
        self.over.set()
        self.first.set()

    def exit(self) -> None:
        with self.lock:
            self.workers -= 1
            if not self.workers:
                self.over.set()
                self.first.set()

    def halt(self, reason: str) -> None:
        """No worker takes another item (a reason already given stays)."""
        with self.lock:
            self.stop_reason = self.stop_reason or reason
            self.lock.notify_all()

    def drain(self) -> list[dict]:
        with self.lock:
            batch, self.unsaved = self.unsaved, []
            return batch


def _work(slots: _Slots, spec: RunSpec) -> None:
    try:
        while (item := slots.take()) is not None:
            try:
                data = evaluate_item(spec, item)
            except BaseException as exc:
                slots.fail(exc)
                return
            slots.finish(item, data)
    finally:
        slots.exit()


def _execute(run: EvalRun, owner: str, part: Part) -> tuple[str, dict]:
    """Keep the part's share of `concurrency` calls in flight; store finished results in small
    batches. Worker threads refill their own slots, so the calls never wait on the database."""
    spec = build_spec(run)
    every = [
        {**item, "position": n}
        for n, item in enumerate(version_items(run.dataset_version), start=1)
    ]
    items = [item for item in every if part.holds(item["position"])]
    # The part's share of the cost cap: its share of the items.
    cap = run.cost_cap * len(items) / len(every) if run.cost_cap and part.sharded else run.cost_cap
    # What a resumed run already stored, in one pass: ids to skip, counts, spend so far.
    budget = CostGuard(cap, run.metrics.get("estimate", {}).get("per_item", 0.0))
    done_ids: set[str] = set()
    counts = {"done": 0, "errors": 0, "passed": 0}
    spent = 0.0
    for item_id, position, status, passed, cost, judge_cost in EvalResult.objects.filter(
        run=run
    ).values_list("item_id", "position", "status", "passed", "cost", "judge_cost"):
        if not part.holds(position):
            continue
        done_ids.add(item_id)
        counts["errors"] += status == EvalResult.Status.ERROR
        counts["passed"] += passed is True
        spent += cost + judge_cost
        budget.seen(cost + judge_cost)
    counts["done"] = len(done_ids)
    pending = iter([i for i in items if i["id"] not in done_ids])
    EvalRun.objects.filter(pk=run.pk).update(total_items=len(every))
    workers = max(1, min(part.concurrency(run.concurrency), len(items) - len(done_ids)))
    slots = _Slots(pending, budget, spent, counts, workers)
    stored = counts["done"]

    def store() -> None:
        nonlocal stored
        batch = slots.drain()
        if batch:
            EvalResult.objects.bulk_create(
                [EvalResult(run=run, **data) for data in batch], ignore_conflicts=True
            )
            stored += len(batch)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"eval-{run.pk}")
    try:
        for _ in range(workers):
            pool.submit(_work, slots, spec)
        last_beat = 0.0  # beat (and look for a cancel request) as soon as the first calls are out
        while True:
            # The first beat comes with the first result, so a cancel is seen early.
            (slots.over if last_beat else slots.first).wait(STORE_EVERY_S)
            over = slots.over.is_set()
            store()
            if slots.crash is not None:
                raise slots.crash
            if over:
                break
            if time.monotonic() - last_beat >= PROGRESS_EVERY_S:
                last_beat = time.monotonic()
                with slots.lock:
                    errors, passed = slots.counts["errors"], slots.counts["passed"]
                    spent = slots.spent
                progress = {
                    "done_items": stored,
                    "error_items": errors,
                    "passed_items": passed,
                    "spend": round(spent, 6),
                }
                if _beat(run, owner, part, progress):
                    slots.halt("cancelled")
                    break
    finally:
        # Calls still in flight finish in the background; their results are not stored.
        slots.halt("stopped")
        pool.shutdown(wait=False, cancel_futures=True)
        store()
    with slots.lock:
        final = {
            "done_items": stored,
            "error_items": slots.counts["errors"],
            "passed_items": slots.counts["passed"],
            "spend": round(slots.spent, 6),
        }
    return slots.stop_reason if slots.stop_reason in ("cost_cap", "cancelled") else "", final


def _beat(run: EvalRun, owner: str, part: Part, progress: dict) -> bool:
    """Renew the lease and report progress; True when the run is to stop (a cancel request,
    or, for a shard, the run ended elsewhere: another shard crashed)."""
    until = timezone.now() + LEASE
    if not part.sharded:
        EvalRun.objects.filter(pk=run.pk, lease_owner=owner).update(**progress, lease_until=until)
        return EvalRun.objects.filter(pk=run.pk, cancel_requested=True).exists()
    EvalShard.objects.filter(run=run, index=part.index, lease_owner=owner).update(
        **progress, lease_until=until
    )
    totals = EvalShard.objects.filter(run=run).aggregate(**{k: Sum(k) for k in progress})
    EvalRun.objects.filter(pk=run.pk, status__in=EvalRun.ACTIVE).update(**totals, lease_until=until)
    return (
        EvalRun.objects.filter(pk=run.pk)
        .filter(Q(cancel_requested=True) | ~Q(status__in=EvalRun.ACTIVE))
        .exists()
    )


class CostGuard:
    """Decides whether one more item may start under the cost cap. Projects each item at the
    costliest item seen so far (not the average, which one expensive item overshoots); until an
    item has finished it uses the launch estimate only to hold back, never to give up."""

    def __init__(self, cap: float | None, estimate: float):
        self.cap = cap
        self.estimate = estimate or 0.0
        self.worst: float | None = None

    def seen(self, cost: float) -> None:
        self.worst = cost if self.worst is None else max(self.worst, cost)

    def admit(self, spent: float, in_flight: int) -> str:
        if self.cap is None:
            return "go"
        if self.worst is None:
            # Nothing measured yet: start one item to learn the real cost, unless even the
            # estimate of a single item is over the cap.
            if in_flight == 0:
                return "go" if spent + self.estimate <= self.cap else "stop"
            return "wait"
        if spent + (in_flight + 1) * self.worst <= self.cap:
            return "go"
        return "wait" if in_flight else "stop"


def _finalize(run: EvalRun, stop_reason: str) -> str:
    # Rows as named tuples, not model instances: a run of thousands of items is finalised
    # while its caller waits, and building (and signalling) a model per row costs ten times more.
    results = list(
        EvalResult.objects.filter(run=run).values_list(
            "item_id",
            "status",
            "scores",
            "passed",
            "hallucinated",
            "latency_ms",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "cost",
            "judge_cost",
            named=True,
        )
    )
    summary = eval_metrics.summarize(results)
    tags = {item["id"]: item.get("tags") or [] for item in version_items(run.dataset_version)}
    summary["slices"] = eval_metrics.summarize_slices(results, tags)
    summary["estimate"] = run.metrics.get("estimate", {})
    if stop_reason == "cancelled":
        status, verdict, detail = EvalRun.Status.CANCELLED, "", {"reason": "cancelled"}
    elif stop_reason == "cost_cap":
        status, verdict = EvalRun.Status.STOPPED, EvalRun.Verdict.ERRORED
        detail = {"reason": f"stopped at the ${run.cost_cap:g} cost cap after {len(results)} items"}
    else:
        status = EvalRun.Status.COMPLETED
        verdict, detail = eval_metrics.check_gates(summary, run.gates, run.max_error_rate)
    record_eval_usage(run)
    with transaction.atomic():
        EvalRun.objects.filter(pk=run.pk).update(
            status=status,
            verdict=verdict,
            verdict_detail=detail,
            metrics=summary,
            done_items=len(results),
            error_items=summary["errors"],
            passed_items=sum(1 for r in results if r.passed),
            spend=summary["cost_total"],
            finished_at=timezone.now(),
            lease_owner="",
            lease_until=None,
        )
        audit.record(
            actor=SYSTEM,
            action=f"eval.{status}",
            obj=run,
            object_label=f"run #{run.pk} {run.label}",
            application=run.application_id,
            after={
                "verdict": verdict,
                "reason": detail.get("reason", ""),
                "items": len(results),
                "cost": summary["cost_total"],
            },
        )
    return status


def set_gate_policy(
    *, actor, application, dataset=None, gates: list[dict], max_error_rate: float
) -> GatePolicy:
    gates = clean_gates(gates)
    if not 0 <= max_error_rate <= 1:
        raise ValidationError({"max_error_rate": "must be between 0 and 1"})
    with transaction.atomic():
        policy, _ = GatePolicy.objects.select_for_update().get_or_create(
            application=application, dataset=dataset
        )
        before = {"gates": policy.gates, "max_error_rate": policy.max_error_rate}
        policy.gates, policy.max_error_rate = gates, max_error_rate
        policy.save()
        audit.record(
            actor=actor,
            action="eval.gates.change",
            obj=policy,
            object_label=f"gates for {dataset.key if dataset else application.key}",
            application=application,
            before=before,
            after={"gates": gates, "max_error_rate": max_error_rate},
        )
    return policy


def record_eval_usage(run: EvalRun) -> int:
    """An eval run's model calls, recorded as usage tagged `eval` (priced the same way as
    production traffic), and its judge calls at the cost the run itself recorded for them
    (the run page's "model + judge"), so the costs page counts what the run spent.
    Idempotent: event ids derive from run and item."""
    prompt = (
        f"{run.prompt_version.head.key}@{run.prompt_version.number}"
        if run.prompt_version_id
        else ""
    )
    rows = list(
        EvalResult.objects.filter(run=run).values(
            "item_id",
            "created_at",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "latency_ms",
            "status",
            "judge_cost",
        )
    )
    stored = 0
    if run.model_version_id is not None:
        model = run.model_version.content.get("model", "")
        ref = f"{run.model_version.head.key}@{run.model_version.number}"
        events = [
            {
                "event_id": f"eval-{run.pk}-{r['item_id']}",
                "time": r["created_at"].isoformat(),
                "model": ref if model else "",
                "prompt_version": prompt,
                "feature": "eval",
                "input_tokens": r["prompt_tokens"],
                "cached_tokens": min(r["cached_tokens"], r["prompt_tokens"]),
                "output_tokens": r["completion_tokens"],
                "latency_ms": r["latency_ms"],
                "status": "ok" if r["status"] == "ok" else "error",
            }
            for r in rows
        ]
        for start in range(0, len(events), usage.MAX_BATCH):
            batch = events[start : start + usage.MAX_BATCH]
            stored += usage.ingest(
                application=run.application,
                environment=None,
                events=batch,
                source=UsageEvent.Source.EVAL,
            ).accepted
    return stored + _record_judge_usage(run, prompt, rows)


def _record_judge_usage(run: EvalRun, prompt: str, rows: list[dict]) -> int:
    """One event per judged item carrying the judge calls' cost as the run priced them (from
    the judge model config): the run keeps no judge token counts to price them again, so these
    events have no tokens, and repricing (which prices tokens) leaves them as they are."""
    if run.judge_model_version_id is None:
        return 0
    judge = run.judge_model_version
    judged = [r for r in rows if r["judge_cost"] > 0]
    if not judged:
        return 0
    ids = {f"eval-{run.pk}-{r['item_id']}-judge": r for r in judged}
    existing = set(
        UsageEvent.objects.filter(
            application_id=run.application_id, environment__isnull=True, event_id__in=list(ids)
        ).values_list("event_id", flat=True)
    )
    now = timezone.now()
    fresh = [
        UsageEvent(
            application_id=run.application_id,
            environment=None,
            event_id=event_id,
            at=r["created_at"],
            received_at=now,
            model=judge.content.get("model", "") or f"{judge.head.key}@{judge.number}",
            model_config=f"{judge.head.key}@{judge.number}",
            prompt_version=prompt,
            feature="eval",
            source=UsageEvent.Source.EVAL,
            cost=Decimal(str(r["judge_cost"])).quantize(Decimal("0.00000001")),
        )
        for event_id, r in ids.items()
        if event_id not in existing
    ]
    UsageEvent.objects.bulk_create(fresh, batch_size=usage.MAX_BATCH, ignore_conflicts=True)
    return len(fresh)
