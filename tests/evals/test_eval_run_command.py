"""`manage.py eval_run`: the eval gate in a CI pipeline (exit 0 on pass, non-zero otherwise)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from console.accounts.roles import Role
from console.evals import services
from console.evals.models import EvalRun
from tests.factories import make_member

pytestmark = pytest.mark.django_db


def gates(demo, threshold: float) -> None:
    services.set_gate_policy(
        actor=demo.engineer,
        application=demo.application,
        dataset=demo.dataset,
        gates=[{"metric": "pass_rate", "op": ">=", "threshold": threshold}],
        max_error_rate=0.1,
    )


def eval_run(demo, *args, **options) -> str:
    out = StringIO()
    call_command(
        "eval_run",
        demo.application.key,
        "--prompt=answer-question@3",
        "--model=gpt-main@1",
        "--dataset=support-golden@1",
        *args,
        stdout=out,
        stderr=StringIO(),
        **options,
    )
    return out.getvalue()


@pytest.fixture
def admin(demo):
    return make_member(demo.application, Role.ADMIN, "ci-admin")


def test_inline_run_that_passes_its_gate_exits_zero(demo, admin):
    gates(demo, 0.8)
    out = eval_run(demo, "--inline")
    run = EvalRun.objects.get()
    assert run.created_by == admin  # the first admin by default
    assert (run.status, run.verdict) == ("completed", "passed")
    assert out.splitlines() == [
        f"run #{run.pk}: answer-question@3 × gpt-main@1 on support-golden@1",
        "completed: passed — all gates met",
        "  ok   pass_rate 0.85 >= 0.8",
    ]


def test_inline_run_that_fails_its_gate_raises_command_error(demo, admin):
    gates(demo, 0.9)
    with pytest.raises(CommandError) as caught:
        eval_run(demo, "--inline")
    run = EvalRun.objects.get()
    assert str(caught.value) == f"eval gate not passed: run #{run.pk} is failed"
    assert run.verdict == "failed"


def test_judge_option_adds_the_judged_scorers(demo, admin):
    gates(demo, 0.8)
    eval_run(demo, "--inline", "--judge=judge@1", "--as-user", demo.engineer.username)
    run = EvalRun.objects.get()
    assert run.created_by == demo.engineer
    assert run.metrics["faithfulness"] == 1.0
    assert set(run.judge_prompts) == {"faithfulness", "relevance"}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--prompt=answer-question", "--prompt must look like KEY@N, got 'answer-question'"),
        ("--model=gpt-main@latest", "--model must look like KEY@N, got 'gpt-main@latest'"),
        ("--dataset=@1", "--dataset must look like KEY@N, got '@1'"),
        ("--prompt=answer-question@9", "--prompt answer-question@9: no such version in"),
        ("--judge=judge@2", "--judge judge@2: no such version in"),
    ],
)
def test_bad_references_raise_command_error(demo, admin, option, message):
    with pytest.raises(CommandError) as caught:
        eval_run(demo, option)
    assert str(caught.value).startswith(message)
    assert not EvalRun.objects.exists()


def test_unknown_application_and_user(demo, admin):
    with pytest.raises(CommandError, match="application 'nope' does not exist"):
        call_command("eval_run", "nope", "--prompt=a@1", "--model=b@1", "--dataset=c@1")
    with pytest.raises(CommandError, match="user 'ghost' does not exist"):
        eval_run(demo, "--as-user=ghost")


def test_cost_cap_stop_fails_the_gate(demo, admin):
    gates(demo, 0.5)
    with pytest.raises(CommandError, match="is errored"):
        eval_run(demo, "--inline", "--cost-cap=0.0003")
    assert EvalRun.objects.get().status == EvalRun.Status.STOPPED


def test_without_wait_or_inline_it_only_launches(demo, admin):
    out = eval_run(demo)
    run = EvalRun.objects.get()
    assert run.status == EvalRun.Status.QUEUED
    assert out.strip() == f"run #{run.pk}: {run.label}"


def test_a_duplicate_launch_follows_the_run_in_progress(demo, admin):
    gates(demo, 0.8)
    first = services.launch_run(**demo.launch_kwargs())
    err = StringIO()
    call_command(
        "eval_run",
        demo.application.key,
        "--prompt=answer-question@3",
        "--model=gpt-main@1",
        "--dataset=support-golden@1",
        "--inline",
        stdout=StringIO(),
        stderr=err,
    )
    assert EvalRun.objects.get() == first
    assert f"run #{first.pk}" in err.getvalue()
    first.refresh_from_db()
    assert first.verdict == "passed"
