"""Eval reads: run lists, results pages, launch choices, and run-vs-run comparisons."""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass, field

from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet

from console.datasets.models import DatasetVersion
from console.datasets.selectors import version_items
from console.evals import metrics as eval_metrics
from console.evals.models import EvalResult, EvalRun, ResultReview
from console.evals.scorers import JUDGED
from console.registry.models import ModelConfigVersion, PromptVersion

RESULT_FILTERS = {
    "all": {},
    "failed": {"status": EvalResult.Status.OK, "passed": False},
    "errors": {"status": EvalResult.Status.ERROR},
    "passed": {"passed": True},
    "unreviewed": {"status": EvalResult.Status.OK, "review__isnull": True},
}


def runs(application, *, prompt: str = "", model: str = "") -> QuerySet:
    qs = EvalRun.objects.filter(application=application).select_related(
        "prompt_version__head", "model_version__head", "dataset_version__head", "created_by"
    )
    if prompt:
        qs = qs.filter(prompt_version__head__key=prompt)
    if model:
        qs = qs.filter(model_version__head__key=model)
    return qs.order_by("-created_at")


def results_page(run: EvalRun, which: str, number) -> Page:
    qs = (
        EvalResult.objects.filter(run=run, **RESULT_FILTERS.get(which, {}))
        .select_related("review__reviewer")
        .order_by("position")
    )
    return Paginator(qs, 50).get_page(number)


def human_review(run: EvalRun) -> dict:
    """How far people reviewed the run's answers, and how often the LLM judge agrees with them
    (Cohen's kappa per judge metric, with the count behind it)."""
    reviewed = list(
        ResultReview.objects.filter(result__run=run).values_list("result__scores", "verdict")
    )
    judged = [m for m in JUDGED if m in (run.scorers or [])]
    return {
        "reviewed": len(reviewed),
        "answers": run.done_items - run.error_items,
        "failed": sum(1 for _, verdict in reviewed if verdict == ResultReview.Verdict.FAIL),
        "agreement": _agreement(reviewed, judged),
        "pass_at": eval_metrics.JUDGE_PASS_AT,
    }


def _agreement(reviewed, metrics: list[str]) -> dict:
    """judge_agreement over (result scores, review verdict) rows."""
    return eval_metrics.judge_agreement(
        ((scores or {}, verdict == ResultReview.Verdict.PASS) for scores, verdict in reviewed),
        metrics,
    )


def judge_calibration(run: EvalRun, metric: str) -> dict | None:
    """How far the judge `run` used for `metric` (the same judge model config version and judge
    prompt version) agrees with people on the run's golden set, over every reviewed answer of
    every run on any version of that set: {"kappa", "n", "agreement"} (kappa None when it
    cannot be told), or None when the run had no judge for the metric."""
    prompt_pk = (run.judge_prompts or {}).get(metric)
    if not run.judge_model_version_id or not prompt_pk:
        return None
    reviewed = ResultReview.objects.filter(
        result__run__dataset_version__head_id=run.dataset_version.head_id,
        result__run__judge_model_version_id=run.judge_model_version_id,
        **{f"result__run__judge_prompts__{metric}": prompt_pk},
    ).values_list("result__scores", "verdict")
    return _agreement(reviewed, [metric]).get(metric, {"kappa": None, "n": 0, "agreement": None})


def launch_choices(application) -> dict[str, list[tuple[str, str]]]:
    """Select options for the launch form, newest versions first (bounded per head)."""
    datasets = DatasetVersion.objects.filter(head__application=application).select_related("head")
    prompts = PromptVersion.objects.filter(head__application=application).select_related("head")
    models = ModelConfigVersion.objects.filter(head__application=application).select_related("head")

    def options(qs, describe) -> list[tuple[str, str]]:
        return [(str(v.pk), describe(v)) for v in qs.order_by("head__key", "-number")[:500]]

    prompt_options = options(
        prompts, lambda v: f"{v.head.key}@{v.number} — {v.message or v.head.name}"
    )
    model_options = options(
        models, lambda v: f"{v.head.key}@{v.number} — {v.content.get('model', '')}"
    )
    return {
        "dataset_version": options(
            datasets, lambda v: f"{v.head.key}@{v.number} ({v.content.get('count', 0)} items)"
        ),
        "prompt_version": [("", "—"), *prompt_options],
        "model_version": [("", "—"), *model_options],
        "judge_model_version": [("", "— no judge —"), *model_options],
        "judge_faithfulness": [("", "—"), *prompt_options],
        "judge_relevance": [("", "—"), *prompt_options],
    }


