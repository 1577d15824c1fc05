"""A release policy's gates may hold for a slice of the items: such a gate is a gate of its own,
so dropping or relaxing it is a loosening even where the whole-run gate stays."""

from __future__ import annotations

from console.releases.policies import loosenings

WHOLE = {"metric": "pass_rate", "op": ">=", "threshold": 0.8}
REFUNDS = {"metric": "pass_rate", "op": ">=", "threshold": 0.9, "slice": "refunds"}


def policy(*gates: dict) -> dict:
    return {"protected": True, "gates": list(gates), "max_error_rate": 0.1}


def test_dropping_a_slice_gate_is_a_loosening_even_with_the_whole_run_gate_kept():
    assert loosenings(policy(WHOLE, REFUNDS), policy(WHOLE)) == [
        "drops gate pass_rate[refunds] >= 0.9"
    ]


def test_relaxing_a_slice_gate_is_told_apart_from_the_whole_run_gate():
    relaxed = {**REFUNDS, "threshold": 0.7}
    assert loosenings(policy(WHOLE, REFUNDS), policy(WHOLE, relaxed)) == [
        "relaxes pass_rate[refunds] >= 0.9 to 0.7"
    ]
    # A slice gate that only tightens, or is new, loosens nothing.
    assert loosenings(policy(WHOLE), policy(WHOLE, REFUNDS)) == []
    assert loosenings(policy(WHOLE, REFUNDS), policy(WHOLE, {**REFUNDS, "threshold": 0.95})) == []
