"""Every scorer on passing, failing and not-applicable items; score_item's aggregation."""

from __future__ import annotations

import json
import math

import pytest

from console.evals import scorers
from console.evals.scorers import Observation, Score


def obs(text: str, sources: list[str] | None = None) -> Observation:
    return Observation(text=text, sources=sources or [])


# contains_all ----------------------------------------------------------------------------------


def test_contains_all_passes_when_every_fact_is_present_ignoring_case_and_spacing():
    item = {"expected_contains": ["30 days", "Prepaid  Label"]}
    score = scorers.contains_all(item, obs("Return within 30   DAYS with the prepaid label."))
    assert score == Score(1.0, True, "all expected facts present")


def test_contains_all_scores_the_share_found_and_names_the_missing_facts():
    item = {"expected_contains": ["30 days", "receipt", "order number"]}
    score = scorers.contains_all(item, obs("You have 30 days."))
    assert score.value == pytest.approx(1 / 3)
    assert score.passed is False
    assert score.reason == "missing: receipt, order number"


@pytest.mark.parametrize(
    "item",
    [
        {},
        {"expected_contains": []},
        {"expected_contains": ["I don't know"], "unanswerable": True},
    ],
)
def test_contains_all_does_not_apply_without_facts_or_to_unanswerable_items(item):
    assert scorers.contains_all(item, obs("anything")) is None


# contains_none ---------------------------------------------------------------------------------


def test_contains_none_fails_when_a_forbidden_fact_is_said():
    item = {"expected_not_contains": ["60 days", "cash"]}
    score = scorers.contains_none(item, obs("You can return it within 60 Days."))
    assert score == Score(0.0, False, "said forbidden: 60 days")


def test_contains_none_passes_when_nothing_forbidden_is_said():
    item = {"expected_not_contains": ["60 days"]}
    assert scorers.contains_none(item, obs("30 days")) == Score(1.0, True, "no forbidden facts")


def test_contains_none_does_not_apply_without_forbidden_facts():
    assert scorers.contains_none({"expected_not_contains": []}, obs("x")) is None


# exact -----------------------------------------------------------------------------------------


def test_exact_compares_normalised_text_with_the_reference():
    item = {"reference_answer": "  Thirty days.  "}
    assert scorers.exact(item, obs("thirty   DAYS.")) == Score(1.0, True, "matches the reference")
    assert scorers.exact(item, obs("Thirty days!")) == Score(
        0.0, False, "differs from the reference"
    )


def test_exact_does_not_apply_without_a_reference():
    assert scorers.exact({"reference_answer": "   "}, obs("x")) is None
    assert scorers.exact({}, obs("x")) is None


# regex -----------------------------------------------------------------------------------------


def test_regex_uses_the_option_pattern_first_then_the_item_variable():
    item = {"variables": {"expected_regex": r"^\d+ days$"}}
    assert scorers.regex(item, obs("30 days")).passed is True
    assert scorers.regex(item, obs("thirty days")) == Score(
        0.0, False, r"does not match /^\d+ days$/"
    )
    # An explicit pattern wins over the item's.
    assert scorers.regex(item, obs("ORD-123"), pattern=r"ORD-\d{3}") == Score(
        1.0, True, r"matches /ORD-\d{3}/"
    )


def test_regex_does_not_apply_without_a_pattern():
    assert scorers.regex({"variables": {}}, obs("x")) is None


# json_valid / json_schema ------------------------------------------------------------------------


def test_json_valid():
    assert scorers.json_valid({}, obs('{"a": 1}')) == Score(1.0, True, "valid JSON")
    bad = scorers.json_valid({}, obs("{a: 1}"))
    assert bad.value == 0.0 and bad.passed is False
    assert bad.reason.startswith("not JSON:")


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "sources": {"type": "array"}},
    "required": ["answer", "sources"],
}


def test_json_schema_passes_a_matching_document():
    text = json.dumps({"answer": "30 days", "sources": ["refund-policy"]})
    assert scorers.json_schema({}, obs(text), schema=SCHEMA) == Score(
        1.0, True, "matches the schema"
    )


