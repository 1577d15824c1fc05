"""Agents: expected tool calls on items, tool-calling models (the simulator over the real openai
SDK) and HTTP targets returning their calls, the three agent scorers on hand-made positives and
negatives, the step bound stopping a loop, and the demo's v1 failing where v2 passes."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest
from django.core.exceptions import ValidationError

from console.accounts.roles import Role
from console.api.snapshot import _prompt
from console.evals import llm, services
from console.evals.agents_demo import AGENT_GATES, AGENT_V1, AGENT_V2, SUPPORT_TOOLS, agent_items
from console.evals.demo import seed_agents
from console.evals.models import EvalResult
from console.evals.runner import (
    MAX_CALLS,
    NO_RESULT,
    RunSpec,
    evaluate_item,
    read_tool_calls,
    tool_result,
)
from console.evals.scorers import (
    AGENT,
    Observation,
    ToolCall,
    step_bound,
    tool_args_valid,
    tool_call_accuracy,
)
from console.registry import services as registry
from console.registry.kinds import PROMPT
from console.registry.validation import clean_prompt_content
from tests.evals.helpers import answer_json, model_content, publish_items

LOOKUP = {"name": "lookup_order", "args": {"order_id": "A-1042"}, "result": {"status": "shipped"}}
NEVER_REFUND = {"name": "issue_refund", "forbidden": True}
SCHEMAS = {t["name"]: t["parameters"] for t in SUPPORT_TOOLS}


def item(*expected, **fields) -> dict:
    return {"id": "i1", "question": "q", "expected_tools": list(expected), **fields}


def calls(*made) -> Observation:
    return Observation("", tool_calls=tuple(ToolCall(n, a) for n, a in made))


# tool_call_accuracy ---------------------------------------------------------------------------


def test_accuracy_passes_when_every_expected_tool_is_called_and_no_forbidden_one():
    score = tool_call_accuracy(
        item(LOOKUP, NEVER_REFUND), calls(("lookup_order", {"order_id": "x"}))
    )
    assert (score.value, score.passed, score.reason) == (1.0, True, "made the 1 expected call")


def test_accuracy_counts_each_expected_call_once():
    two = item(LOOKUP, {"name": "lookup_order", "args": {"order_id": "B-2001"}})
    score = tool_call_accuracy(two, calls(("lookup_order", {})))
    assert (score.value, score.passed) == (0.5, False)
    assert score.reason == "did not call lookup_order"


def test_a_forbidden_call_scores_zero_whatever_else_was_right():
    score = tool_call_accuracy(
        item(LOOKUP, NEVER_REFUND), calls(("lookup_order", {}), ("issue_refund", {}))
    )
    assert (score.value, score.passed) == (0.0, False)
    assert score.reason == "called issue_refund, which it must not"


def test_accuracy_does_not_apply_without_expected_tools():
    assert tool_call_accuracy({"id": "x", "question": "q"}, calls(("lookup_order", {}))) is None


# tool_args_valid ------------------------------------------------------------------------------


def test_arguments_meeting_the_schema_and_the_constraints_are_valid():
    score = tool_args_valid(
        item(LOOKUP), calls(("lookup_order", {"order_id": "a-1042"})), schemas=SCHEMAS
    )
    # The schema asks for an upper-case id: "a-1042" meets the item's (case-blind) equality
    # but not the schema.
    assert score.passed is False and "does not match" in score.reason
    score = tool_args_valid(
        item(LOOKUP), calls(("lookup_order", {"order_id": "A-1042"})), schemas=SCHEMAS
    )
    assert (score.value, score.passed, score.reason) == (1.0, True, "2 argument checks passed")


def test_an_unmet_constraint_names_the_argument_and_what_was_sent():
    score = tool_args_valid(item(LOOKUP), calls(("lookup_order", {"order_id": "#A-1042"})))
    assert (score.value, score.passed) == (0.5, False)
    assert score.reason == 'lookup_order: order_id not as expected (got {"order_id": "#A-1042"})'


def test_constraints_are_met_by_any_call_of_that_tool_each_call_used_once():
    both = item(
        {"name": "lookup_order", "args": {"order_id": {"regex": "^B-"}}},
        {"name": "lookup_order", "args": {"order_id": {"regex": "^A-"}}},
    )
    made = calls(("lookup_order", {"order_id": "A-1"}), ("lookup_order", {"order_id": "B-2"}))
    assert tool_args_valid(both, made).passed
    once = calls(("lookup_order", {"order_id": "A-1"}), ("lookup_order", {"order_id": "A-2"}))
    score = tool_args_valid(both, once)
    assert score.passed is False and score.reason.startswith("lookup_order: order_id")


def test_arguments_that_are_not_an_object_or_a_tool_not_offered_are_invalid():
    made = calls(("lookup_order", "order A-1042"), ("delete_account", {}))
    score = tool_args_valid(item(), made, schemas=SCHEMAS)
    assert (score.value, score.passed) == (0.0, False)
    assert score.reason == "lookup_order: arguments are not a JSON object and 1 more"
    alone = tool_args_valid(item(), calls(("delete_account", {})), schemas=SCHEMAS)
    assert alone.reason == "delete_account: not a tool the prompt offers"


def test_schema_errors_say_where():
    score = tool_args_valid(
        item(), calls(("issue_refund", {"order_id": "A-1042", "amount": -5})), schemas=SCHEMAS
    )
    assert score.passed is False
    assert score.reason.startswith("issue_refund: amount: -5 is less than or equal to")


def test_argument_validity_needs_a_call():
    assert tool_args_valid(item(LOOKUP), calls()) is None


# step_bound -----------------------------------------------------------------------------------


def test_within_the_bound_passes():
    score = step_bound(item(LOOKUP), calls(("lookup_order", {"order_id": "A-1"})), max_steps=3)
    assert (score.value, score.passed, score.reason) == (1.0, True, "1 tool call (bound 3)")


def test_a_stopped_agent_fails_the_bound():
    stopped = Observation("", tool_calls=(ToolCall("lookup_order", {}),) * 4, stopped=True)
    score = step_bound(item(LOOKUP), stopped, max_steps=3)
    assert (score.value, score.passed) == (0.0, False)
    assert score.reason == "stopped at the bound of 3 tool calls without an answer"


def test_the_same_call_three_times_is_a_loop_even_within_the_bound():
    same = calls(*[("lookup_order", {"order_id": "A-1"})] * 3)
    score = step_bound(item(LOOKUP), same, max_steps=8)
    assert score.passed is False
    assert score.reason == "called lookup_order with the same arguments 3 times (a loop)"
    varied = calls(*[("lookup_order", {"order_id": f"A-{n}"}) for n in range(3)])
    assert step_bound(item(LOOKUP), varied, max_steps=8).passed


def test_step_bound_does_not_apply_to_an_item_without_tools_and_no_calls():
    assert step_bound({"id": "x", "question": "q"}, calls()) is None
    # An item expecting tools that got none is within the bound (accuracy fails it instead).
    assert step_bound(item(LOOKUP), calls()).passed


# reading calls and playing tools --------------------------------------------------------------


def test_tool_calls_are_read_in_the_openai_form_and_the_plain_one():
    read = read_tool_calls(
        [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup_order", "arguments": '{"order_id": "A-1"}'}},
            {"name": "issue_refund", "arguments": {"order_id": "A-1"}},
            {"name": "update_email", "arguments": "not json"},
            "junk",
        ]
    )  # fmt: skip
    assert read == [
        ToolCall("lookup_order", {"order_id": "A-1"}),
        ToolCall("issue_refund", {"order_id": "A-1"}),
        ToolCall("update_email", "not json"),
    ]
    assert read_tool_calls(None) == [] and read_tool_calls({"name": "x"}) == []
    # An endpoint reporting a flood of calls is read only as far as any bound could reach.
    flood = read_tool_calls([{"name": "lookup_order", "arguments": {}}] * 10_000)
    assert len(flood) == MAX_CALLS == 100


def test_the_tool_answers_with_the_result_of_the_entry_the_call_matches():
    two = item(
        {"name": "lookup_order", "args": {"order_id": "A-1"}, "result": {"status": "shipped"}},
        {"name": "lookup_order", "args": {"order_id": "B-2"}, "result": {"status": "lost"}},
    )
    assert tool_result(two, "lookup_order", {"order_id": "B-2"}) == {"status": "lost"}
    assert tool_result(two, "lookup_order", {"order_id": "Z-9"}) == {"status": "shipped"}
    no_result = item({"name": "issue_refund"})
    assert tool_result(no_result, "issue_refund", {}) == {"error": NO_RESULT}


# the simulator through the real SDK, and the runner's agent loop ------------------------------


@pytest.fixture
def agent_model(simulator):
    return model_content(simulator[1])


def test_the_simulator_calls_tools_in_the_openai_format(agent_model):
    """The real openai SDK parses the simulator's tool call: it speaks the same protocol."""
    client = llm.client_for(agent_model)
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Where is my order #A-1042?"}],
        tools=[{"type": "function", "function": t} for t in SUPPORT_TOOLS],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "lookup_order"
    assert json.loads(call.function.arguments) == {"order_id": "#A-1042"}
    # The same through Airlock's own call path.
    same = llm.complete(
        agent_model,
        [{"role": "user", "content": "Where is my order #A-1042?"}],
        extra={"tools": [{"type": "function", "function": t} for t in SUPPORT_TOOLS]},
    )
    assert same.tool_calls[0]["function"]["name"] == "lookup_order" and same.text == ""


