"""The LLM client against the simulator over real HTTP: accounting, retries, errors, timeouts."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from console.evals import llm, simulator
from console.evals.llm import LLMError, Prices, RetryPolicy
from console.evals.simulator import Faults


def config(base_url: str, **extra) -> dict:
    return {
        "base_url": base_url,
        "model": "gpt-4o-mini",
        "api_key_env": "",
        "temperature": 0,
        "max_tokens": 64,
        "timeout_s": 5,
        "max_retries": 3,
        "price_input_per_1m": 0.15,
        "price_cached_input_per_1m": 0.075,
        "price_output_per_1m": 0.60,
        **extra,
    }


class Recorder:
    """A RetryPolicy sleep that records delays (and optionally runs a hook) without sleeping."""

    def __init__(self, hook=None):
        self.delays: list[float] = []
        self.hook = hook

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.hook:
            self.hook(len(self.delays))


SYSTEM = (
    "You answer for Acme.\nContext:\n"
    "[refund-policy] You have 30 days from delivery to return an item.\n"
    "[shipping-rates] Standard shipping costs $4.99."
)
QUESTION = "How long do I have to return an item?"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


def test_prices_cost_charges_cached_tokens_at_the_cached_rate():
    prices = Prices.of(
        {"price_input_per_1m": 2, "price_cached_input_per_1m": 1, "price_output_per_1m": 8}
    )
    assert prices.cost(1_000_000, 0, 0) == 2.0
    assert prices.cost(1_000_000, 400_000, 500_000) == pytest.approx(1.2 + 0.4 + 4.0)
    assert Prices.of({}).cost(1000, 0, 1000) == 0.0


def test_complete_reports_text_tokens_latency_and_cost(simulator):
    _, base_url, faults = simulator
    done = llm.complete(config(base_url), MESSAGES)
    assert done.text == "You have 30 days from delivery to return an item."
    # The simulator's tokenizer: ceil(chars / 4) plus 4 per message.
    assert done.prompt_tokens == math.ceil(len(SYSTEM + QUESTION) / 4) + 8
    assert done.completion_tokens == math.ceil(len(done.text) / 4)
    assert done.cached_tokens == 0
    assert done.cost == pytest.approx(
        (done.prompt_tokens * 0.15 + done.completion_tokens * 0.60) / 1_000_000
    )
    assert done.attempts == 1
    assert done.model == "gpt-4o-mini"
    assert 0 < done.latency_ms < 5000
    assert faults.stats["requests"] == 1


def test_cached_prompt_tokens_are_reported_and_priced_at_the_cached_rate(simulator):
    _, base_url, _ = simulator
    long_system = SYSTEM + "\n" + "Policy detail that repeats. " * 200  # > 1024 tokens
    messages = [{"role": "system", "content": long_system}, {"role": "user", "content": QUESTION}]
    first = llm.complete(config(base_url), messages)
    second = llm.complete(config(base_url), messages)
    assert first.cached_tokens == 0
    assert second.cached_tokens == (math.ceil(len(long_system) / 4) // 128) * 128
    assert second.cached_tokens > 1000
    assert second.prompt_tokens == first.prompt_tokens
    uncached = second.prompt_tokens - second.cached_tokens
    assert second.cost == pytest.approx(
        (uncached * 0.15 + second.cached_tokens * 0.075 + second.completion_tokens * 0.60) / 1e6
    )
    assert second.cost < first.cost


def test_retries_on_rate_limit_honour_retry_after_then_succeed(start_simulator):
    # A rate limit the first requests cannot get through (the bucket starts empty).
    _, base_url, faults = start_simulator(Faults(rate_limit_rps=0.001))

    def lift(n):  # the limit lifts after the second back-off
        if n == 2:
            faults.rate_limit_rps = 0

    sleep = Recorder(lift)
    done = llm.complete(config(base_url), MESSAGES, policy=RetryPolicy(max_retries=3, sleep=sleep))
    assert done.attempts == 3
    assert sleep.delays == [1.0, 1.0]  # Retry-After: 1, not the exponential back-off
    assert faults.stats["429"] == 2
    assert faults.stats["requests"] == 3


def test_server_errors_back_off_exponentially_with_jitter(start_simulator, monkeypatch):
    # Every request fails; the simulator's coin always lands on 500.
    monkeypatch.setattr(simulator, "random", SimpleNamespace(random=lambda: 0.9))
    _, base_url, faults = start_simulator(Faults(error_rate=1.0))
    sleep = Recorder()
    policy = RetryPolicy(max_retries=4, base_delay_s=0.1, max_delay_s=0.5, sleep=sleep)
    with pytest.raises(LLMError) as caught:
        llm.complete(config(base_url), MESSAGES, policy=policy)
    assert caught.value.attempts == 5
    assert caught.value.kind == "server"
    assert "after 5 attempts" in str(caught.value)
    assert faults.stats == {"requests": 5, "429": 0, "500": 5, "hang": 0}
    assert len(sleep.delays) == 4
    # Full jitter within min(max_delay, base * 2**attempt).
    for attempt, delay in enumerate(sleep.delays):
        assert 0 <= delay <= min(0.5, 0.1 * 2**attempt)


def test_injected_429_uses_its_short_retry_after(start_simulator, monkeypatch):
    monkeypatch.setattr(simulator, "random", SimpleNamespace(random=lambda: 0.1))
    _, base_url, faults = start_simulator(Faults(error_rate=1.0))
    sleep = Recorder()
    with pytest.raises(LLMError) as caught:
        llm.complete(config(base_url), MESSAGES, policy=RetryPolicy(max_retries=2, sleep=sleep))
    assert (caught.value.attempts, caught.value.kind) == (3, "rate_limit")
    assert sleep.delays == [0.05, 0.05]
    assert faults.stats["429"] == 3


def test_max_retries_comes_from_the_model_config(start_simulator, monkeypatch):
    monkeypatch.setattr(simulator, "random", SimpleNamespace(random=lambda: 0.9))
    _, base_url, faults = start_simulator(Faults(error_rate=1.0))
    monkeypatch.setattr(llm.RetryPolicy, "delay", lambda self, attempt, retry_after: 0.0)
    with pytest.raises(LLMError) as caught:
        llm.complete(config(base_url, max_retries=1), MESSAGES)
    assert caught.value.attempts == 2
    assert faults.stats["requests"] == 2


def test_client_errors_are_not_retried(simulator):
    _, base_url, _ = simulator
    sleep = Recorder()
    bad = config(base_url.removesuffix("/v1") + "/nope")  # → 404
    with pytest.raises(LLMError) as caught:
        llm.complete(bad, MESSAGES, policy=RetryPolicy(max_retries=3, sleep=sleep))
    assert (caught.value.attempts, caught.value.kind) == (1, "client")
    host = base_url.removeprefix("http://").removesuffix("/v1")
    assert str(caught.value).startswith(f"HTTP 404 from {host}: ")
    assert sleep.delays == []


def test_a_hanging_server_times_out_and_becomes_an_error(start_simulator):
    _, base_url, faults = start_simulator(Faults(hang_rate=1.0, hang_s=3))
    sleep = Recorder()
    started = time.monotonic()
    with pytest.raises(LLMError) as caught:
        llm.complete(
            config(base_url, timeout_s=0.3),
            MESSAGES,
            policy=RetryPolicy(max_retries=1, sleep=sleep),
        )
    elapsed = time.monotonic() - started
    assert (caught.value.attempts, caught.value.kind) == (2, "timeout")
    assert f"after 2 attempts to {base_url.removeprefix('http://').removesuffix('/v1')}:" in str(
        caught.value
    )
    assert faults.stats["hang"] == 2
    assert 0.5 <= elapsed < 2.5  # two 0.3 s timeouts, not the 3 s hang
    assert len(sleep.delays) == 1


def test_connection_refused_is_a_connection_error(start_simulator):
    server, base_url, _ = start_simulator()
    server.shutdown()
    server.server_close()
    with pytest.raises(LLMError) as caught:
        llm.complete(
            config(base_url), MESSAGES, policy=RetryPolicy(max_retries=2, sleep=Recorder())
        )
    assert (caught.value.attempts, caught.value.kind) == (3, "connection")
    # The message names where it tried: a config pointing at the wrong port is found at once.
    host = base_url.removeprefix("http://").removesuffix("/v1")
    assert str(caught.value) == f"connection after 3 attempts to {host}: Connection error."


def test_the_api_key_comes_from_the_named_environment_variable(simulator, monkeypatch, settings):
    server, base_url, _ = simulator
    settings.AIRLOCK_PROVIDER_KEYS = {"EVAL_TEST_KEY": (f"127.0.0.1:{server.server_address[1]}",)}
    monkeypatch.setenv("EVAL_TEST_KEY", "sk-test-123")
    client = llm.client_for(config(base_url, api_key_env="EVAL_TEST_KEY"))
    assert client.api_key == "sk-test-123"
    assert client.max_retries == 0  # ours, not the SDK's
    assert llm.client_for(config(base_url, api_key_env="EVAL_TEST_KEY")) is client
    assert llm.client_for(config(base_url, api_key_env="")).api_key == "not-set"


class CountingOpenAI:
    """The SDK class, counting constructions; each takes a moment so racing threads overlap."""

    def __init__(self, real):
        self.real = real
        self.built: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, **kwargs):
        time.sleep(0.02)
        with self.lock:
            self.built.append(kwargs)
        return self.real(**kwargs)


@pytest.fixture
def built(monkeypatch):
    counter = CountingOpenAI(llm.openai.OpenAI)
    monkeypatch.setattr(llm.openai, "OpenAI", counter)
    monkeypatch.setattr(llm, "_clients", {})
    return counter


def test_many_threads_asking_at_once_share_one_client(built):
    conf = config("http://127.0.0.1:9/v1")
    start = threading.Barrier(50)

    def ask(_):
        start.wait()
        return llm.client_for(conf)

    with ThreadPoolExecutor(max_workers=50) as pool:
        clients = list(pool.map(ask, range(50)))
    assert len(built.built) == 1
    assert all(c is clients[0] for c in clients)


def test_each_configuration_gets_its_own_client(built, monkeypatch, settings):
    base = "http://127.0.0.1:9/v1"
    settings.AIRLOCK_PROVIDER_KEYS = {"EVAL_TEST_KEY": ("127.0.0.1:9",)}
    first = llm.client_for(config(base))
    assert llm.client_for(config(base, model="other", temperature=1)) is first  # not the client
    others = [
        llm.client_for(config("http://127.0.0.1:10/v1")),
        llm.client_for(config(base, timeout_s=7)),
    ]
    monkeypatch.setenv("EVAL_TEST_KEY", "sk-old")
    with_key = llm.client_for(config(base, api_key_env="EVAL_TEST_KEY"))
    monkeypatch.setenv("EVAL_TEST_KEY", "sk-rotated")  # the same config, a new key behind it
    rotated = llm.client_for(config(base, api_key_env="EVAL_TEST_KEY"))
    assert llm.client_for(config(base, api_key_env="EVAL_TEST_KEY")) is rotated
    settings.AIRLOCK_EGRESS_ALLOW = ["127.0.0.1:9"]  # pooled connections were checked before
    narrowed = llm.client_for(config(base))
    clients = [first, *others, with_key, rotated, narrowed]
    assert len({id(c) for c in clients}) == len(clients) == len(built.built) == 6
    assert (with_key.api_key, rotated.api_key) == ("sk-old", "sk-rotated")
    assert others[1].timeout == 7.0


def test_the_cache_keeps_at_most_max_clients(built, monkeypatch):
    monkeypatch.setattr(llm, "MAX_CLIENTS", 3)
    oldest = llm.client_for(config("http://127.0.0.1:9/v1", timeout_s=1))
    for timeout in (2, 3, 4):
        llm.client_for(config("http://127.0.0.1:9/v1", timeout_s=timeout))
    assert len(llm._clients) == 3
    assert llm.client_for(config("http://127.0.0.1:9/v1", timeout_s=1)) is not oldest
    assert len(built.built) == 5


@pytest.mark.parametrize(
    "body", [b'["not", "a", "completion"]', b'{"choices": "none", "usage": 7}', b"not json"]
)
def test_a_body_that_is_not_a_chat_completion_is_a_client_error(allow_loopback, body):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Odd(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    allow_loopback(port)
    try:
        if body.startswith(b"{"):  # JSON of the wrong shape: read as no text and no tokens
            done = llm.complete(config(f"http://127.0.0.1:{port}/v1"), MESSAGES)
            assert (done.text, done.prompt_tokens, done.completion_tokens) == ("", 0, 0)
            assert done.model == "gpt-4o-mini"
            return
        with pytest.raises(LLMError) as caught:
            llm.complete(config(f"http://127.0.0.1:{port}/v1"), MESSAGES)
    finally:
        server.shutdown()
        server.server_close()
    assert (caught.value.attempts, caught.value.kind) == (1, "client")
    assert str(caught.value).startswith(f"127.0.0.1:{port} did not answer with a chat completion: ")


def test_a_model_client_keeps_a_connection_for_every_call_a_run_may_have_in_flight(settings):
    from console.evals import services

    settings.AIRLOCK_EGRESS_ALLOW = ["127.0.0.1:9"]
    connection = llm.connection_for(config("http://127.0.0.1:9/v1", timeout_s=3))
    pools = [http._transport._pool for http in connection.pools]
    assert len(pools) == llm.POOL_STRIPES
    assert sum(pool._max_keepalive_connections for pool in pools) >= services.MAX_CONCURRENCY
    assert all(pool._max_connections >= services.MAX_CONCURRENCY for pool in pools)
    # The SDK client is built on the first pool, and each thread keeps to one pool.
    assert connection.client._client is connection.pools[0]
    assert connection.http is connection.http


def test_threads_are_dealt_out_over_the_pools(settings):
    settings.AIRLOCK_EGRESS_ALLOW = ["127.0.0.1:9"]
    connection = llm.connection_for(config("http://127.0.0.1:9/v1", timeout_s=4))
    with ThreadPoolExecutor(max_workers=2 * llm.POOL_STRIPES) as pool:
        barrier = threading.Barrier(2 * llm.POOL_STRIPES)

        def which(_):
            barrier.wait()  # every thread is a different one
            return id(connection.http)

        used = list(pool.map(which, range(2 * llm.POOL_STRIPES)))
    assert len(set(used)) == llm.POOL_STRIPES
    assert all(used.count(pool) == 2 for pool in set(used))