def test_json_schema_names_where_the_document_breaks_the_schema():
    text = json.dumps({"answer": 30, "sources": []})
    score = scorers.json_schema({}, obs(text), schema=SCHEMA)
    assert score.passed is False
    assert score.reason == "answer: 30 is not of type 'string'"
    missing = scorers.json_schema({}, obs('{"answer": "x"}'), schema=SCHEMA)
    assert missing.reason == "(root): 'sources' is a required property"
    assert scorers.json_schema({}, obs("nope"), schema=SCHEMA).reason.startswith("not JSON")


@pytest.mark.parametrize("depth", [900, 100_000])
def test_deeply_nested_output_fails_the_json_scorers_instead_of_crashing(depth):
    text = "[" * depth + "]" * depth
    for score in (
        scorers.json_valid({}, obs(text)),
        scorers.json_schema({}, obs(text), schema=SCHEMA),
    ):
        assert not score.passed
        assert "nested deeper than 64" in score.reason


def test_json_schema_does_not_apply_without_a_schema():
    assert scorers.json_schema({}, obs("{}")) is None
    assert scorers.json_schema({}, obs("{}"), schema={}) is None


# refusal ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I don't know. I can connect you with a human agent who can help.",
        "I DON’T KNOW that.",  # typographic apostrophe
        "Sorry, I'm not sure about that one.",
        "I do not have that information.",
    ],
)
def test_refusal_passes_when_an_unanswerable_item_is_declined(text):
    assert scorers.refusal({"unanswerable": True}, obs(text)) == Score(
        1.0, True, "declined as it should"
    )


def test_refusal_fails_when_an_unanswerable_item_is_answered():
    score = scorers.refusal({"unanswerable": True}, obs("Prices drop 40% next Black Friday."))
    assert score == Score(0.0, False, "answered an unanswerable question")


def test_refusal_does_not_apply_to_answerable_items():
    assert scorers.refusal({"unanswerable": False}, obs("I don't know")) is None
    assert scorers.refusal({}, obs("I don't know")) is None


# recall_at_k / mrr -------------------------------------------------------------------------------


def test_recall_at_k_counts_expected_sources_within_the_top_k():
    item = {"expected_sources": ["a", "b"]}
    full = scorers.recall_at_k(item, obs("", ["x", "b", "a"]), k=3)
    assert full == Score(1.0, True, "2/2 expected sources in the top 3")
    half = scorers.recall_at_k(item, obs("", ["x", "b", "y", "a"]), k=3)
    assert half == Score(0.5, False, "1/2 expected sources in the top 3")
    # The default k is 5: the sixth source does not count.
    late = scorers.recall_at_k({"expected_sources": ["a"]}, obs("", [*"123456"[:5], "a"]))
    assert late == Score(0.0, False, "0/1 expected sources in the top 5")


def test_recall_and_mrr_do_not_apply_without_expected_sources_or_to_unanswerable_items():
    for item in ({}, {"expected_sources": []}, {"expected_sources": ["a"], "unanswerable": True}):
        assert scorers.recall_at_k(item, obs("", ["a"])) is None
        assert scorers.mrr(item, obs("", ["a"])) is None


def test_mrr_is_the_reciprocal_rank_of_the_first_relevant_source():
    item = {"expected_sources": ["b", "c"]}
    assert scorers.mrr(item, obs("", ["b", "a"])) == Score(
        1.0, True, "first relevant source at rank 1"
    )
    third = scorers.mrr(item, obs("", ["x", "y", "c", "b"]))
    assert third.value == pytest.approx(1 / 3)
    assert (third.passed, third.reason) == (False, "first relevant source at rank 3")
    assert scorers.mrr(item, obs("", ["x"])) == Score(0.0, False, "no relevant source retrieved")
    assert scorers.mrr(item, obs("", [])) == Score(0.0, False, "no relevant source retrieved")


def test_mrr_counts_only_the_top_k_when_the_run_sets_k():
    item = {"expected_sources": ["c"]}
    assert scorers.mrr(item, obs("", ["a", "b", "c"]), k=3).value == pytest.approx(1 / 3)
    outside = scorers.mrr(item, obs("", ["a", "b", "c"]), k=2)
    assert outside == Score(0.0, False, "no relevant source retrieved in the top 2")


