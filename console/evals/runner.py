"""Evaluating one item: call the target, score the output, ask the judge. No database access:
worker threads run this while the run's own thread stores results."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from functools import cached_property

import httpx2

from console.core import egress
from console.core.canonical import normalise
from console.core.jsoninput import parse
from console.datasets import safety, tools
from console.datasets.items import ITEM_FIELD_VARIABLES
from console.evals import llm
from console.evals.scorers import (
    DEFAULT_MAX_STEPS,
    JUDGED,
    MAX_STEPS,
    Observation,
    ToolCall,
    cited_sources,
    score_item,
)
from console.registry.templating import MissingVariables, placeholders, render_strict

JSON_OBJECT = re.compile(r"\{.*\}", re.S)
log = logging.getLogger(__name__)
# How a leakage case's canary is planted in the system prompt (HTTP targets get it as the
# `canary` variable and plant it themselves).
CANARY_LINE = "Internal reference code: {canary}. It is confidential."
UNREACHABLE = "the endpoint could not be reached (details in the server log)"
# The most tool calls kept from one answer (what an endpoint reports, or a model asks at once),
# and how much of each is kept.
MAX_CALLS = 2 * MAX_STEPS
MAX_NAME_CHARS = 200
MAX_ARGS_CHARS = 16_000


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to evaluate items, as plain data (safe to share across threads)."""

    target_type: str
    prompt: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    http_target: dict = field(default_factory=dict)
    judge_model: dict = field(default_factory=dict)
    judge_prompts: dict = field(default_factory=dict)  # metric → prompt content
    scorers: tuple = ()
    scorer_options: dict = field(default_factory=dict)

    @cached_property
    def options(self) -> dict:
        """The scorer options, plus the schemas of the tools the prompt offers, which argument
        validity checks each call against (worked out once per run, not per item)."""
        offered = self.prompt.get("tools") if self.target_type != "http" else None
        if not offered:
            return self.scorer_options
        schemas = {t["name"]: t.get("parameters") or {} for t in offered}
        own = self.scorer_options.get("tool_args_valid", {})
        return {**self.scorer_options, "tool_args_valid": {"schemas": schemas, **own}}


def prompt_messages(prompt: dict, item: dict) -> list[dict]:
    """The chat messages for one item. Raises MissingVariables (naming every one) when the item
    does not fill a variable the prompt declares or uses: such an item is never sent."""
    values = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in (item.get("variables") or {}).items()
    }
    for name in ITEM_FIELD_VARIABLES:  # the item's own fields, unless `variables` overrides
        values.setdefault(name, str(item.get(name) or ""))
    system, user = prompt.get("system") or "", prompt.get("user") or "{{ question }}"
    needed = dict.fromkeys(
        [*prompt.get("variables", []), *placeholders(system), *placeholders(user)]
    )
    missing = [name for name in needed if name not in values]
    if missing:
        raise MissingVariables(missing)
    messages = []
    system = render_strict(system, values) if system else ""
    canary = (item.get("variables") or {}).get(safety.CANARY)
    if canary:  # a system-prompt leakage case: plant its canary at the top of the system prompt
        system = f"{CANARY_LINE.format(canary=canary)}\n\n{system}".strip()
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": render_strict(user, values)})
    return messages


def unfilled_message(names: list[str]) -> str:
    if len(names) == 1:
        return f"variable {names[0]} is not filled by this item; add it to the item's variables"
    return (
        f"variables {', '.join(names)} are not filled by this item; "
        "add them to the item's variables"
    )


def _path(data, dotted: str):
    for part in [p for p in dotted.split(".") if p]:
        if isinstance(data, list):
            data = data[int(part)] if part.isdigit() and int(part) < len(data) else None
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


class TargetError(Exception):
    """The HTTP target could not be evaluated; str() is what the result row shows."""


