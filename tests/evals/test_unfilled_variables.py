"""A golden-set item that does not fill a variable the prompt declares is an item error: no model
call, a message naming the variable, counted in the run's error rate. Never a placeholder (or a
silently empty value) sent to the model."""

from __future__ import annotations

import threading

import pytest
from django.urls import reverse

from console.evals import services
from console.evals.models import EvalResult, EvalRun
from console.evals.runner import RunSpec, judge, prompt_messages
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG, PROMPT
from console.registry.models import ModelConfigVersion, PromptVersion
from console.registry.templating import MissingVariables, render, render_strict
from tests.evals.helpers import model_content, publish_items, run_url

pytestmark = pytest.mark.django_db

ORDER_PROMPT = {
    "system": "You help with Acme Store orders. The customer's order is {{ order_id }}.",
    "user": "{{ question }}",
    "variables": ["question", "order_id"],
    "params": {},
}
MISSING = {"q-03", "q-06", "q-09"}  # q-09 fills other variables, just not order_id
ERROR_RATE_GATE = [{"metric": "error_rate", "op": "<=", "threshold": 0.05}]


def rows(missing: set[str] = MISSING) -> list[dict]:
    out = []
    for n in range(1, 11):
        item_id = f"q-{n:02d}"
        variables = {} if item_id in missing else {"order_id": f"A-{1000 + n}"}
        if item_id == "q-09":
            variables["customer_tier"] = "gold"
        out.append(
            {
                "id": item_id,
                "question": f"Where is my order, question {n}?",
                "expected_contains": [],
                "variables": variables,
            }
        )
    return out


def recording(server) -> list[list[dict]]:
    """Every message list the simulator is asked to complete (it stays the real simulator)."""
    received: list[list[dict]] = []
    lock = threading.Lock()
    base = server.RequestHandlerClass

    def _complete(self, request, messages, model):
        with lock:
            received.append(messages)
        return base._complete(self, request, messages, model)

    server.RequestHandlerClass = type("Recording", (base,), {"_complete": _complete})
    return received


@pytest.fixture
def setup(application, engineer, start_simulator):
    server, base_url, faults = start_simulator()
    received = recording(server)
    prompt = registry.create_head(
        actor=engineer, kind=PROMPT, application=application, key="order-help",
        name="Order help", content=ORDER_PROMPT,
    ).version  # fmt: skip
    model_version = registry.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=application, key="gpt-main",
        name="Main", content=model_content(base_url),
    ).version  # fmt: skip

    def run(dataset_rows: list[dict], key: str = "orders", **extra) -> EvalRun:
        _, version = publish_items(application, engineer, key, dataset_rows)
        launched = services.launch_run(
            actor=engineer,
            application=application,
            dataset_version=version,
            prompt_version=prompt,
            model_version=model_version,
            scorers=["contains_all"],
            **extra,
        )
        services.execute_run(launched.pk)
        launched.refresh_from_db()
        return launched

    return run, received, faults


def test_items_missing_a_declared_variable_are_errors_and_never_reach_the_model(setup):
    run, received, faults = setup
    result = run(rows(), gates=ERROR_RATE_GATE, max_error_rate=0.5)

    errors = {
        r.item_id: r for r in EvalResult.objects.filter(run=result, status=EvalResult.Status.ERROR)
    }
    assert set(errors) == MISSING
    for row in errors.values():
        assert row.error == (
            "variable order_id is not filled by this item; add it to the item's variables"
        )
        assert (row.output, row.passed, row.cost, row.prompt_tokens) == ("", None, 0.0, 0)
        assert row.attempts == 0  # no call was made
    # Only the seven filled items were sent, each with its own order id and no placeholder.
    assert faults.stats["requests"] == len(received) == 7
    sent = "\n".join(m["content"] for messages in received for m in messages)
    assert "{{" not in sent and "}}" not in sent
    assert "order is ." not in sent  # not silently filled with nothing either
    assert sent.count("The customer's order is A-10") == 7

    assert result.status == EvalRun.Status.COMPLETED
    assert result.error_items == result.metrics["errors"] == 3
    assert result.metrics["error_rate"] == 0.3
    assert result.verdict == EvalRun.Verdict.FAILED
    assert result.verdict_detail["failed"] == ["error_rate"]


def test_unfilled_items_count_against_the_runs_max_error_rate(setup):
    run, received, _ = setup
    result = run(rows(), gates=[])  # the default max error rate: 10%
    assert result.verdict == EvalRun.Verdict.ERRORED
    assert result.verdict_detail["reason"] == (
        "3 of 10 items errored (30% > 10%): too many to judge"
    )
    assert len(received) == 7


def test_a_set_that_fills_every_variable_passes_the_same_gates(setup):
    run, received, _ = setup
    result = run(rows(missing=set()), gates=ERROR_RATE_GATE, max_error_rate=0.5)
    assert result.error_items == 0
    assert result.verdict == EvalRun.Verdict.PASSED
    assert len(received) == 10


