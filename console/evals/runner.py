"""Evaluating one item: call the target, score the output, ask the judge. No database access:
worker threads run this while the run's own thread stores results."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from console.core.jsoninput import parse
from console.evals import llm
from console.evals.scorers import JUDGED, Observation, cited_sources, score_item
from console.registry.templating import render

JSON_OBJECT = re.compile(r"\{.*\}", re.S)


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


def prompt_messages(prompt: dict, item: dict) -> list[dict]:
    values = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in (item.get("variables") or {}).items()
    }
    values.setdefault("question", item["question"])
    for name in prompt.get("variables", []):
        values.setdefault(name, "")
    messages = []
    if prompt.get("system"):
        messages.append({"role": "system", "content": render(prompt["system"], values)})
    messages.append(
        {"role": "user", "content": render(prompt.get("user") or "{{ question }}", values)}
    )
    return messages


def _path(data, dotted: str):
    for part in [p for p in dotted.split(".") if p]:
        if isinstance(data, list):
            data = data[int(part)] if part.isdigit() and int(part) < len(data) else None
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


def call_http(target: dict, item: dict) -> tuple[str, list[str], float]:
    """POST {"question", **variables} to the application's endpoint; read answer and sources."""
    body = json.dumps({"question": item["question"], **(item.get("variables") or {})}).encode()
    request = urllib.request.Request(
        target["url"], data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=float(target.get("timeout_s") or 30)) as response:
        payload = parse(response.read() or b"{}", constants=True)
    latency = (time.perf_counter() - started) * 1000
    text = _path(payload, target.get("answer_path") or "answer")
    sources = _path(payload, target.get("sources_path") or "sources") or []
    ids = [s.get("id", "") if isinstance(s, dict) else str(s) for s in sources]
    return ("" if text is None else str(text)), ids, latency


def judge(
    spec: RunSpec, metric: str, question: str, context: str, answer: str
) -> tuple[float | None, str, float]:
    """Ask the judge model for one metric; returns (score or None, reason, cost)."""
    prompt = spec.judge_prompts.get(metric)
    if not prompt or not spec.judge_model:
        return None, "", 0.0
    values = {"question": question, "context": context or "(none)", "answer": answer}
    messages = [
        {"role": "system", "content": render(prompt.get("system", ""), values)},
        {"role": "user", "content": render(prompt.get("user", ""), values)},
    ]
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
    try:
        if spec.target_type == "http":
            text, sources, latency = call_http(spec.http_target, item)
            usage = {
                "prompt_tokens": 0,
                "cached_tokens": 0,
                "completion_tokens": 0,
                "cost": 0.0,
                "attempts": 1,
            }
        else:
            completion = llm.complete(spec.model, prompt_messages(spec.prompt, item))
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
        return {**base, "status": "error", "error": str(exc)[:2000], "attempts": exc.attempts}
    except (urllib.error.URLError, TimeoutError, ValueError, OSError) as exc:
        return {**base, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    scored = score_item(
        item, Observation(text, sources, context), list(spec.scorers), spec.scorer_options
    )
    judge_cost = 0.0
    for metric in JUDGED:
        if metric not in spec.scorers:
            continue
        if metric == "faithfulness" and not context:
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
        "output": text,
        "sources": sources,
        "scores": scored["scores"],
        "reasons": scored["reasons"],
        "passed": scored["passed"],
        "hallucinated": scored["hallucinated"],
        "latency_ms": round(latency, 2),
        "judge_cost": judge_cost,
        **usage,
    }