def test_a_repeated_source_counts_once():
    item = {"expected_sources": ["a", "b"]}
    # "a" twice would fill the top 2 and push "b" out if repeats counted.
    assert scorers.recall_at_k(item, obs("", ["a", "a", "b"]), k=2).value == 1.0


# ndcg_at_k / context_precision / context_recall --------------------------------------------------


def test_ndcg_is_one_when_the_expected_sources_fill_the_first_ranks():
    item = {"expected_sources": ["a", "b"]}
    perfect = scorers.ndcg_at_k(item, obs("", ["b", "a", "x"]), k=3)
    assert perfect == Score(1.0, True, "relevant sources in the top 3: at rank 1, 2")


def test_ndcg_discounts_relevant_sources_by_their_rank():
    item = {"expected_sources": ["a", "b"]}
    ideal = 1 + 1 / math.log2(3)
    low = scorers.ndcg_at_k(item, obs("", ["x", "a", "y", "b"]), k=4)
    assert low.value == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert low.passed is False and low.reason == "relevant sources in the top 4: at rank 2, 4"
    # Only one of two expected sources retrieved, even at rank 1: not perfect.
    half = scorers.ndcg_at_k(item, obs("", ["a"]), k=4)
    assert half.value == pytest.approx(1 / ideal)
    none = scorers.ndcg_at_k(item, obs("", ["x", "y"]), k=4)
    assert none == Score(0.0, False, "relevant sources in the top 4: none")


def test_ndcg_ideal_is_capped_at_k():
    # Three expected sources but k = 2: two relevant in the top 2 is the best possible.
    item = {"expected_sources": ["a", "b", "c"]}
    assert scorers.ndcg_at_k(item, obs("", ["a", "b", "c"]), k=2).value == pytest.approx(1.0)


def test_context_precision_rewards_relevant_sources_ranked_above_noise():
    item = {"expected_sources": ["a", "b"]}
    first = scorers.context_precision(item, obs("", ["a", "b", "x"]), k=3)
    assert first == Score(1.0, True, "2 relevant and 1 irrelevant source in the top 3")
    # Relevant at ranks 2 and 3: precision@2 = 1/2, precision@3 = 2/3.
    late = scorers.context_precision(item, obs("", ["x", "a", "b"]), k=3)
    assert late.value == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert late.passed is False
    cut = scorers.context_precision(item, obs("", ["x", "y", "a"]), k=2)
    assert cut == Score(0.0, False, "no relevant source in the top 2")


def test_context_recall_is_the_share_of_expected_facts_the_context_holds():
    item = {"expected_contains": ["30 days", "Prepaid label", "receipt"]}
    context = "Returns within 30   DAYS. Use the prepaid label we email you."
    score = scorers.context_recall(item, Observation("", [], context))
    assert score.value == pytest.approx(2 / 3)
    assert score.passed is False
    assert score.reason == "2/3 expected facts in the context; missing: 'receipt'"
    full = scorers.context_recall({"expected_contains": ["30 days"]}, Observation("", [], context))
    assert full == Score(1.0, True, "1/1 expected facts in the context")


@pytest.mark.parametrize(
    ("item", "context"),
    [
        ({"expected_contains": ["30 days"]}, ""),
        ({"expected_contains": []}, "30 days"),
        ({"expected_contains": ["30 days"], "unanswerable": True}, "30 days"),
    ],
)
def test_context_recall_does_not_apply_without_facts_context_or_to_unanswerable(item, context):
    assert scorers.context_recall(item, Observation("", [], context)) is None


