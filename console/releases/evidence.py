"""The evidence a promotion carries: eval runs of exactly that version on the golden sets the
environment's policy names, their gate results, and a non-inferiority comparison with the
latest run of the version live there now on the same golden set version."""

from __future__ import annotations

from dataclasses import dataclass, field

from console.datasets.models import Dataset
from console.evals.metrics import METRICS
from console.evals.models import EvalRun
from console.evals.selectors import compare_runs


@dataclass
class Evidence:
    required: bool
    datasets: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict:
        return {
            "required": self.required,
            "ok": self.ok,
            "datasets": self.datasets,
            "missing": self.missing,
        }


def required_datasets(environment) -> list[Dataset]:
    policy = getattr(environment, "release_policy", None)
    if policy is not None:
        return list(policy.datasets.all())
    return []


def _latest_run(kind: str, version, dataset_version) -> EvalRun | None:
    """The newest completed run of `version` on `dataset_version`."""
    qs = EvalRun.objects.filter(dataset_version=dataset_version, status=EvalRun.Status.COMPLETED)
    qs = qs.filter(prompt_version=version) if kind == "prompt" else qs.filter(model_version=version)
    return qs.order_by("-finished_at").first()


def gather(kind: str, environment, version, live_version) -> Evidence:
    """Evidence for promoting `version` into `environment` (live now: `live_version`)."""
    evidence = Evidence(required=environment.eval_gate_required)
    if kind == "flag_rules":
        if environment.eval_gate_required:
            evidence.datasets.append(
                {"note": "flag rule changes carry no eval evidence; approvers judge the diff"}
            )
        return evidence
    datasets = required_datasets(environment)
    if environment.eval_gate_required and not datasets:
        evidence.missing.append(
            f"{environment.name} requires an eval gate but its release policy names no golden set"
        )
    for dataset in datasets:
        if not dataset.latest_number:
            evidence.missing.append(f"{dataset.key} has no published version to evaluate against")
            continue
        dataset_version = dataset.versions.get(number=dataset.latest_number)
        entry = {
            "dataset": f"{dataset.key}@{dataset_version.number}",
            "run": None,
            "verdict": None,
            "gates": [],
            "comparison": None,
        }
        run = _latest_run(kind, version, dataset_version)
        if run is None:
            ref = f"{version.head.key}@{version.number}"
            evidence.missing.append(f"no completed eval of {ref} on {entry['dataset']}: launch one")
            evidence.datasets.append(entry)
            continue
        entry.update(
            run=run.pk,
            verdict=run.verdict,
            gates=run.verdict_detail.get("gates", []),
            reason=run.verdict_detail.get("reason", ""),
            cost=run.metrics.get("cost_total"),
        )
        if run.verdict != EvalRun.Verdict.PASSED:
            evidence.missing.append(
                f"run #{run.pk} on {entry['dataset']} did not pass its gates ({run.verdict})"
            )
        if live_version is not None and live_version.pk != version.pk:
            baseline = _latest_run(kind, live_version, dataset_version)
            if baseline is None:
                entry["comparison"] = {
                    "note": f"no run of the live version {live_version.head.key}@"
                    f"{live_version.number} on {entry['dataset']} to compare with"
                }
            else:
                cmp = compare_runs(baseline, run, charts=False)
                gate_metrics = {g["metric"] for g in run.gates} | {"pass_rate"}
                worse = [
                    d.metric
                    for d in cmp.deltas
                    if d.metric in gate_metrics and d.verdict == "worse"
                ]
                entry["comparison"] = {
                    "baseline_run": baseline.pk,
                    "verdict": cmp.verdict,
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
                        }
                        for d in cmp.deltas
                    ],
                    "worse": worse,
                    "cost_per_1k_delta": _cost_per_1k(run) - _cost_per_1k(baseline),
                }
                if worse:
                    evidence.missing.append(
                        f"worse than the live version on {', '.join(worse)} "
                        "beyond the confidence interval"
                    )
        evidence.datasets.append(entry)
    if not environment.eval_gate_required:
        evidence.missing = []  # informative only: the policy does not gate on it
    return evidence


def failing_since(kind: str, environment, version, since) -> list[str]:
    """Runs of `version` on the required golden sets that finished after `since` without
    passing — one cheap query, for the staleness check on every page view."""
    datasets = required_datasets(environment)
    if not datasets:
        return []
    qs = EvalRun.objects.filter(
        dataset_version__head__in=datasets,
        status=EvalRun.Status.COMPLETED,
        finished_at__gt=since,
    ).exclude(verdict=EvalRun.Verdict.PASSED)
    qs = qs.filter(prompt_version=version) if kind == "prompt" else qs.filter(model_version=version)
    return [f"run #{r.pk} {r.verdict}" for r in qs.order_by("-finished_at")[:5]]


def _cost_per_1k(run: EvalRun) -> float:
    items = run.metrics.get("items") or 0
    return (run.metrics.get("cost_model", 0) or 0) * 1000 / items if items else 0.0