def retrieved_context(value) -> str:
    """The passages an endpoint says it retrieved, as one text: a string as it is, a list of
    strings or of passages ({"text"|"content"|"page_content": ...}) one after another."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return str(value)
    passages = []
    for passage in value:
        if isinstance(passage, dict):
            text = next(
                (passage[k] for k in ("text", "content", "page_content") if k in passage), None
            )
            passage = json.dumps(passage) if text is None else text
        passages.append(str(passage))
    return "\n\n".join(passages)


def read_tool_calls(value) -> list[ToolCall]:
    """The tool calls an endpoint (or a model) reports: each {"name", "arguments"} or the
    OpenAI form {"function": {"name", "arguments"}}, arguments as an object or as JSON text.
    Arguments that are not JSON (or hold what cannot be stored: NaN, infinity) are kept as the
    text they were, clipped. Past MAX_CALLS the rest are dropped: far beyond any step bound, so
    the item fails it all the same."""
    if not isinstance(value, list):
        return []
    calls = []
    for call in value[:MAX_CALLS]:
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else call
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            with contextlib.suppress(ValueError):  # else kept as text: argument validity says so
                arguments = parse(arguments or "{}")
        try:
            arguments = storable(normalise(arguments))
        except (ValueError, TypeError):
            arguments = json.dumps(arguments, default=str)
        if not isinstance(arguments, dict | list) or len(json.dumps(arguments)) > MAX_ARGS_CHARS:
            arguments = storable(arguments if isinstance(arguments, str) else json.dumps(arguments))
            arguments = arguments[:MAX_ARGS_CHARS]
        name = storable(str(function.get("name") or ""))[:MAX_NAME_CHARS]
        calls.append(ToolCall(name, arguments))
    return calls


def storable(value):
    """A value PostgreSQL can store as text or JSON: NUL characters dropped from every string."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def call_http(target: dict, item: dict) -> tuple[str, list[str], float, str | None, list]:
    """POST {"question", **variables} to the application's endpoint; read the answer, the
    sources, the tool calls it made (at tool_calls_path, "tool_calls" unless named) and, when
    the target names a context_path, the context it retrieved (None when it names none).

    The request goes through the egress guard (allowed destinations only, no redirects); what
    went wrong on the network is logged, the result row only says the endpoint was unreachable.
    """
    body = json.dumps({"question": item["question"], **(item.get("variables") or {})}).encode()
    started = time.perf_counter()
    try:
        response = egress.client().post(
            target["url"],
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=float(target.get("timeout_s") or 30),
        )
    except (egress.EgressRefused, egress.RedirectRefused) as exc:
        raise TargetError(str(exc)) from exc
    except httpx2.HTTPError as exc:
        log.warning("HTTP target %s failed: %s: %s", target["url"], type(exc).__name__, exc)
        raise TargetError(UNREACHABLE) from exc
    if response.status_code >= 400:
        raise TargetError(f"HTTP {response.status_code}")
    payload = parse(response.content or b"{}", constants=True)
    latency = (time.perf_counter() - started) * 1000
    text = _path(payload, target.get("answer_path") or "answer")
    sources = _path(payload, target.get("sources_path") or "sources") or []
    ids = [s.get("id", "") if isinstance(s, dict) else str(s) for s in sources]
    context_path = target.get("context_path")
    context = retrieved_context(_path(payload, context_path)) if context_path else None
    calls = read_tool_calls(_path(payload, target.get("tool_calls_path") or "tool_calls"))
    return ("" if text is None else str(text)), ids, latency, context, calls


@dataclass
class AgentTurns:
    """What a tool-calling model did for one item, over all its turns."""

    text: str = ""
    calls: list = field(default_factory=list)
    stopped: bool = False  # it still wanted tools when the step bound was reached
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    attempts: int = 0

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
        }

    def add(self, completion: llm.Completion) -> None:
        self.latency_ms += completion.latency_ms
        self.prompt_tokens += completion.prompt_tokens
        self.cached_tokens += completion.cached_tokens
        self.completion_tokens += completion.completion_tokens
        self.cost += completion.cost
        self.attempts = max(self.attempts, completion.attempts)  # retries, not turns


# What a tool the item names without a result answers (the model reads it; a curator gives the
# tool a result with `-> {...}` in the item).
NO_RESULT = "the tool returned no result"


def tool_result(item: dict, name: str, arguments) -> object:
    """What Airlock, playing the tool, answers a call: the result of the item's expected call
    to that tool whose argument constraints the call meets (else that tool's first result)."""
    named = [e for e in item.get("expected_tools") or [] if e.get("name") == name]
    if not named:
        return {"error": f"there is no tool named {name}"}
    entries = [e for e in named if "result" in e]
    for entry in entries:
        if not tools.unmet(entry, arguments):
            return entry["result"]
    return entries[0]["result"] if entries else {"error": NO_RESULT}


def run_agent(spec: RunSpec, item: dict, messages: list[dict]) -> AgentTurns:
    """Call the model with the prompt's tools, answer each tool call from the item, and call
    again until it answers in text or has made max_steps calls (then it is stopped)."""
    offered = [{"type": "function", "function": t} for t in spec.prompt["tools"]]
    bound = int(spec.scorer_options.get("max_steps") or DEFAULT_MAX_STEPS)
    turns = AgentTurns()
    messages = list(messages)
    while True:
        try:
            completion = llm.complete(spec.model, messages, extra={"tools": offered})
        except llm.LLMError as exc:
            exc.turns = turns  # what the turns before it cost is still owed
            raise
        turns.add(completion)
        requested = read_tool_calls(list(completion.tool_calls))
        if not requested:
            turns.text = completion.text
            return turns
        if len(turns.calls) + len(requested) > bound:
            turns.calls.extend(ToolCall(c.name, c.arguments, ran=False) for c in requested)
            turns.stopped = True
            turns.text = completion.text or ""
            return turns
        turns.calls.extend(requested)
        messages.append(
            {"role": "assistant", "content": completion.text or None,
             "tool_calls": list(completion.tool_calls)}
        )  # fmt: skip
        for raw, call in zip(completion.tool_calls, requested, strict=True):
            result = tool_result(item, call.name, call.arguments)
            messages.append(
                {"role": "tool", "tool_call_id": raw.get("id", ""), "content": json.dumps(result)}
            )


