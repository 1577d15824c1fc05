"""The bundled OpenAI-compatible simulator, driven through the real openai SDK over HTTP."""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.error
import urllib.request

import httpx2
import openai
import pytest

from console.evals import simulator
from console.evals.demo import JUDGE_FAITHFULNESS, JUDGE_RELEVANCE
from console.evals.simulator import DONT_KNOW, Faults
from console.registry.templating import render
from console.samples.services import AGREEMENT_PROMPT

CONTEXT = (
    "[refund-policy] You have 30 days from delivery to return an item for a refund.\n"
    "[refund-policy] The original shipping cost is not refunded.\n"
    "[shipping-rates] Standard shipping costs $4.99 and is free over $50."
)
SYSTEM = f"Answer only from the context. Cite the source id of every fact.\n\nContext:\n{CONTEXT}"


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0, timeout=5)


def ask(base_url: str, question: str, system: str = SYSTEM, **extra):
    return client(base_url).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        **extra,
    )


def test_answers_from_the_context_with_citations(simulator):
    reply = ask(simulator[1], "How long do I have to return an item?")
    assert reply.choices[0].message.content == (
        "You have 30 days from delivery to return an item for a refund. [refund-policy]"
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion"


def test_without_a_citation_request_it_answers_without_ids(simulator):
    system = f"Answer only from the context.\nContext:\n{CONTEXT}"
    reply = ask(simulator[1], "How much is standard shipping?", system=system)
    assert reply.choices[0].message.content == "Standard shipping costs $4.99 and is free over $50."


def test_declines_when_the_context_has_nothing_relevant(simulator):
    reply = ask(simulator[1], "What is the CEO's personal phone number?")
    assert reply.choices[0].message.content == DONT_KNOW


def test_without_context_it_gives_a_generic_answer(simulator):
    reply = ask(simulator[1], "How long do I have to return an item?", system="Be helpful.")
    assert "help centre" in reply.choices[0].message.content


def test_deterministic_for_the_same_request(simulator):
    first = ask(simulator[1], "Is the original shipping cost refunded?")
    second = ask(simulator[1], "Is the original shipping cost refunded?")
    assert first.id == second.id
    assert first.id.startswith("chatcmpl-sim-")
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage.model_dump() == second.usage.model_dump()
    other = ask(simulator[1], "How much is standard shipping?")
    assert other.id != first.id


def test_usage_counts_tokens_realistically(simulator):
    question = "How much is standard shipping?"
    reply = ask(simulator[1], question)
    text = reply.choices[0].message.content
    assert reply.usage.prompt_tokens == math.ceil(len(SYSTEM + question) / 4) + 2 * 4
    assert reply.usage.completion_tokens == math.ceil(len(text) / 4)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.prompt_tokens_details.cached_tokens == 0


def test_json_mode_wraps_the_answer(simulator):
    reply = ask(
        simulator[1], "How much is standard shipping?", response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content) == {
        "answer": "Standard shipping costs $4.99 and is free over $50. [shipping-rates]"
    }


def test_streaming_through_the_sdk_yields_the_same_text_and_usage(simulator):
    plain = ask(simulator[1], "How long do I have to return an item?")
    stream = ask(
        simulator[1],
        "How long do I have to return an item?",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == plain.usage.model_dump()
    assert {c.id for c in chunks} == {plain.id}


def test_streaming_without_include_usage_sends_no_usage_chunk(simulator):
    chunks = list(ask(simulator[1], "How much is standard shipping?", stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_lists_models(simulator):
    models = client(simulator[1]).models.list()
    assert [m.id for m in models.data] == ["gpt-4o-mini", "gpt-4o", "sim-small", "sim-large"]
    assert {m.owned_by for m in models.data} == {"airlock-simulator"}


def judge(base_url: str, prompt: dict, question: str, context: str, answer: str) -> dict:
    values = {"question": question, "context": context, "answer": answer}
    reply = client(base_url).chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": render(prompt["system"], values)},
            {"role": "user", "content": render(prompt["user"], values)},
        ],
    )
    return json.loads(reply.choices[0].message.content)


def test_judges_faithfulness_by_support_in_the_context(simulator):
    question = "How long do I have to return an item?"
    supported = judge(
        simulator[1],
        JUDGE_FAITHFULNESS,
        question,
        CONTEXT,
        "You have 30 days from delivery to return an item for a refund.",
    )
    assert supported == {"score": 1.0, "reason": "1 of 1 statements are supported by the context."}
    half = judge(
        simulator[1],
        JUDGE_FAITHFULNESS,
        question,
        CONTEXT,
        "You have 30 days to return an item. Refunds arrive instantly by carrier pigeon.",
    )
    assert half == {"score": 0.5, "reason": "1 of 2 statements are supported by the context."}
    live = "You have 30 days from delivery to return an item for a refund."
    agreeing = judge(simulator[1], AGREEMENT_PROMPT, question, live, live + " Thanks!")
    assert agreeing["reason"].endswith("statements are supported by the live answer.")
    declined = judge(simulator[1], JUDGE_FAITHFULNESS, question, CONTEXT, DONT_KNOW)
    assert declined["score"] == 1.0


def test_judges_relevance_by_the_question_terms_answered(simulator):
    question = "How much is standard shipping?"
    on_topic = judge(
        simulator[1],
        JUDGE_RELEVANCE,
        question,
        CONTEXT,
        "Standard shipping costs this much: $4.99.",
    )
    assert on_topic["score"] == 1.0
    off_topic = judge(simulator[1], JUDGE_RELEVANCE, question, CONTEXT, "Our stores open at nine.")
    assert off_topic == {
        "score": 0.0,
        "reason": "The answer addresses 0% of the question's key terms.",
    }
    declined = judge(simulator[1], JUDGE_RELEVANCE, question, CONTEXT, DONT_KNOW)
    assert declined["score"] == 0.5


def post(base_url: str, body: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


BODY = {"model": "sim-small", "messages": [{"role": "user", "content": "hello"}]}


def test_rate_limit_answers_429_with_retry_after(start_simulator):
    _, base_url, faults = start_simulator(Faults(rate_limit_rps=0.001))
    status, headers, body = post(base_url, BODY)
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert body["error"]["type"] == "rate_limit_error"
    assert faults.stats["429"] == 1


def test_rate_limit_admits_requests_at_the_configured_rate():
    faults = Faults(rate_limit_rps=2)
    faults._last -= 1.0  # one second of refill: a full bucket of 2
    assert [faults.admit() for _ in range(3)] == [True, True, False]
    assert Faults().admit() is True  # no limit configured


def test_injected_faults_are_429_or_500(start_simulator, monkeypatch):
    _, base_url, faults = start_simulator(Faults(error_rate=1.0))
    seen = {post(base_url, BODY)[0] for _ in range(30)}
    assert seen == {429, 500}
    assert faults.stats["429"] + faults.stats["500"] == 30


def test_bad_requests_and_unknown_paths(simulator):
    _, base_url, _ = simulator
    status, _, body = post(base_url, {"model": "x"})
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(base_url.removesuffix("/v1") + "/v2/anything", timeout=5)
    assert caught.value.code == 404
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=5) as response:
        assert json.loads(response.read())["status"] == "ok"


def test_the_listen_backlog_takes_a_burst_of_connections():
    server = simulator.make_server("127.0.0.1", 0)  # listening, not accepting yet
    port = server.server_address[1]
    sockets, connected = [], 0
    try:
        for _ in range(16):
            sock = socket.socket()
            sock.settimeout(0.2)
            sockets.append(sock)
            try:
                sock.connect(("127.0.0.1", port))
                connected += 1
            except OSError:
                pass
    finally:
        for sock in sockets:
            sock.close()
        server.server_close()
    assert connected == 16


def test_keep_alive_calls_are_not_held_back_by_nagle(simulator):
    with httpx2.Client(base_url=simulator[1]) as http:
        http.post("/chat/completions", json=BODY)  # connect
        started = time.perf_counter()
        for _ in range(10):
            assert http.post("/chat/completions", json=BODY).status_code == 200
        per_call_ms = (time.perf_counter() - started) * 100
    assert per_call_ms < 20, f"{per_call_ms:.1f} ms per call with no latency injected"
