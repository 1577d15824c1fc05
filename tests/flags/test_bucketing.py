"""The documented bucketing formula, pinned by a vector file any SDK can test itself against."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from console.flags.evaluation import bucket, evaluate, pick_variant
from tests.flags.helpers import definition, split

VECTORS = json.loads((Path(__file__).parent / "bucketing_vectors.json").read_text("utf-8"))


def test_bucket_matches_every_vector_exactly():
    assert len(VECTORS["vectors"]) >= 10
    for v in VECTORS["vectors"]:
        digest = hashlib.sha256(
            f"{v['flag_key']}:{v['salt']}:{v['targeting_key']}".encode()
        ).hexdigest()
        assert digest[:15] == v["hex15"]
        assert bucket(v["flag_key"], v["salt"], v["targeting_key"]) == v["bucket"]


def test_variant_assignment_matches_the_vectors():
    for name, weights in VECTORS["splits"].items():
        pairs = tuple((variant, float(weight)) for variant, weight in weights)
        for v in VECTORS["vectors"]:
            assert pick_variant(pairs, v["bucket"]) == v[name], (name, v)


def test_evaluation_uses_the_same_buckets_as_the_vectors():
    variants = [{"key": "stable", "value": "s"}, {"key": "canary", "value": "c"}]
    for v in VECTORS["vectors"]:
        if not v["targeting_key"]:
            continue  # an empty targeting key is "missing" to the evaluator
        flag = definition(
            split(("stable", 75), ("canary", 25)),
            key=v["flag_key"],
            salt=v["salt"],
            variants=variants,
            off_variant="stable",
        )
        result = evaluate(flag, {"targetingKey": v["targeting_key"]})
        assert result.bucket == v["bucket"] and result.variant == v["variant_75_25"]


def test_split_accuracy_100k_keys_at_25_percent_within_one_point():
    flag = definition(split(("a", 25), ("b", 75)), key="accuracy", salt="s1")
    hits = sum(evaluate(flag, {"targetingKey": f"user-{i}"}).variant == "a" for i in range(100_000))
    assert abs(hits / 100_000 - 0.25) <= 0.01, hits


def test_growing_a_rollout_never_moves_anyone_out_of_the_treatment():
    """25% → 50%: everyone who had the treatment keeps it (cumulative weights, same buckets)."""
    for order in (
        (("on", 25), ("off", 75), ("on", 50), ("off", 50)),  # treatment first
        (("off", 75), ("on", 25), ("off", 50), ("on", 50)),  # treatment last
    ):
        before = definition(split(order[0], order[1]), key="grow", salt="x")
        after = definition(split(order[2], order[3]), key="grow", salt="x")
        treated_before = {
            i for i in range(20_000) if evaluate(before, {"targetingKey": f"u{i}"}).variant == "on"
        }
        treated_after = {
            i for i in range(20_000) if evaluate(after, {"targetingKey": f"u{i}"}).variant == "on"
        }
        assert treated_before <= treated_after
        assert abs(len(treated_after) / 20_000 - 0.5) < 0.02


def test_same_key_same_variant_every_time_and_salt_reshuffles():
    flag = definition(split(("a", 50), ("b", 50)), key="sticky", salt="one")
    first = [evaluate(flag, {"targetingKey": f"k{i}"}).variant for i in range(500)]
    again = [evaluate(flag, {"targetingKey": f"k{i}"}).variant for i in range(500)]
    other_salt = definition(split(("a", 50), ("b", 50)), key="sticky", salt="two")
    reshuffled = [evaluate(other_salt, {"targetingKey": f"k{i}"}).variant for i in range(500)]
    assert first == again
    assert first != reshuffled