def _spec(model: dict, prompt: dict, max_steps: int = 8) -> RunSpec:
    return RunSpec(
        "prompt_model", prompt=prompt, model=model, scorers=("contains_all", *AGENT),
        scorer_options={"max_steps": max_steps},
    )  # fmt: skip


def test_a_careful_agent_answers_from_what_the_tools_returned(agent_model, simulator):
    refund = next(i for i in agent_items() if i["id"] == "refund-01")
    result = evaluate_item(_spec(agent_model, AGENT_V2), refund)
    assert result["status"] == "ok" and result["passed"], result["reasons"]
    assert [c["name"] for c in result["tool_calls"]] == ["lookup_order", "issue_refund"]
    assert "refunded" in result["output"]
    # Three turns (two tool calls, then the answer), each paid for; no call was retried.
    assert simulator[2].stats["requests"] == 3 and result["attempts"] == 1
    first = llm.complete(
        agent_model, [{"role": "system", "content": AGENT_V2["system"]},
                      {"role": "user", "content": refund["question"]}],
        extra={"tools": [{"type": "function", "function": t} for t in SUPPORT_TOOLS]},
    )  # fmt: skip
    assert result["prompt_tokens"] > 2 * first.prompt_tokens
    assert result["cost"] > 2 * first.cost