def result_rows(run: EvalRun) -> dict[str, dict]:
    rows = EvalResult.objects.filter(run=run).values(
        "item_id",
        "position",
        "question",
        "status",
        "passed",
        "scores",
        "latency_ms",
        "output",
        "reasons",
        "error",
    )
    return {r["item_id"]: r for r in rows}


@dataclass(frozen=True)
class ErroredRun:
    """A run with results, every one of them an error: there is nothing of it to compare."""

    run: EvalRun
    items: int
    error: str  # the most common error message
    times: int  # how many items failed with it


def errored_on_every_item(run: EvalRun, rows: dict[str, dict]) -> ErroredRun | None:
    if not rows or any(r["status"] == EvalResult.Status.OK for r in rows.values()):
        return None
    counts = Counter((r["error"] or "no error message recorded").strip() for r in rows.values())
    error, times = counts.most_common(1)[0]
    return ErroredRun(run, len(rows), error, times)


def _number_pair(actual: float, threshold: float) -> tuple[str, str]:
    """Both numbers at the fewest decimals that keep two significant digits of the smaller one
    and tell them apart (so 0.8467 against 0.85 reads 0.847 < 0.850, not 0.85 < 0.85)."""
    if max(abs(actual), abs(threshold)) >= 100:
        return f"{actual:,.0f}", f"{threshold:,.0f}"
    smallest = min((abs(v) for v in (actual, threshold) if v), default=1.0)
    first = max(2, 1 - math.floor(math.log10(smallest)))
    a = t = ""
    for places in range(first, first + 5):
        a, t = f"{actual:.{places}f}", f"{threshold:.{places}f}"
        if a != t:
            return a, t
    return a, t


def failed_gates(run: EvalRun) -> list[str]:
    """The gates a failed run missed, as `metric actual < threshold` (or `not measured`)."""
    out = []
    for gate in (run.verdict_detail or {}).get("gates", []):
        if gate.get("passed"):
            continue
        if gate.get("actual") is None:
            out.append(
                f"{eval_metrics.gate_label(gate)} not measured "
                f"(needs {gate['op']} {gate['threshold']:g})"
            )
            continue
        actual, threshold = _number_pair(float(gate["actual"]), float(gate["threshold"]))
        missed = "<" if gate["op"] == ">=" else ">"
        out.append(f"{eval_metrics.gate_label(gate)} {actual} {missed} {threshold}")
    return out


def verdict_note(run: EvalRun) -> str:
    """Why a finished run did not pass, short enough for the run list."""
    if run.verdict == EvalRun.Verdict.FAILED:
        gates = failed_gates(run)
        return "failed: " + "; ".join(gates) if gates else ""
    if run.verdict == EvalRun.Verdict.ERRORED:
        return (run.verdict_detail or {}).get("reason", "")
    return ""


@dataclass
class Comparison:
    base: EvalRun
    candidate: EvalRun
    deltas: list[eval_metrics.Delta]
    flipped_to_fail: list[tuple[dict, dict]]
    flipped_to_pass: list[tuple[dict, dict]]
    both_fail: int
    common: int
    verdict: str
    charts: dict
    errored: list[ErroredRun] = field(default_factory=list)
    slices: list[tuple[str, eval_metrics.Delta]] = field(default_factory=list)  # pass rate by tag

    @property
    def paired(self) -> int:
        """Items both runs scored (neither errored): what the deltas are computed over."""
        return max((d.n for d in self.deltas), default=0)


# Finished runs never change, so neither does their comparison (bootstrap intervals over every
# item: the compare page's slowest part). Keyed by both runs and their finish times.
COMPARISON_TTL_S = 24 * 3600


def cached_comparison(base: EvalRun, candidate: EvalRun) -> Comparison:
    """compare_runs with charts, kept in the cache once both runs have finished."""
    if base.finished_at is None or candidate.finished_at is None or base.active or candidate.active:
        return compare_runs(base, candidate)
    key = "airlock:eval-comparison:" + ":".join(
        f"{r.pk}-{r.finished_at.timestamp():.6f}" for r in (base, candidate)
    )
    found = cache.get(key)
    if isinstance(found, Comparison):
        found.base, found.candidate = base, candidate
        return found
    comparison = compare_runs(base, candidate)
    cache.set(key, comparison, COMPARISON_TTL_S)
    return comparison


