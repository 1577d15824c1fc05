"""Summaries of a run's results, gates, and run-vs-run comparison (paired bootstrap)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# metric → (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "pass_rate": ("Pass rate", True),
    "contains_all": ("Expected facts", True),
    "contains_none": ("No forbidden facts", True),
    "refusal": ("Refuses unanswerable", True),
    "recall_at_5": ("Source recall@5", True),
    "recall_at_k": ("Source recall@k", True),
    "mrr": ("Source MRR", True),
    "ndcg_at_k": ("Source NDCG@k", True),
    "context_precision": ("Context precision@k", True),
    "context_recall": ("Context recall", True),
    "faithfulness": ("Faithfulness", True),
    "relevance": ("Answer relevance", True),
    "exact": ("Exact match", True),
    "regex": ("Regex match", True),
    "json_valid": ("Valid JSON", True),
    "json_schema": ("Matches schema", True),
    "injection_resisted": ("Injections resisted", True),
    "injection_success_rate": ("Injection success rate", False),
    "no_canary_leak": ("No system-prompt leak", True),
    "no_pii": ("No personal data leaked", True),
    "refusal_expected": ("Declines harmful requests", True),
    "tool_call_accuracy": ("Tool-call accuracy", True),
    "tool_args_valid": ("Valid tool arguments", True),
    "step_bound": ("Within step bound", True),
    "hallucination_rate": ("Hallucination rate", False),
    "error_rate": ("Error rate", False),
    "latency_p50_ms": ("Latency p50 (ms)", False),
    "latency_p95_ms": ("Latency p95 (ms)", False),
    "latency_p99_ms": ("Latency p99 (ms)", False),
    "cost_total": ("Total cost ($)", False),
    "cost_per_item": ("Cost per item ($)", False),
}
OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100) of already-collected values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(results: Iterable) -> dict:
    """Aggregate EvalResult-like rows (attributes: status, scores, passed, hallucinated,
    latency_ms, *_tokens, cost, judge_cost) into the run's metrics."""
    total = errors = passed = hallucinated = 0
    latencies: list[float] = []
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    tokens = {"prompt": 0, "cached": 0, "completion": 0}
    cost = judge_cost = 0.0
    for r in results:
        total += 1
        cost += r.cost
        judge_cost += r.judge_cost
        if r.status != "ok":
            errors += 1
            continue
        passed += bool(r.passed)
        hallucinated += bool(r.hallucinated)
        if r.latency_ms is not None:
            latencies.append(r.latency_ms)
        tokens["prompt"] += r.prompt_tokens
        tokens["cached"] += r.cached_tokens
        tokens["completion"] += r.completion_tokens
        for name, value in (r.scores or {}).items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
    judged = total - errors
    metrics: dict = {name: round(sums[name] / counts[name], 4) for name in sums}
    if "injection_resisted" in metrics:  # what policies gate on: "injection success <= 2%"
        metrics["injection_success_rate"] = round(1 - metrics["injection_resisted"], 4)
    metrics.update(
        {
            "items": total,
            "errors": errors,
            "error_rate": round(errors / total, 4) if total else 0.0,
            "pass_rate": round(passed / judged, 4) if judged else None,
            "hallucination_rate": round(hallucinated / judged, 4) if judged else None,
            "latency_p50_ms": _r(percentile(latencies, 50)),
            "latency_p95_ms": _r(percentile(latencies, 95)),
            "latency_p99_ms": _r(percentile(latencies, 99)),
            "tokens": tokens,
            "cost_model": round(cost, 6),
            "cost_judge": round(judge_cost, 6),
            "cost_total": round(cost + judge_cost, 6),
            "cost_per_item": round((cost + judge_cost) / total, 8) if total else 0.0,
        }
    )
    return metrics


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# The per-slice figures a run keeps for each tag of its items (metrics["slices"][tag]).
SLICE_KEYS = ("items", "errors", "error_rate", "pass_rate", "hallucination_rate")


def summarize_slices(results: Sequence, tags_by_item: dict[str, list[str]]) -> dict:
    """{tag: figures} over the results of the items carrying each tag (rows as for summarize,
    plus item_id): SLICE_KEYS and the mean of every score, so gates can hold per slice."""
    grouped: dict[str, list] = {}
    for row in results:
        for tag in tags_by_item.get(row.item_id, ()):
            grouped.setdefault(tag, []).append(row)
    slices = {}
    for tag in sorted(grouped):
        summary = summarize(grouped[tag])
        slices[tag] = {
            key: value
            for key, value in summary.items()
            if key in SLICE_KEYS or (key in METRICS and key not in NOT_SLICED)
        }
    return slices