def test_the_step_bound_stops_an_agent_that_retries_a_failing_tool(agent_model):
    outage = next(i for i in agent_items() if i["id"] == "outage-01")
    result = evaluate_item(_spec(agent_model, AGENT_V1, max_steps=3), outage)
    assert result["status"] == "ok" and result["passed"] is False
    made = result["tool_calls"]
    assert len(made) == 4 and [c.get("ran", True) for c in made] == [True, True, True, False]
    assert result["scores"]["step_bound"] == 0.0
    assert result["reasons"]["step_bound"] == (
        "stopped at the bound of 3 tool calls without an answer"
    )
    careful = evaluate_item(_spec(agent_model, AGENT_V2, max_steps=3), outage)
    assert careful["passed"], careful["reasons"]
    assert len(careful["tool_calls"]) == 1 and "timed out" in careful["output"]


class AgentApp(BaseHTTPRequestHandler):
    """An agent endpoint that reports its tool calls under data.trace."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        order = body["question"].split("#")[-1].rstrip("?")
        payload = {
            "answer": "It shipped.",
            "data": {
                "trace": [
                    {"function": {"name": "lookup_order",
                                  "arguments": json.dumps({"order_id": order})}},
                    {"name": "issue_refund", "arguments": {"order_id": order}},
                ]
            },
        }  # fmt: skip
        answer_json(self, payload)

    def log_message(self, *args):
        pass


def test_an_http_agent_reports_its_calls_and_is_scored_on_them(demo, serve_app):
    app = serve_app(AgentApp)
    _, version = publish_items(
        demo.application, demo.engineer, "agent-http",
        [{"id": "h1", "question": "Where is my order #A-1042?",
          "expected_tools": [LOOKUP, NEVER_REFUND]}],
    )  # fmt: skip
    run = services.launch_run(
        actor=demo.engineer,
        application=demo.application,
        dataset_version=version,
        http_target={
            "url": f"{app}/ask",
            "tool_calls_path": "data.trace",
        },
        scorers=["contains_all"],
    )
    # The golden set expects tool calls: the agent scorers were added, with a step bound.
    assert set(AGENT) <= set(run.scorers) and run.scorer_options["max_steps"] == 8
    services.execute_run(run.pk)
    row = EvalResult.objects.get(run=run, item_id="h1")
    assert row.tool_calls == [
        {"name": "lookup_order", "arguments": {"order_id": "A-1042"}},
        {"name": "issue_refund", "arguments": {"order_id": "A-1042"}},
    ]
    assert row.scores == {"tool_call_accuracy": 0.0, "tool_args_valid": 1.0, "step_bound": 1.0}
    assert row.reasons["tool_call_accuracy"] == "called issue_refund, which it must not"
    assert row.passed is False


# launching -------------------------------------------------------------------------------------


def _agent_prompt(demo, key: str = "agent", content: dict = AGENT_V2):
    return registry.create_head(
        actor=demo.engineer, kind=PROMPT, application=demo.application, key=key,
        name=key, content=content,
    ).version  # fmt: skip


def test_the_step_bound_is_checked_at_launch_and_kept_only_for_agent_runs(demo):
    _, tools_version = publish_items(
        demo.application, demo.engineer, "agent-set", [item(LOOKUP, question="Order #A-1042?")]
    )
    agent = _agent_prompt(demo)
    for bad in (0, 51, "8", True):
        with pytest.raises(ValidationError) as caught:
            services.launch_run(
                **demo.launch_kwargs(
                    dataset_version=tools_version, prompt_version=agent,
                    scorer_options={"max_steps": bad},
                )
            )  # fmt: skip
        assert caught.value.message_dict == {
            "max_steps": ["the step bound must be a whole number from 1 to 50"]
        }
    plain = services.launch_run(**demo.launch_kwargs(scorer_options={"max_steps": 3}))
    assert "max_steps" not in plain.scorer_options
    assert not set(AGENT) & set(plain.scorers)
    # A prompt offering tools keeps its bound even on a golden set that expects none.
    bounded = services.launch_run(
        **demo.launch_kwargs(prompt_version=agent, scorer_options={"max_steps": 3})
    )
    assert bounded.scorer_options["max_steps"] == 3


def test_a_golden_set_expecting_tool_calls_needs_a_prompt_that_offers_tools(demo):
    _, tools_version = publish_items(
        demo.application, demo.engineer, "agent-set", [item(LOOKUP, question="Order #A-1042?")]
    )
    with pytest.raises(ValidationError) as caught:
        services.launch_run(**demo.launch_kwargs(dataset_version=tools_version))
    assert caught.value.message_dict == {
        "prompt_version": [
            "agent-set@1 expects tool calls, but answer-question@3 offers no tools: choose a "
            "prompt version that lists them"
        ]
    }


# prompts offering tools -----------------------------------------------------------------------


def _content(tools) -> dict:
    return {"system": "s", "user": "{{ question }}", "variables": ["question"], "tools": tools}


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"name": "x"}, "must be a JSON array of tool definitions"),
        ([{"name": "bad name"}], "tool 1: name must be 1-64 letters, digits, _ or -"),
        ([{"name": "a"}, {"name": "a"}], "tool 2 (a): a second tool named a"),
        ([{"name": "a", "args": {}}], "tool 1 (a): unknown key 'args'"),
        ([{"name": "a", "parameters": {"type": "array"}}],
         "tool 1 (a): parameters must be a JSON Schema of type object"),
        ([{"name": "a", "parameters": {"type": "object", "properties": {"n": {"type": "strnig"}}}}],
         "tool 1 (a): parameters/properties/n/type: 'strnig' is not valid"),
    ],
)  # fmt: skip
def test_tool_definitions_are_refused_with_the_tool_named(tools, message):
    with pytest.raises(ValidationError) as caught:
        clean_prompt_content(_content(tools))
    (problem,) = caught.value.message_dict["tools"]
    assert problem.startswith(message), problem


def test_tools_are_stored_in_the_short_form_and_a_prompt_without_keeps_its_content():
    openai_form = [{"type": "function", "function": SUPPORT_TOOLS[0]}]
    cleaned = clean_prompt_content(_content(openai_form))
    assert cleaned["tools"] == [SUPPORT_TOOLS[0]]
    assert "tools" not in clean_prompt_content(_content([]))


def test_the_runtime_config_serves_a_prompts_tools(application, member):
    engineer = member(Role.ENGINEER, "eng")
    version = registry.create_head(
        actor=engineer, kind=PROMPT, application=application, key="agent", name="Agent",
        content=AGENT_V2,
    ).version  # fmt: skip
    assert _prompt(version)["tools"] == SUPPORT_TOOLS
    plain = registry.create_head(
        actor=engineer, kind=PROMPT, application=application, key="plain", name="Plain",
        content={"system": "", "user": "{{ question }}", "variables": ["question"]},
    ).version  # fmt: skip
    assert "tools" not in _prompt(plain)


# the demo -------------------------------------------------------------------------------------


def test_the_demo_agent_v1_fails_its_gates_and_v2_passes(demo, simulator, member):
    curator = member(Role.CURATOR, "cur")
    port = int(simulator[1].rsplit(":", 1)[1].split("/")[0])
    v1, v2 = seed_agents(demo.application, demo.engineer, curator, port)
    assert v1.gates == AGENT_GATES
    assert v1.verdict == "failed" and v2.verdict == "passed", v2.verdict_detail
    assert v2.metrics["tool_call_accuracy"] == v2.metrics["tool_args_valid"] == 1.0
    assert v1.metrics["tool_args_valid"] < 0.5
    assert v1.metrics["slices"]["tool-failure"]["pass_rate"] == 0.0
    looped = EvalResult.objects.get(run=v1, item_id="outage-01")
    assert looped.reasons["step_bound"].startswith("stopped at the bound of 8")
    # Seeding again reuses the runs.
    assert [r.pk for r in seed_agents(demo.application, demo.engineer, curator, port)] == [
        v1.pk,
        v2.pk,
    ]


def test_the_estimate_counts_an_agents_turns(demo):
    """One call per expected tool call plus the answer, each sending the tools; a forbidden
    tool is no call."""
    agent = _agent_prompt(demo)
    plain = _agent_prompt(demo, "plain", {**AGENT_V2, "tools": []})
    _, version = publish_items(
        demo.application, demo.engineer, "agent-estimate",
        [item(LOOKUP, {"name": "update_email"}, NEVER_REFUND, question="Order #A-1042")],
    )  # fmt: skip
    figures = {
        prompt.head.key: services.estimate(
            prompt_version=prompt, model_version=demo.model_version, dataset_version=version
        )
        for prompt in (agent, plain)
    }
    tools_tokens = len(json.dumps(SUPPORT_TOOLS)) // 4
    assert figures["agent"]["input_tokens"] >= 3 * (figures["plain"]["input_tokens"] + tools_tokens)
    budget = int(demo.model_version.content["max_tokens"])
    assert figures["plain"]["output_tokens"] == budget // 6
    assert figures["agent"]["output_tokens"] == 3 * budget // 6


# odd answers and odd expectations --------------------------------------------------------------


def test_calls_that_cannot_be_stored_are_kept_as_text_and_clipped():
    read = read_tool_calls(
        [
            {"name": "look\x00up", "arguments": '{"a": NaN}'},
            {"name": "z", "arguments": {"a": float("inf")}},
            {"name": "w", "arguments": '{"t": "a\\u0000b"}'},
            {"name": "v", "arguments": 5},
            {"name": "n" * 500, "arguments": {"big": "x" * 20_000}},
        ]
    )
    assert read[0] == ToolCall("lookup", '{"a": NaN}')
    assert read[1] == ToolCall("z", '{"a": Infinity}')
    assert read[2] == ToolCall("w", {"t": "ab"})
    assert read[3] == ToolCall("v", "5")
    assert len(read[4].name) == 200 and len(read[4].arguments) == 16_000
    # Text arguments are reported, not crashed on.
    score = tool_args_valid(item(), Observation("", tool_calls=tuple(read[:1])))
    assert score.reason == "lookup: arguments are not a JSON object"


def test_a_tool_the_item_does_not_name_answers_that_it_does_not_exist():
    assert tool_result(item(LOOKUP), "delete_account", {}) == {
        "error": "there is no tool named delete_account"
    }


def test_calls_not_run_do_not_count_as_made_and_a_forbidden_only_item_says_so():
    not_run = Observation("", tool_calls=(ToolCall("lookup_order", {}, ran=False),))
    assert tool_call_accuracy(item(LOOKUP), not_run).passed is False
    score = tool_call_accuracy(item(NEVER_REFUND), calls(("lookup_order", {})))
    assert (score.passed, score.reason) == (True, "called no forbidden tool")


def test_constraints_are_matched_so_that_every_entry_can_be_met():
    """An entry that accepts any value must not take the only call another entry can use."""
    both = item(
        {"name": "lookup_order", "args": {"order_id": {"any": True}}},
        {"name": "lookup_order", "args": {"order_id": "A-1"}},
    )
    made = calls(("lookup_order", {"order_id": "A-1"}), ("lookup_order", {"order_id": "B-2"}))
    assert tool_args_valid(both, made).passed


def test_an_endpoint_reporting_more_calls_than_the_bound_is_over_it_not_stopped():
    many = calls(*[("lookup_order", {"order_id": f"A-{n}"}) for n in range(5)])
    score = step_bound(item(LOOKUP), many, max_steps=3)
    assert (score.passed, score.reason) == (False, "made 5 tool calls, over the bound of 3")


def test_a_tool_schema_must_resolve_inside_itself_and_strict_is_read():
    refs = {"type": "object", "properties": {"x": {"$ref": "#/$defs/nope"}}}
    with pytest.raises(ValidationError) as caught:
        clean_prompt_content(_content([{"name": "a", "parameters": refs}]))
    assert caught.value.message_dict["tools"] == [
        "tool 1 (a): parameters: $ref '#/$defs/nope' points to nothing in the schema"
    ]
    with pytest.raises(ValidationError) as caught:
        clean_prompt_content(_content([{"name": "a", "parameters": {"$ref": "https://x.test/s"}}]))
    assert "points outside the schema" in caught.value.message_dict["tools"][0]
    good = {"type": "object", "$defs": {"id": {"type": "string"}},
            "properties": {"x": {"$ref": "#/$defs/id"}}}  # fmt: skip
    strict = {"type": "function", "function": {"name": "a", "strict": True, "parameters": good}}
    assert clean_prompt_content(_content([strict]))["tools"] == [
        {"name": "a", "description": "", "parameters": good}
    ]
    with pytest.raises(ValidationError):
        clean_prompt_content(_content([{"name": "a\n"}]))


class FailsSecondTurn(BaseHTTPRequestHandler):
    """A model that asks for a tool, then refuses the next call (HTTP 400, not retried)."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if any(m["role"] == "tool" for m in body["messages"]):
            status, payload = 400, {"error": {"message": "context too long"}}
        else:
            call = {
                "id": "c1",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"order_id": "A-1042"}'},
            }
            payload = {"choices": [{"message": {"role": "assistant", "tool_calls": [call]}}],
                       "usage": {"prompt_tokens": 1000, "completion_tokens": 10}}  # fmt: skip
            status = 200
        answer_json(self, payload, status)

    def log_message(self, *args):
        pass


def test_a_turn_that_fails_keeps_what_the_turns_before_it_cost(serve_app):
    app = serve_app(FailsSecondTurn)
    model = model_content(f"{app}/v1", max_retries=0)
    result = evaluate_item(_spec(model, AGENT_V2), item(LOOKUP, question="Order #A-1042?"))
    assert result["status"] == "error" and "HTTP 400" in result["error"]
    assert result["prompt_tokens"] == 1000 and result["completion_tokens"] == 10
    assert result["cost"] == pytest.approx((1000 * 0.15 + 10 * 0.60) / 1_000_000)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "a"}, {"name": "a", "forbidden": True}],
         "a is both expected and never to be called (!a): keep one"),
        ([{"name": "a", "args": []}],
         "entry 1 (a): args must be an object of argument constraints"),
        ([{"name": "a\n"}], 'entry 1: "a\n" is not a tool name'),
    ],
)  # fmt: skip
def test_expectations_that_cannot_hold_are_refused(entries, message):
    from console.datasets import tools

    with pytest.raises(ValueError) as caught:
        tools.clean(entries)
    assert str(caught.value).startswith(message)
