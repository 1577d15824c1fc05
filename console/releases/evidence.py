"""The evidence a promotion carries, judged by the environment's release policy — never by the
gates the person who launched an eval happened to pick.

Evidence is about what will run: the exact prompt × model versions that will be live together
after apply (the bundle), evaluated on each golden set the policy names (its newest published
version). A run counts only if it measured every policy metric and met every threshold, within
the policy's error allowance; and it must be no worse than a run of the bundle live now on the
same golden-set version (non-inferiority on the policy's metrics). When no such baseline run
exists, the releases service launches one and the request waits for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from console.datasets.models import Dataset, DatasetVersion
from console.evals import metrics as eval_metrics
from console.evals.metrics import METRICS
from console.evals.models import EvalRun
from console.evals.scorers import JUDGED
from console.evals.selectors import compare_runs, judge_calibration
from console.registry.models import ModelConfigVersion, PromptVersion
from console.releases import policies


@dataclass
class Bundle:
    """The prompt and model config versions served together."""

    prompt: PromptVersion | None
    model: ModelConfigVersion | None

    @property
    def complete(self) -> bool:
        return self.prompt is not None and self.model is not None

    @property
    def label(self) -> str:
        if not self.complete:
            return ""
        return (
            f"{self.prompt.head.key}@{self.prompt.number} × "
            f"{self.model.head.key}@{self.model.number}"
        )


@dataclass
class Evidence:
    required: bool
    policy_version: int = 0
    bundle: str = ""
    datasets: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # blocks opening, approving and applying
    waiting: list[str] = field(default_factory=list)  # baselines still running: blocks apply
    baselines_needed: list[tuple[Bundle, DatasetVersion]] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def complete(self) -> bool:
        return not self.missing and not self.waiting

    def as_dict(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "ok": self.ok,
            "complete": self.complete,
            "policy_version": self.policy_version,
            "bundle": self.bundle,
            "datasets": self.datasets,
            "missing": self.missing,
            "waiting": self.waiting,
            "note": self.note,
        }


def required_datasets(environment, policy: dict | None = None) -> list[Dataset]:
    policy = policy if policy is not None else policies.current(environment)[0]
    return list(
        Dataset.objects.filter(
            application_id=environment.application_id, key__in=policy.get("datasets", [])
        ).order_by("key")
    )


def _runs(bundle: Bundle, dataset_version):
    return EvalRun.objects.filter(
        target_type=EvalRun.Target.PROMPT_MODEL,
        prompt_version=bundle.prompt,
        model_version=bundle.model,
        dataset_version=dataset_version,
    )


def latest_run(bundle: Bundle, dataset_version) -> EvalRun | None:
    """The newest completed run of exactly this bundle on `dataset_version`."""
    return (
        _runs(bundle, dataset_version)
        .filter(status=EvalRun.Status.COMPLETED)
        .order_by("-finished_at", "-pk")
        .first()
    )


def active_run(bundle: Bundle, dataset_version) -> EvalRun | None:
    return _runs(bundle, dataset_version).filter(status__in=EvalRun.ACTIVE).first()


def judge(run: EvalRun, policy: dict, dataset_key: str) -> tuple[str, dict]:
    """The run's verdict under the policy: the gates that hold on its golden set, the error
    allowance."""
    gates = eval_metrics.gates_for(policy.get("gates", []), dataset_key)
    return eval_metrics.check_gates(run.metrics, gates, policy["max_error_rate"])


def no_eval_evidence(environment, note: str) -> Evidence:
    _, number = policies.current(environment)
    return Evidence(required=False, policy_version=number, note=note)


def flag_rules_evidence(environment) -> Evidence:
    return no_eval_evidence(
        environment, "flag rule changes carry no eval evidence: approvers judge the rules"
    )


def gather(environment, bundle: Bundle, live: Bundle) -> Evidence:
    """Evidence for making `bundle` live in `environment`, where `live` is served now."""
    policy, number = policies.current(environment)
    evidence = Evidence(
        required=bool(policy.get("eval_gate")), policy_version=number, bundle=bundle.label
    )
    if not bundle.complete:
        evidence.missing.append(
            "name both halves of what will run: a prompt version and a model config version"
        )
        return evidence
    datasets = required_datasets(environment, policy)
    if evidence.required and not datasets:
        evidence.missing.append(
            f"{environment.name} requires an eval gate but its release policy names no golden set"
        )
    latest_numbers = {d.pk: d.latest_number for d in datasets}
    dataset_versions = {
        dv.head_id: dv
        for dv in DatasetVersion.objects.filter(
            head__in=datasets, number__in=set(latest_numbers.values())
        ).select_related("head")
        if latest_numbers.get(dv.head_id) == dv.number
    }
    for dataset in datasets:
        metrics = policies.gate_metrics(policy, dataset.key)
        dataset_version = dataset_versions.get(dataset.pk)
        if dataset_version is None:
            evidence.missing.append(f"{dataset.key} has no published version to evaluate against")
            continue
        entry: dict[str, Any] = {
            "dataset": f"{dataset.key}@{dataset_version.number}",
            "run": None,
            "verdict": None,
            "gates": [],
            "comparison": None,
        }
        evidence.datasets.append(entry)
        run = latest_run(bundle, dataset_version)
        if run is None:
            running = active_run(bundle, dataset_version)
            hint = f" (run #{running.pk} is {running.status})" if running else ": launch one"
            evidence.missing.append(
                f"no completed eval of {bundle.label} on {entry['dataset']}{hint}"
            )
            continue
        verdict, detail = judge(run, policy, dataset.key)
        entry.update(
            run=run.pk,
            verdict=verdict,
            gates=detail.get("gates", []),
            reason=detail.get("reason", ""),
            max_error_rate=policy["max_error_rate"],
            error_rate=run.metrics.get("error_rate"),
            cost=run.metrics.get("cost_total"),
        )
        if verdict != EvalRun.Verdict.PASSED:
            evidence.missing.append(
                f"run #{run.pk} on {entry['dataset']} does not meet the policy "
                f"({verdict}: {detail.get('reason', '')})"
            )
        for refusal in _untrusted_judges(run, policy, dataset.key, entry):
            evidence.missing.append(refusal)
        if not live.complete or (
            live.prompt.pk == bundle.prompt.pk and live.model.pk == bundle.model.pk
        ):
            entry["comparison"] = {"note": "nothing live to compare with"}
            continue
        baseline = latest_run(live, dataset_version)
        if baseline is None:
            running = active_run(live, dataset_version)
            entry["comparison"] = {
                "note": f"baseline: {live.label} on {entry['dataset']}",
                "baseline_run": running.pk if running else None,
                "progress": [running.done_items, running.total_items] if running else None,
            }
            evidence.waiting.append(
                f"waiting for the baseline run of {live.label} on {entry['dataset']}"
                + (
                    f" (run #{running.pk}, {running.done_items}/{running.total_items})"
                    if running
                    else ""
                )
            )
            if running is None:
                evidence.baselines_needed.append((live, dataset_version))
            continue
        entry["comparison"] = _compare(baseline, run, metrics, live)
        if entry["comparison"]["worse"]:
            evidence.missing.append(
                f"worse than {live.label} on {', '.join(entry['comparison']['worse'])} "
                "beyond the confidence interval"
            )
    if not evidence.required:
        # Informative only: the policy does not gate on it.
        evidence.missing, evidence.waiting, evidence.baselines_needed = [], [], []
    return evidence


def _untrusted_judges(run: EvalRun, policy: dict, dataset_key: str, entry: dict) -> list[str]:
    """With a minimum kappa in the policy, a gate on an LLM-judge metric counts only when that
    judge agrees with people on this golden set: kappa at least the minimum, over at least the
    minimum number of reviews. Each refusal says why; the entry keeps the figures."""
    min_kappa = policy.get("min_judge_kappa")
    if min_kappa is None:
        return []
    needed = policy.get("min_judge_reviews") or policies.DEFAULT_MIN_JUDGE_REVIEWS
    refusals = []
    judged = sorted(
        {g["metric"] for g in eval_metrics.gates_for(policy.get("gates", []), dataset_key)}
        & set(JUDGED)
    )
    for metric in judged:
        calibration = judge_calibration(run, metric)
        entry.setdefault("judges", {})[metric] = calibration
        if calibration is None:
            continue  # not judged at all: the gate itself fails as not measured
        kappa, n = calibration["kappa"], calibration["n"]
        if n < needed or kappa is None or kappa < min_kappa:
            shown = "cannot be told" if kappa is None else f"κ = {kappa:g}"
            refusals.append(
                f"the {metric} judge of run #{run.pk} is not trusted on {entry['dataset']}: "
                f"{shown} over {n} review{'s' if n != 1 else ''} (the policy needs κ ≥ "
                f"{min_kappa:g} over at least {needed}); review more of its answers"
            )
    return refusals


def _compare(baseline: EvalRun, run: EvalRun, metrics: list[str], live: Bundle) -> dict:
    cmp = compare_runs(baseline, run, charts=False)
    worse = [d.metric for d in cmp.deltas if d.metric in metrics and d.verdict == "worse"]
    return {
        "baseline_run": baseline.pk,
        "baseline": live.label,
        "verdict": cmp.verdict,
        "metrics": metrics,
        "deltas": [
            {
                "metric": d.metric,
                "label": METRICS.get(d.metric, ("Latency (ms)",))[0],
                "base": d.base,
                "candidate": d.candidate,
                "delta": d.delta,
                "low": d.low,
                "high": d.high,
                "verdict": d.verdict,
                "policy": d.metric in metrics,
            }
            for d in cmp.deltas
        ],
        "worse": worse,
        "cost_per_1k_delta": _cost_per_1k(run) - _cost_per_1k(baseline),
    }


def failing_since(environment, bundle: Bundle, since) -> list[str]:
    """Runs of the bundle on the policy's golden sets that finished after `since` without
    passing — one cheap query, for the staleness check on every page view."""
    if not bundle.complete:
        return []
    datasets = required_datasets(environment)
    if not datasets:
        return []
    qs = EvalRun.objects.filter(
        dataset_version__head__in=datasets,
        status=EvalRun.Status.COMPLETED,
        finished_at__gt=since,
        prompt_version=bundle.prompt,
        model_version=bundle.model,
    ).exclude(verdict=EvalRun.Verdict.PASSED)
    return [f"run #{r.pk} {r.verdict}" for r in qs.order_by("-finished_at")[:5]]


def _cost_per_1k(run: EvalRun) -> float:
    items = run.metrics.get("items") or 0
    return (run.metrics.get("cost_model", 0) or 0) * 1000 / items if items else 0.0