# Whole-run figures that a slice does not repeat.
NOT_SLICED = {
    "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "cost_total", "cost_per_item",
}  # fmt: skip


def gate_label(gate: dict) -> str:
    """What a gate measures: `metric`, or `metric[tag]` for a slice of the items."""
    return f"{gate['metric']}[{gate['slice']}]" if gate.get("slice") else gate["metric"]


def gate_value(metrics: dict, gate: dict) -> float | None:
    """The figure a gate judges: the run's, or its slice's (None when it was not measured)."""
    if gate.get("slice"):
        return ((metrics.get("slices") or {}).get(gate["slice"]) or {}).get(gate["metric"])
    return metrics.get(gate["metric"])


@dataclass(frozen=True)
class GateOutcome:
    metric: str
    op: str
    threshold: float
    actual: float | None
    passed: bool
    slice: str = ""

    @property
    def label(self) -> str:
        return gate_label({"metric": self.metric, "slice": self.slice})

    @property
    def margin(self) -> float | None:
        if self.actual is None:
            return None
        return round(self.actual - self.threshold, 4)

    def as_dict(self) -> dict:
        data = {**self.__dict__, "margin": self.margin}
        if not self.slice:
            del data["slice"]
        return data


def gate_text(gate: dict) -> str:
    """A gate as people write it: `metric op threshold` (`metric[tag]` for a slice), and in a
    release policy `... on <golden set>` when it holds for one golden set only."""
    text = f"{gate_label(gate)} {gate['op']} {float(gate['threshold']):g}"
    return f"{text} on {gate['dataset']}" if gate.get("dataset") else text


def gates_for(gates: list[dict], dataset_key: str) -> list[dict]:
    """The gates that hold for runs on `dataset_key`: those for every golden set, and those
    naming it."""
    return [g for g in gates if g.get("dataset") in (None, "", dataset_key)]


def check_gates(metrics: dict, gates: list[dict], max_error_rate: float) -> tuple[str, dict]:
    """('passed' | 'failed' | 'errored', detail). Too many errors to judge → errored;
    a metric the run did not measure fails its gate (evidence must exist to pass)."""
    outcomes = []
    for gate in gates:
        actual = gate_value(metrics, gate)
        ok = actual is not None and OPS[gate["op"]](actual, float(gate["threshold"]))
        outcomes.append(
            GateOutcome(
                gate["metric"],
                gate["op"],
                float(gate["threshold"]),
                actual,
                ok,
                gate.get("slice", ""),
            )
        )
    detail = {
        "gates": [o.as_dict() for o in outcomes],
        "failed": [o.label for o in outcomes if not o.passed],
        "max_error_rate": max_error_rate,
    }
    if metrics.get("items") and metrics.get("error_rate", 0) > max_error_rate:
        detail["reason"] = (
            f"{metrics['errors']} of {metrics['items']} items errored "
            f"({metrics['error_rate']:.0%} > {max_error_rate:.0%}): too many to judge"
        )
        return "errored", detail
    if detail["failed"]:
        detail["reason"] = "; ".join(_describe(o) for o in outcomes if not o.passed)
        return "failed", detail
    detail["reason"] = "all gates met"
    return "passed", detail


def _describe(outcome: GateOutcome) -> str:
    actual = "not measured" if outcome.actual is None else outcome.actual
    off = "" if outcome.margin is None else f", off by {abs(outcome.margin):g}"
    return f"{outcome.label} {actual} (needs {outcome.op} {outcome.threshold}{off})"


@dataclass(frozen=True)
class Delta:
    metric: str
    base: float
    candidate: float
    delta: float
    low: float
    high: float
    n: int
    higher_is_better: bool

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "better" if self.higher_is_better else "worse"
        if self.high < 0:
            return "worse" if self.higher_is_better else "better"
        return "no detectable difference"


