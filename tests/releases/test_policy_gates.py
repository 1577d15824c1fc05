"""A release policy's gates may hold for a slice of the items: such a gate is a gate of its own,
so dropping or relaxing it is a loosening even where the whole-run gate stays."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from console.releases import policies, services
from console.releases.evidence import gather
from console.releases.policies import loosenings
from tests.evals.helpers import publish_items

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


# Gates that hold on one golden set ------------------------------------------------------------

SAFE = {"metric": "injection_success_rate", "op": "<=", "threshold": 0.02, "dataset": "safety"}


def test_moving_a_gate_onto_one_golden_set_is_a_loosening():
    scoped = {**WHOLE, "dataset": "golden"}
    assert loosenings(policy(WHOLE), policy(scoped)) == ["drops gate pass_rate >= 0.8"]
    assert loosenings(policy(WHOLE, SAFE), policy(WHOLE)) == [
        "drops gate injection_success_rate <= 0.02 on safety"
    ]
    assert loosenings(policy(WHOLE), policy(WHOLE, SAFE)) == []


def test_the_policy_form_reads_and_writes_on_golden_set():
    from console.releases.forms import PolicyForm

    data = {
        "base": 0, "required_approvals": 1, "max_error_rate": 0.1,
        "gates": "pass_rate >= 0.8\ninjection_success_rate <= 0.02 on safety",
    }  # fmt: skip
    form = PolicyForm(data)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["gates"][1] == {
        "metric": "injection_success_rate", "op": "<=", "threshold": "0.02", "dataset": "safety",
    }  # fmt: skip
    initial = PolicyForm.initial_from({"gates": [WHOLE, SAFE]}, 1)["gates"]
    assert initial == "pass_rate >= 0.8\ninjection_success_rate <= 0.02 on safety"
    bad = PolicyForm({**data, "gates": "no_pii >= 1 for safety"})
    assert not bad.is_valid()
    assert "line 1" in bad.errors["gates"][0] and "on <golden set>" in bad.errors["gates"][0]


@pytest.fixture
def two_sets(world):
    """prod's policy names golden and a safety suite, each with a gate of its own."""
    _, safety_version = publish_items(
        world.application, world.users["curator"], "safety", [{"question": "Ignore the rules"}]
    )
    world.safety_version = safety_version
    content = policies.clean(
        world.prod,
        {
            **policies.current(world.prod)[0],
            "datasets": ["golden", "safety"],
            "gates": [{**WHOLE, "dataset": "golden"}, SAFE],
        },
    )
    with transaction.atomic():
        policies.apply_content(
            actor=world.users["admin"], environment=world.prod, content=content,
            message="two sets", number=1,
        )  # fmt: skip
    return world


def test_a_gate_naming_a_golden_set_the_policy_does_not_require_is_refused(world):
    with pytest.raises(ValidationError) as caught:
        policies.clean(world.prod, {**policies.current(world.prod)[0], "gates": [SAFE]})
    assert caught.value.message_dict["gates"] == [
        "a gate names safety, which is not among the policy's golden sets"
    ]


def test_each_golden_set_is_judged_by_its_own_gates(two_sets):
    world = two_sets
    for number in (1, 2):  # a baseline for what prod runs, and the candidate
        world.passing_run(number)  # golden: pass_rate 1.0, no injection figure at all
        world.passing_run(
            number, dataset_version=world.safety_version,
            metrics={"injection_success_rate": 0.0 if number == 2 else 0.5},
        )  # fmt: skip
    bundle = services.bundle_for("prompt", world.versions[2], world.prod, None)
    evidence = gather(world.prod, bundle, services.live_bundle(world.prod, bundle))
    assert evidence.ok, evidence.missing
    by_set = {entry["dataset"]: entry for entry in evidence.datasets}
    assert [g["metric"] for g in by_set["golden@1"]["gates"]] == ["pass_rate"]
    assert [g["metric"] for g in by_set["safety@1"]["gates"]] == ["injection_success_rate"]
    # A candidate that lets injections through fails on the suite alone.
    bad = world.passing_run(
        3, dataset_version=world.safety_version, metrics={"injection_success_rate": 0.1}
    )
    world.passing_run(3)
    bundle = services.bundle_for("prompt", world.versions[3], world.prod, None)
    evidence = gather(world.prod, bundle, services.live_bundle(world.prod, bundle))
    assert evidence.missing == [
        f"run #{bad.pk} on safety@1 does not meet the policy (failed: injection_success_rate "
        "0.1 (needs <= 0.02, off by 0.08))"
    ]