def test_score_item_gives_the_runs_k_to_the_depth_scorers_but_not_to_recall_at_5():
    item = {"expected_sources": ["f"]}
    sources = ["a", "b", "c", "d", "e", "f"]
    names = ["recall_at_5", "recall_at_k", "mrr", "ndcg_at_k", "context_precision"]
    deep = scorers.score_item(item, obs("", sources), names, {"k": 6})["scores"]
    assert deep["recall_at_5"] == 0.0  # fixed at 5, as stored runs and gates mean it
    assert deep["recall_at_k"] == 1.0
    assert deep["mrr"] == round(1 / 6, 4)
    assert deep["context_precision"] == round(1 / 6, 4)
    assert deep["ndcg_at_k"] == round(1 / math.log2(7), 4)
    shallow = scorers.score_item(item, obs("", sources), names, {"k": 3})["scores"]
    assert shallow == dict.fromkeys(names, 0.0)
    # Without k (runs launched before it existed) MRR looks at every rank, as it always did.
    legacy = scorers.score_item(item, obs("", sources), ["mrr", "recall_at_k"], {})["scores"]
    assert legacy == {"mrr": round(1 / 6, 4), "recall_at_k": 0.0}


# cited_sources ---------------------------------------------------------------------------------


def test_cited_sources_in_first_citation_order_without_repeats():
    text = "Return in 30 days [refund-policy]. Free exchange [exchanges] [refund-policy]."
    assert scorers.cited_sources(text) == ["refund-policy", "exchanges"]
    assert scorers.cited_sources("No citations [not a source id!] here") == []
    assert scorers.cited_sources("[docs/v2:faq.md] [a_b.c]") == ["docs/v2:faq.md", "a_b.c"]


# score_item ------------------------------------------------------------------------------------


def test_score_item_runs_applicable_scorers_and_only_deterministic_ones_decide_pass():
    item = {
        "expected_contains": ["30 days"],
        "expected_not_contains": ["60 days"],
        "expected_sources": ["refund-policy", "exchanges"],
    }
    answer = obs("You have 30 days [refund-policy].", ["refund-policy"])
    result = scorers.score_item(item, answer, list(scorers.ALL_SCORERS))
    # refusal, exact, regex and json_schema do not apply; json_valid does (and fails). Of the
    # safety scorers only no_pii applies to an item that is not a safety case.
    assert result["scores"] == {
        "contains_all": 1.0,
        "contains_none": 1.0,
        "json_valid": 0.0,
        "no_pii": 1.0,
        "recall_at_5": 0.5,
        "recall_at_k": 0.5,
        "mrr": 1.0,
        "ndcg_at_k": round(1 / (1 + 1 / math.log2(3)), 4),
        "context_precision": 1.0,
    }
    # context_recall does not apply: the observation carries no context.
    assert result["passed"] is False  # json_valid failed
    assert result["hallucinated"] is False

    default = scorers.score_item(item, answer, scorers.DEFAULT_SCORERS)
    assert set(default["scores"]) == {"contains_all", "contains_none", "recall_at_5", "mrr"}
    # recall 0.5 is a retrieval metric: it does not fail the item.
    assert default["passed"] is True
    assert default["reasons"]["recall_at_5"] == "1/2 expected sources in the top 5"


def test_score_item_flags_hallucination_on_forbidden_facts_or_answered_unanswerables():
    said = scorers.score_item(
        {"expected_not_contains": ["cash"]}, obs("We refund in cash."), ["contains_none"]
    )
    assert said["hallucinated"] is True and said["passed"] is False
    answered = scorers.score_item(
        {"unanswerable": True}, obs("It will be $12 next week."), scorers.DEFAULT_SCORERS
    )
    assert answered["scores"] == {"refusal": 0.0}
    assert answered["hallucinated"] is True
    declined = scorers.score_item(
        {"unanswerable": True}, obs("I don't know."), scorers.DEFAULT_SCORERS
    )
    assert declined == {
        "scores": {"refusal": 1.0},
        "reasons": {"refusal": "declined as it should"},
        "passed": True,
        "hallucinated": False,
    }


def test_score_item_passes_scorer_options_and_ignores_unknown_and_judged_names():
    result = scorers.score_item(
        {},
        obs('{"answer": 1}'),
        ["json_schema", "regex", "faithfulness", "no-such-scorer"],
        {"json_schema": {"schema": SCHEMA}, "regex": {"pattern": "answer"}},
    )
    assert result["scores"] == {"json_schema": 0.0, "regex": 1.0}
    assert result["reasons"]["json_schema"] == "(root): 'sources' is a required property"
    assert result["passed"] is False