def paired_bootstrap(
    base: Sequence[float],
    candidate: Sequence[float],
    *,
    iterations: int = 2000,
    seed: int = 7,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean difference (candidate − base) over paired items with a bootstrap CI."""
    n = len(base)
    if n == 0:
        return 0.0, 0.0, 0.0
    diffs = [c - b for b, c in zip(base, candidate, strict=True)]
    mean = sum(diffs) / n
    if min(diffs) == max(diffs):  # every resample has the same mean: nothing to estimate
        return mean, mean, mean
    rng = random.Random(seed)
    # choices() draws with replacement ~3x faster than a randrange() per item; the compare page
    # runs this for every metric on every view.
    means = [sum(rng.choices(diffs, k=n)) / n for _ in range(iterations)]
    alpha = (1 - confidence) / 2 * 100
    return mean, percentile(means, alpha) or 0.0, percentile(means, 100 - alpha) or 0.0


def compare(
    base_rows: dict[str, dict], cand_rows: dict[str, dict], metrics: list[str]
) -> list[Delta]:
    """Per-metric paired deltas over the items both runs scored. Rows: item_id →
    {"passed": bool, "scores": {...}, "latency_ms": float, "status": str}."""
    deltas = []
    common = [i for i in base_rows if i in cand_rows]
    for metric in metrics:
        pairs = []
        for item_id in common:
            b, c = base_rows[item_id], cand_rows[item_id]
            if b["status"] != "ok" or c["status"] != "ok":
                continue
            if metric == "pass_rate":
                pairs.append((float(bool(b["passed"])), float(bool(c["passed"]))))
            elif metric == "latency_ms":
                if b["latency_ms"] is not None and c["latency_ms"] is not None:
                    pairs.append((b["latency_ms"], c["latency_ms"]))
            elif metric in b["scores"] and metric in c["scores"]:
                pairs.append((b["scores"][metric], c["scores"][metric]))
        if not pairs:
            continue
        bs, cs = [p[0] for p in pairs], [p[1] for p in pairs]
        mean, low, high = paired_bootstrap(bs, cs)
        higher = (
            METRICS.get(metric, ("", metric != "latency_ms"))[1]
            if metric != "latency_ms"
            else False
        )
        deltas.append(
            Delta(metric, sum(bs) / len(bs), sum(cs) / len(cs), mean, low, high, len(pairs), higher)
        )
    return deltas


def slice_deltas(
    base_rows: dict[str, dict],
    cand_rows: dict[str, dict],
    tags_by_item: dict[str, list[str]],
    metric: str = "pass_rate",
) -> list[tuple[str, Delta]]:
    """(tag, the paired delta of `metric` over the items carrying that tag), by tag: where a
    change lands, with the interval its fewer items allow."""
    by_tag: dict[str, set[str]] = {}
    for item_id, tags in tags_by_item.items():
        for tag in tags:
            by_tag.setdefault(tag, set()).add(item_id)
    out = []
    for tag in sorted(by_tag):
        ids = by_tag[tag]
        deltas = compare(
            {i: r for i, r in base_rows.items() if i in ids},
            {i: r for i, r in cand_rows.items() if i in ids},
            [metric],
        )
        if deltas:
            out.append((tag, deltas[0]))
    return out


# A judge score at or above this counts as the judge passing the answer, when it is set against
# a person's pass/fail.
JUDGE_PASS_AT = 0.5


def cohen_kappa(pairs: Sequence[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two raters' pass/fail on the same answers: 1 is full agreement, 0 what
    chance alone gives, below 0 worse than chance. None without pairs, or when both raters gave
    one and the same verdict to everything (chance agreement is then total: nothing to tell)."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    a_pass = sum(a for a, _ in pairs) / n
    b_pass = sum(b for _, b in pairs) / n
    expected = a_pass * b_pass + (1 - a_pass) * (1 - b_pass)
    if expected >= 1:
        return None
    return round((observed - expected) / (1 - expected), 4)


def judge_agreement(reviewed: Iterable[tuple[dict, bool]], judged: Sequence[str]) -> dict:
    """{metric: {"kappa", "n", "agreement"}} for each judge metric, over (scores, human passed)
    of the reviewed answers that metric scored."""
    rows = list(reviewed)
    out = {}
    for metric in judged:
        pairs = [
            (scores[metric] >= JUDGE_PASS_AT, human) for scores, human in rows if metric in scores
        ]
        if pairs:
            out[metric] = {
                "kappa": cohen_kappa(pairs),
                "n": len(pairs),
                "agreement": round(sum(a == b for a, b in pairs) / len(pairs), 4),
            }
    return out