def test_every_missing_variable_is_named_and_the_run_page_shows_the_message(
    setup, application, engineer, client
):
    _, received, _ = setup
    head = PromptVersion.objects.get(head__key="order-help").head
    registry.save_head_version(
        actor=engineer,
        head=head,
        content={
            **ORDER_PROMPT,
            "user": "Account {{ account }}: {{ question }}",
            "variables": ["question", "order_id", "account"],
        },
        base_number=1,
    )
    # Launch the new version by hand (the fixture's runner uses v1).
    _, version = publish_items(application, engineer, "two-missing", rows()[:2])
    launched = services.launch_run(
        actor=engineer,
        application=application,
        dataset_version=version,
        prompt_version=head.versions.get(number=2),
        model_version=ModelConfigVersion.objects.get(head__key="gpt-main"),
        scorers=["contains_all"],
        gates=[],
    )
    services.execute_run(launched.pk)
    messages = dict(EvalResult.objects.filter(run=launched).values_list("item_id", "error"))
    assert messages == {
        "q-01": "variable account is not filled by this item; add it to the item's variables",
        "q-02": "variable account is not filled by this item; add it to the item's variables",
    }
    assert received == []

    _, version = publish_items(application, engineer, "none-filled", [rows()[2]])
    launched = services.launch_run(
        actor=engineer,
        application=application,
        dataset_version=version,
        prompt_version=head.versions.get(number=2),
        model_version=launched.model_version,
        scorers=["contains_all"],
        gates=[],
    )
    services.execute_run(launched.pk)
    row = EvalResult.objects.get(run=launched)
    assert row.error == (
        "variables order_id, account are not filled by this item; add them to the item's variables"
    )

    client.force_login(engineer)
    html = client.get(run_url(launched) + "?show=errors").content.decode()
    assert "variables order_id, account are not filled by this item" in html


def test_the_estimate_leaves_out_items_that_cannot_be_sent(setup, application, engineer):
    prompt = PromptVersion.objects.get(head__key="order-help")
    model_version = ModelConfigVersion.objects.get(head__key="gpt-main")
    _, some = publish_items(application, engineer, "est-some", rows())
    _, full = publish_items(application, engineer, "est-full", rows(missing=set()))
    kwargs = {"prompt_version": prompt, "model_version": model_version}
    partial = services.estimate(dataset_version=some, **kwargs)
    complete = services.estimate(dataset_version=full, **kwargs)
    assert partial["unfilled"] == 3 and complete["unfilled"] == 0
    max_tokens = model_version.content["max_tokens"]
    assert partial["output_tokens"] == 7 * max_tokens // 6
    assert complete["output_tokens"] == 10 * max_tokens // 6
    assert partial["input_tokens"] < complete["input_tokens"]


def test_the_launch_estimate_warns_about_unfilled_items(setup, application, engineer, client):
    _, version = publish_items(application, engineer, "est-view", rows())
    client.force_login(engineer)
    response = client.post(
        reverse("evals:estimate", kwargs={"app": application.key}),
        {
            "target_type": "prompt_model",
            "dataset_version": version.pk,
            "prompt_version": PromptVersion.objects.get(head__key="order-help").pk,
            "model_version": ModelConfigVersion.objects.get(head__key="gpt-main").pk,
            "scorers": ["contains_all"],
        },
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "3 of 10 items do not fill every variable of the prompt" in html


# The strict renderer the runner uses ----------------------------------------------------------


def test_render_strict_refuses_missing_names_and_names_them_all():
    with pytest.raises(MissingVariables) as caught:
        render_strict("{{ a }} {{b}} {{ a }} {{ c }}", {"b": "x"})
    assert caught.value.names == ["a", "c"]
    assert render_strict('{"json": {{ b }}}', {"b": "1"}) == '{"json": 1}'
    # The lenient renderer (the registry's preview) still shows what is unknown as written.
    assert render("{{ a }} {{ b }}", {"b": "x"}) == "{{ a }} x"


def test_prompt_messages_never_fills_a_declared_variable_with_nothing():
    with pytest.raises(MissingVariables) as caught:
        prompt_messages(ORDER_PROMPT, {"id": "x", "question": "Where?", "variables": {}})
    assert caught.value.names == ["order_id"]
    messages = prompt_messages(
        ORDER_PROMPT, {"id": "x", "question": "Where?", "variables": {"order_id": "A-1"}}
    )
    assert messages[0]["content"].endswith("order is A-1.")
    assert messages[1]["content"] == "Where?"


def test_a_judge_prompt_with_a_variable_the_judge_is_not_given_is_not_sent(start_simulator):
    _, base_url, faults = start_simulator()
    spec = RunSpec(
        target_type="prompt_model",
        judge_model=model_content(base_url),
        judge_prompts={
            "relevance": {
                "system": "Grade against {{ reference }}.",
                "user": "Q: {{ question }}\nA: {{ answer }}",
                "variables": ["reference", "question", "answer"],
            }
        },
    )
    score, reason, cost = judge(spec, "relevance", "Where?", "", "Here.")
    assert (score, cost) == (None, 0.0)
    assert reason == (
        "judge not asked: its prompt uses reference, but a judge is only given "
        "question, context, answer"
    )
    assert faults.stats["requests"] == 0
