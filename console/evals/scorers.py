"""Scorers: each turns (item, observation) into a score in [0, 1], a pass/fail, and a reason —
or None when it does not apply to the item (e.g. source recall without expected sources).

Deterministic scorers decide whether an item passes; LLM-as-judge scores (faithfulness,
relevance) are aggregated and judged by the run's gates.
"""

from __future__ import annotations

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
    context: str = ""  # what the model was given, for the faithfulness judge


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


def recall_at_k(item: dict, obs: Observation, *, k: int = 5, **_) -> Score | None:
    expected = item.get("expected_sources") or []
    if not expected or item.get("unanswerable"):
        return None
    top = obs.sources[:k]
    hits = [s for s in expected if s in top]
    value = len(hits) / len(expected)
    return Score(
        value, value == 1.0, f"{len(hits)}/{len(expected)} expected sources in the top {k}"
    )


def mrr(item: dict, obs: Observation, **_) -> Score | None:
    expected = set(item.get("expected_sources") or [])
    if not expected or item.get("unanswerable"):
        return None
    for rank, source in enumerate(obs.sources, start=1):
        if source in expected:
            return Score(1 / rank, rank == 1, f"first relevant source at rank {rank}")
    return Score(0.0, False, "no relevant source retrieved")


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
RETRIEVAL: dict[str, Scorer] = {"recall_at_5": recall_at_k, "mrr": mrr}
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
        result = fn(item, obs, **options.get(name, {}))
        if result is None:
            continue
        scores[name] = round(result.value, 4)
        reasons[name] = result.reason
        if name in DETERMINISTIC and not result.passed:
            passed = False
    hallucinated = scores.get("contains_none") == 0.0 or scores.get("refusal") == 0.0
    return {"scores": scores, "reasons": reasons, "passed": passed, "hallucinated": hallucinated}
