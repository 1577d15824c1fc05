"""A release policy may trust LLM-judge gates only from a judge that agrees with people: Cohen's
kappa over the reviewed answers of that judge (model config and prompt versions) on that golden
set, with a minimum number of reviews."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from console.evals import services
from console.evals.models import EvalResult
from console.evals.selectors import judge_calibration
from console.releases import policies
from console.releases.evidence import Bundle, gather
from tests.evals.test_views import finished_run

GATE = {"metric": "relevance", "op": ">=", "threshold": 0.1}


@pytest.fixture
def judged(demo, simulator):
    """A finished v3 run with an LLM judge, and prod's policy gating on relevance with a
    minimum judge kappa of 0.5 over 4 reviews."""
    run = finished_run(demo, judged=True)
    prod = demo.application.environments.get(key="prod")
    content = policies.clean(
        prod,
        {
            **policies.current(prod)[0],
            "protected": True,
            "required_approvals": 1,
            "eval_gate": True,
            "datasets": [demo.dataset.key],
            "gates": [GATE],
            "min_judge_kappa": 0.5,
            "min_judge_reviews": 4,
        },
    )
    with transaction.atomic():
        policies.apply_content(
            actor=demo.engineer, environment=prod, content=content, message="trust", number=0
        )
    return run, prod


def evidence_for(demo, run, prod):
    return gather(prod, Bundle(run.prompt_version, run.model_version), Bundle(None, None))


def review(demo, rows, agree: list[bool]):
    for row, agrees in zip(rows, agree, strict=True):
        judge_pass = row.scores["relevance"] >= 0.5
        services.review_result(
            actor=demo.engineer,
            result=row,
            verdict="pass" if judge_pass == agrees else "fail",
        )


def judged_rows(run, judge_pass: bool, count: int) -> list[EvalResult]:
    rows = [
        r
        for r in EvalResult.objects.filter(run=run, status="ok").order_by("position")
        if "relevance" in r.scores and (r.scores["relevance"] >= 0.5) == judge_pass
    ]
    assert len(rows) >= count, "the demo run has too few answers of that kind"
    return rows[:count]


def test_an_unreviewed_judge_is_not_trusted_and_the_refusal_says_why(demo, judged):
    run, prod = judged
    evidence = evidence_for(demo, run, prod)
    assert evidence.missing == [
        f"the relevance judge of run #{run.pk} is not trusted on {demo.dataset.key}@1: "
        "cannot be told over 0 reviews (the policy needs κ ≥ 0.5 over at least 4); review "
        "more of its answers"
    ]
    assert evidence.datasets[0]["judges"]["relevance"]["n"] == 0


def test_a_judge_people_agree_with_is_trusted_and_one_they_overrule_is_not(demo, judged):
    run, prod = judged
    # The judge passes every v3 answer; v1 (no context) gives it answers to fail. Its track
    # record on the golden set spans every run it judged there.
    first = finished_run(demo, judged=True, prompt=1)
    review(demo, judged_rows(run, True, 3) + judged_rows(first, False, 2), [True] * 5)
    calibration = judge_calibration(run, "relevance")
    assert (calibration["kappa"], calibration["n"]) == (1.0, 5)
    assert evidence_for(demo, run, prod).ok

    # People overrule the judge on five answers of another run: the gate stops counting.
    other = finished_run(demo, judged=True, prompt=2)
    review(demo, judged_rows(other, True, 5), [False] * 5)
    calibration = judge_calibration(run, "relevance")
    assert calibration["n"] == 10 and calibration["kappa"] < 0.5
    missing = evidence_for(demo, run, prod).missing
    assert len(missing) == 1 and f"κ = {calibration['kappa']:g} over 10 reviews" in missing[0]


def test_the_judge_trust_rule_is_validated_and_relaxing_it_is_a_loosening(demo, judged):
    _, prod = judged
    content, _ = policies.current(prod)
    with pytest.raises(ValidationError) as caught:
        policies.clean(prod, {**content, "min_judge_kappa": 3, "min_judge_reviews": 0})
    assert set(caught.value.message_dict) == {"min_judge_kappa", "min_judge_reviews"}
    assert policies.loosenings(content, {**content, "min_judge_kappa": None}) == [
        "lowers the judge agreement needed (κ 0.5 → none)"
    ]
    assert policies.loosenings(content, {**content, "min_judge_reviews": 2}) == [
        "trusts a judge on fewer reviews (4 → 2)"
    ]
    assert policies.loosenings(content, {**content, "min_judge_kappa": 0.7}) == []