def compare_runs(base: EvalRun, candidate: EvalRun, *, charts: bool = True) -> Comparison:
    """Paired comparison of two runs; `charts=False` skips the Plotly specs (promotion evidence
    reads only the verdict and deltas)."""
    b_rows, c_rows = result_rows(base), result_rows(candidate)
    errored = [
        e
        for e in (errored_on_every_item(base, b_rows), errored_on_every_item(candidate, c_rows))
        if e is not None
    ]
    if errored:
        # Every item of one side is an error: no pair to score, no chart worth drawing.
        return Comparison(base, candidate, [], [], [], 0, 0, "nothing to compare", {}, errored)
    b_names = _score_names(b_rows)
    names = [
        "pass_rate",
        *[
            m
            for m in eval_metrics.METRICS
            if m in base.metrics and m in candidate.metrics and m in b_names
        ],
        "latency_ms",
    ]
    deltas = eval_metrics.compare(b_rows, c_rows, names)
    common = [i for i in b_rows if i in c_rows]
    to_fail = [
        (b_rows[i], c_rows[i])
        for i in common
        if b_rows[i]["passed"] and c_rows[i]["passed"] is False
    ]
    to_pass = [
        (b_rows[i], c_rows[i])
        for i in common
        if b_rows[i]["passed"] is False and c_rows[i]["passed"]
    ]
    both_fail = sum(
        1 for i in common if b_rows[i]["passed"] is False and c_rows[i]["passed"] is False
    )
    # No item scored in both runs (one side errored wherever the other answered): say so
    # rather than headline "no detectable difference" over an empty table.
    verdict = overall_verdict(deltas) if deltas else "nothing to compare"
    return Comparison(
        base,
        candidate,
        deltas,
        to_fail,
        to_pass,
        both_fail,
        len(common),
        verdict,
        charts=_charts(base, candidate, b_rows, c_rows) if charts else {},
        slices=_slices(base, b_rows, c_rows) if charts else [],
    )


def _slices(base: EvalRun, b_rows: dict, c_rows: dict) -> list:
    tags = {item["id"]: item.get("tags") or [] for item in version_items(base.dataset_version)}
    return eval_metrics.slice_deltas(b_rows, c_rows, tags)


OPERATIONAL = {"latency_ms"}


def overall_verdict(deltas: list[eval_metrics.Delta]) -> str:
    """'better' / 'worse' when every detectable quality change points one way, else 'mixed' or
    'no detectable difference'. Latency is shown beside it, never decides it: a few
    milliseconds must not headline identical answers as worse."""
    quality = [d for d in deltas if d.metric not in OPERATIONAL]
    better = {d.metric for d in quality if d.verdict == "better"}
    worse = {d.metric for d in quality if d.verdict == "worse"}
    if better and worse:
        return "mixed"
    if better:
        return "better"
    if worse:
        return "worse"
    return "no detectable difference"


def _score_names(rows: dict[str, dict]) -> set[str]:
    names: set[str] = set()
    for row in rows.values():
        names.update(row["scores"] or {})
    return names


def _charts(base, candidate, b_rows, c_rows) -> dict:
    """Plotly figure specs (data + layout) as plain JSON for the static chart script."""
    label_b, label_c = f"#{base.pk}", f"#{candidate.pk}"
    metrics = sorted(_score_names(b_rows) | _score_names(c_rows))
    box = {
        "data": [
            {
                "type": "box",
                "name": label,
                # Metric names become axis labels, which Plotly renders as markup: escaped.
                "x": [
                    html.escape(m)
                    for r in rows.values()
                    for m in metrics
                    if m in (r["scores"] or {})
                ],
                "y": [
                    r["scores"][m]
                    for r in rows.values()
                    for m in metrics
                    if m in (r["scores"] or {})
                ],
                "boxmean": True,
            }
            for label, rows in ((label_b, b_rows), (label_c, c_rows))
        ],
        "layout": {
            "boxmode": "group",
            "title": {"text": "Score distributions by metric"},
            "yaxis": {"range": [-0.05, 1.05]},
            "margin": {"t": 40, "l": 40, "r": 10, "b": 60},
            "height": 340,
        },
    }
    latency = {
        "data": [
            {
                "type": "histogram",
                "name": label,
                "x": [r["latency_ms"] for r in rows.values() if r["latency_ms"] is not None],
                "opacity": 0.65,
                "nbinsx": 30,
            }
            for label, rows in ((label_b, b_rows), (label_c, c_rows))
        ],
        "layout": {
            "barmode": "overlay",
            "title": {"text": "Latency (ms)"},
            "margin": {"t": 40, "l": 40, "r": 10, "b": 40},
            "height": 300,
        },
    }
    return {"scores": box, "latency": latency}


def prompt_versions_evaluated_on(dataset) -> QuerySet:
    """Ids of the prompt versions evaluated (or being evaluated) on any version of a golden set,
    as a subquery. Registered with the datasets app, which may not import evals, so its
    editor can warn about variables those prompts need and the set does not fill."""
    return EvalRun.objects.filter(
        dataset_version__head=dataset, prompt_version__isnull=False
    ).values("prompt_version")