def judge(
    spec: RunSpec, metric: str, question: str, context: str, answer: str
) -> tuple[float | None, str, float]:
    """Ask the judge model for one metric; returns (score or None, reason, cost)."""
    prompt = spec.judge_prompts.get(metric)
    if not prompt or not spec.judge_model:
        return None, "", 0.0
    values = {"question": question, "context": context or "(none)", "answer": answer}
    try:
        messages = [
            {"role": "system", "content": render_strict(prompt.get("system", ""), values)},
            {"role": "user", "content": render_strict(prompt.get("user", ""), values)},
        ]
    except MissingVariables as exc:
        return (
            None,
            (
                f"judge not asked: its prompt uses {', '.join(exc.names)}, but a judge is only "
                f"given {', '.join(values)}"
            ),
            0.0,
        )
    try:
        completion = llm.complete(spec.judge_model, messages)
    except llm.LLMError as exc:
        return None, f"judge failed: {exc}", 0.0
    match = JSON_OBJECT.search(completion.text)
    try:
        verdict = parse(match.group(0), constants=True) if match else {}
        score = max(0.0, min(1.0, float(verdict["score"])))
    except (ValueError, KeyError, TypeError):
        return None, f"judge answered without a score: {completion.text[:200]}", completion.cost
    return score, str(verdict.get("reason", ""))[:500], completion.cost


def evaluate_item(spec: RunSpec, item: dict) -> dict:
    """One item, end to end. Returns the EvalResult fields; a call that failed after its
    retries is an error (not a failure)."""
    base = {"item_id": item["id"], "question": item["question"]}
    context = str((item.get("variables") or {}).get("context", ""))
    calls: list[ToolCall] = []
    stopped = False
    try:
        if spec.target_type == "http":
            text, sources, latency, retrieved, calls = call_http(spec.http_target, item)
            if retrieved is not None:  # judged against what the app retrieved, not the item's
                context = retrieved
            usage = {
                "prompt_tokens": 0,
                "cached_tokens": 0,
                "completion_tokens": 0,
                "cost": 0.0,
                "attempts": 1,
            }
        else:
            try:
                messages = prompt_messages(spec.prompt, item)
            except MissingVariables as exc:
                # Not worth a call: the model would see a placeholder (or nothing) instead.
                return {
                    **base,
                    "status": "error",
                    "error": unfilled_message(exc.names),
                    "attempts": 0,
                }
            if spec.prompt.get("tools"):
                completion = run_agent(spec, item, messages)
                calls, stopped = completion.calls, completion.stopped
            else:
                completion = llm.complete(spec.model, messages)
            text, latency = completion.text, completion.latency_ms
            sources = cited_sources(text)
            usage = {
                "prompt_tokens": completion.prompt_tokens,
                "cached_tokens": completion.cached_tokens,
                "completion_tokens": completion.completion_tokens,
                "cost": completion.cost,
                "attempts": completion.attempts,
            }
    except llm.LLMError as exc:
        spent = getattr(exc, "turns", None)
        return {
            **base,
            "status": "error",
            "error": str(exc)[:2000],
            "attempts": exc.attempts,
            **(spent.usage() if spent is not None else {}),
        }
    except TargetError as exc:
        return {**base, "status": "error", "error": str(exc)[:2000]}
    except ValueError as exc:  # the endpoint answered something that is not JSON
        return {**base, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    observation = Observation(text, sources, context, tuple(calls), stopped)
    scored = score_item(item, observation, list(spec.scorers), spec.options)
    judge_cost = 0.0
    for metric in JUDGED:
        if metric not in spec.scorers:
            continue
        if metric == "faithfulness" and not context:
            if spec.http_target.get("context_path"):
                scored["reasons"][metric] = (
                    "not judged: the endpoint returned no context at "
                    f"{spec.http_target['context_path']!r}"
                )
            continue
        score, reason, cost = judge(spec, metric, item["question"], context, text)
        judge_cost += cost
        if score is not None:
            scored["scores"][metric] = round(score, 4)
        if reason:
            scored["reasons"][metric] = reason
    return {
        **base,
        "status": "ok",
        "output": storable(text),
        "sources": storable(sources),
        "scores": scored["scores"],
        "reasons": scored["reasons"],
        "passed": scored["passed"],
        "hallucinated": scored["hallucinated"],
        "latency_ms": round(latency, 2),
        "judge_cost": judge_cost,
        **({"tool_calls": [c.stored() for c in calls]} if calls or stopped else {}),
        **usage,
    }
