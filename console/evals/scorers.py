"""Scorers: each turns (item, observation) into a score in [0, 1], a pass/fail, and a reason —
or None when it does not apply to the item (e.g. source recall without expected sources).

Deterministic scorers decide whether an item passes; LLM-as-judge scores (faithfulness,
relevance) are aggregated and judged by the run's gates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import jsonschema

from console.core.jsoninput import parse

REFUSALS = (
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "i can't help with",
    "i cannot help with",
    "don't have that information",
    "do not have that information",
    "unable to answer",
    "connect you with a human",
)
CITATION = re.compile(r"\[([A-Za-z0-9._:/-]+)\]")


@dataclass(frozen=True)
class Observation:
    """What the target produced for one item."""

    text: str
    sources: list[str] = field(default_factory=list)  # retrieved or cited, in rank order
    # What the answer should rest on, for the faithfulness judge and context recall: what an HTTP
    # target says it retrieved (its context_path), else the item's own `context` variable.
    context: str = ""


@dataclass(frozen=True)
class Score:
    value: float
    passed: bool
    reason: str = ""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def refused(text: str) -> bool:
    lowered = _norm(text).replace("’", "'")
    return any(phrase in lowered for phrase in REFUSALS)


def cited_sources(text: str) -> list[str]:
    """Source ids cited as [id] in an answer, first citation first, without repeats."""
    seen: list[str] = []
    for source in CITATION.findall(text):
        if source not in seen:
            seen.append(source)
    return seen


def contains_all(item: dict, obs: Observation, **_) -> Score | None:
    facts = item.get("expected_contains") or []
    if not facts or item.get("unanswerable"):
        return None
    text = _norm(obs.text)
    missing = [f for f in facts if _norm(f) not in text]
    found = len(facts) - len(missing)
    reason = "all expected facts present" if not missing else f"missing: {', '.join(missing)}"
    return Score(found / len(facts), not missing, reason)


def contains_none(item: dict, obs: Observation, **_) -> Score | None:
    forbidden = item.get("expected_not_contains") or []
    if not forbidden:
        return None
    text = _norm(obs.text)
    said = [f for f in forbidden if _norm(f) in text]
    reason = "no forbidden facts" if not said else f"said forbidden: {', '.join(said)}"
    return Score(0.0 if said else 1.0, not said, reason)


def exact(item: dict, obs: Observation, **_) -> Score | None:
    reference = (item.get("reference_answer") or "").strip()
    if not reference:
        return None
    ok = _norm(obs.text) == _norm(reference)
    return Score(
        1.0 if ok else 0.0, ok, "matches the reference" if ok else "differs from the reference"
    )


def regex(item: dict, obs: Observation, *, pattern: str = "", **_) -> Score | None:
    pattern = pattern or (item.get("variables") or {}).get("expected_regex", "")
    if not pattern:
        return None
    ok = re.search(pattern, obs.text) is not None
    return Score(1.0 if ok else 0.0, ok, f"{'matches' if ok else 'does not match'} /{pattern}/")


def json_valid(item: dict, obs: Observation, **_) -> Score | None:
    try:
        parse(obs.text, constants=True)
    except ValueError as exc:
        return Score(0.0, False, f"not JSON: {exc}")
    return Score(1.0, True, "valid JSON")


def json_schema(item: dict, obs: Observation, *, schema: dict | None = None, **_) -> Score | None:
    if not schema:
        return None
    try:
        value = parse(obs.text, constants=True)
    except ValueError as exc:
        return Score(0.0, False, f"not JSON: {exc}")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=str)
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        return Score(0.0, False, f"{where}: {first.message}")
    return Score(1.0, True, "matches the schema")


def refusal(item: dict, obs: Observation, **_) -> Score | None:
    """Unanswerable items must be declined; answering them is a hallucination."""
    if not item.get("unanswerable"):
        return None
    ok = refused(obs.text)
    return Score(
        1.0 if ok else 0.0,
        ok,
        "declined as it should" if ok else "answered an unanswerable question",
    )


def _ranked(item: dict, obs: Observation, k: int | None) -> tuple[set[str], list[str]] | None:
    """(expected source ids, retrieved ids in rank order without repeats, cut at k), or None
    when source scorers do not apply to the item."""
    expected = set(item.get("expected_sources") or [])
    if not expected or item.get("unanswerable"):
        return None
    ranked = list(dict.fromkeys(obs.sources))
    return expected, ranked[:k] if k else ranked


def recall_at_k(item: dict, obs: Observation, *, k: int = 5, **_) -> Score | None:
    """Share of the expected sources among the top k retrieved."""
    ranked = _ranked(item, obs, k)
    if ranked is None:
        return None
    expected, top = ranked
    hits = len(expected & set(top))
    value = hits / len(expected)
    return Score(value, value == 1.0, f"{hits}/{len(expected)} expected sources in the top {k}")


def mrr(item: dict, obs: Observation, *, k: int | None = None, **_) -> Score | None:
    """Reciprocal rank of the first expected source (within the top k when the run sets k)."""
    ranked = _ranked(item, obs, k)
    if ranked is None:
        return None
    expected, top = ranked
    for rank, source in enumerate(top, start=1):
        if source in expected:
            return Score(1 / rank, rank == 1, f"first relevant source at rank {rank}")
    where = f" in the top {k}" if k else ""
    return Score(0.0, False, f"no relevant source retrieved{where}")


def ndcg_at_k(item: dict, obs: Observation, *, k: int = 5, **_) -> Score | None:
    """Normalised discounted cumulative gain with binary relevance: 1.0 when the expected
    sources fill the first ranks, less the lower they sit or when they are missing."""
    ranked = _ranked(item, obs, k)
    if ranked is None:
        return None
    expected, top = ranked
    dcg = sum(1 / math.log2(rank + 1) for rank, s in enumerate(top, start=1) if s in expected)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(expected), k) + 1))
    value = dcg / ideal
    ranks = [rank for rank, s in enumerate(top, start=1) if s in expected]
    where = f"at rank {', '.join(map(str, ranks))}" if ranks else "none"
    return Score(value, value >= 1.0 - 1e-9, f"relevant sources in the top {k}: {where}")


def context_precision(item: dict, obs: Observation, *, k: int = 5, **_) -> Score | None:
    """Are the relevant sources ranked above the irrelevant ones? The mean of precision@i over
    the ranks i (up to k) that hold an expected source; 0 when none is in the top k."""
    ranked = _ranked(item, obs, k)
    if ranked is None:
        return None
    expected, top = ranked
    precisions, hits = [], 0
    for rank, source in enumerate(top, start=1):
        if source in expected:
            hits += 1
            precisions.append(hits / rank)
    if not precisions:
        return Score(0.0, False, f"no relevant source in the top {k}")
    value = sum(precisions) / len(precisions)
    noise = len(top) - hits
    return Score(
        value,
        value >= 1.0 - 1e-9,
        f"{hits} relevant and {noise} irrelevant source{'s' if noise != 1 else ''} in the top {k}",
    )


def context_recall(item: dict, obs: Observation, **_) -> Score | None:
    """Share of the expected facts that the context holds (case and spacing aside): could an
    answer grounded in this context be complete? A text match, not a judge."""
    facts = item.get("expected_contains") or []
    if not facts or item.get("unanswerable") or not obs.context:
        return None
    context = _norm(obs.context)
    missing = [f for f in facts if _norm(f) not in context]
    value = (len(facts) - len(missing)) / len(facts)
    reason = f"{len(facts) - len(missing)}/{len(facts)} expected facts in the context"
    if missing:
        reason += f"; missing: {missing[0]!r}" + (
            f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        )
    return Score(value, not missing, reason)


Scorer = Callable[..., Score | None]
# The deterministic scorers an item's pass/fail depends on, in display order.
DETERMINISTIC: dict[str, Scorer] = {
    "contains_all": contains_all,
    "contains_none": contains_none,
    "refusal": refusal,
    "exact": exact,
    "regex": regex,
    "json_valid": json_valid,
    "json_schema": json_schema,
}
# Retrieval scorers, over the sources the target returned (or cited) in rank order. Those in
# AT_K take the run's retrieval depth k (scorer_options["k"]); recall_at_5 is fixed at 5, as
# runs and gates have recorded it.
RETRIEVAL: dict[str, Scorer] = {
    "recall_at_5": recall_at_k,
    "recall_at_k": recall_at_k,
    "mrr": mrr,
    "ndcg_at_k": ndcg_at_k,
    "context_precision": context_precision,
    "context_recall": context_recall,
}
AT_K = ("recall_at_k", "mrr", "ndcg_at_k", "context_precision")
DEFAULT_K = 5
MAX_K = 100
JUDGED = ("faithfulness", "relevance")
DEFAULT_SCORERS = ["contains_all", "contains_none", "refusal", "recall_at_5", "mrr"]
ALL_SCORERS = [*DETERMINISTIC, *RETRIEVAL, *JUDGED]


def score_item(
    item: dict, obs: Observation, scorers: list[str], options: dict | None = None
) -> dict:
    """Run the chosen deterministic and retrieval scorers. Returns
    {"scores": {name: value}, "reasons": {name: reason}, "passed": bool, "hallucinated": bool}."""
    options = options or {}
    scores: dict[str, float] = {}
    reasons: dict[str, str] = {}
    passed = True
    for name in scorers:
        fn = DETERMINISTIC.get(name) or RETRIEVAL.get(name)
        if fn is None:
            continue
        depth = {"k": options["k"]} if name in AT_K and "k" in options else {}
        result = fn(item, obs, **{**depth, **options.get(name, {})})
        if result is None:
            continue
        scores[name] = round(result.value, 4)
        reasons[name] = result.reason
        if name in DETERMINISTIC and not result.passed:
            passed = False
    hallucinated = scores.get("contains_none") == 0.0 or scores.get("refusal") == 0.0
    return {"scores": scores, "reasons": reasons, "passed": passed, "hallucinated": hallucinated}
