"""The one place Airlock calls a model: chat completions through an `openai` SDK client.

The SDK client is built once per configuration (base URL, key, timeout, headers); each call posts
plain JSON through that client's own guarded connection pool and reads the JSON answer, raising
the SDK's error types. The SDK's per-call machinery (typed request walk, option models, pydantic
answer) cost an eval item two thirds of its CPU and changed nothing on the wire.

Works with OpenAI, Azure OpenAI and any OpenAI-compatible server through `base_url`. The key
comes from the environment variable the model config names (never from the database), and only
when AIRLOCK_PROVIDER_KEYS binds that variable to the base_url's host. Every connection passes
the egress guard (console.core.egress): allowed destinations only, no redirects.
Retries are ours (the SDK's own are off) so they are visible and testable: exponential backoff
with full jitter on 429, 5xx, timeouts and connection errors, honouring `Retry-After`.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx2
import openai

from console.core import egress, provider_keys

log = logging.getLogger(__name__)
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0


class LLMError(Exception):
    """The call failed after every retry; `attempts` says how many were made."""

    def __init__(self, message: str, attempts: int, kind: str):
        self.attempts = attempts
        self.kind = kind  # rate_limit | server | timeout | connection | client | refused
        super().__init__(message)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    latency_ms: float
    cost: float
    attempts: int
    model: str = ""
    # The tools the model asked to call, as the API sent them: [{"id", "type": "function",
    # "function": {"name", "arguments": "<JSON text>"}}]; empty for a plain answer.
    tool_calls: tuple = ()


@dataclass(frozen=True)
class Prices:
    input_per_1m: float = 0.0
    cached_input_per_1m: float = 0.0
    output_per_1m: float = 0.0

    @classmethod
    def of(cls, config: dict) -> Prices:
        return cls(
            float(config.get("price_input_per_1m") or 0),
            float(config.get("price_cached_input_per_1m") or 0),
            float(config.get("price_output_per_1m") or 0),
        )

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        uncached = max(prompt_tokens - cached_tokens, 0)
        return (
            uncached * self.input_per_1m
            + cached_tokens * self.cached_input_per_1m
            + completion_tokens * self.output_per_1m
        ) / 1_000_000


@dataclass
class RetryPolicy:
    max_retries: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    sleep: object = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))


def _retry_after(response) -> float | None:
    if response is None:
        return None
    raw = response.headers.get("retry-after-ms")
    if raw:
        try:
            return float(raw) / 1000
        except ValueError:
            pass
    raw = response.headers.get("retry-after")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


MAX_CLIENTS = 32
# Connections a configuration keeps open: one per call in flight, for as many calls as a run may
# have in flight (evals.services.MAX_CONCURRENCY). Fewer, and every call past them would close
# its connection afterwards and open (and check) a new one next time.
KEEP_ALIVE = 256
# The connections are split over this many pools, each thread always using the same one. One
# pool takes a lock and walks all its connections for every request, so with a hundred calls in
# flight, threads mostly queued on that lock (a tenth of a run's CPU at concurrency 100).
POOL_STRIPES = 8

_next_stripe = itertools.count()
_stripe = threading.local()


@dataclass(frozen=True)
class Connection:
    """One configuration's SDK client and what its chat completions go out with: the guarded
    httpx clients (pools) it was built on, the URL, and the SDK client's headers with its key as
    a bearer token (worked out once, not per call)."""

    client: openai.OpenAI
    pools: tuple[httpx2.Client, ...]
    url: str
    headers: dict

    @property
    def http(self) -> httpx2.Client:
        """This thread's pool: threads are dealt out over the pools in turn."""
        index = getattr(_stripe, "index", None)
        if index is None:
            index = _stripe.index = next(_next_stripe)
        return self.pools[index % len(self.pools)]


# Built connections by _client_key, oldest first. Reads take no lock (a dict lookup is atomic);
# every write happens under _clients_lock, so one key is built once however many threads ask.
_clients: dict[tuple, Connection] = {}
_clients_lock = threading.Lock()


def _client_key(config: dict, api_key: str) -> tuple:
    """Everything that makes one SDK client differ from another: where it connects, the key it
    sends, its timeout, and the egress allowlist its pooled connections were checked against.
    A model config saved with a new base_url or timeout, a rotated key, or a changed allowlist
    gives a new key, so the next call builds a fresh client."""
    timeout = float(config.get("timeout_s") or 30)
    return (config["base_url"], api_key, timeout, egress.allowlist())


def connection_for(config: dict) -> Connection:
    """The one connection (SDK client and pool) for this configuration, reused across calls.

    Raises provider_keys.KeyRefused before anything is sent when the config's api_key_env may
    not go to its base_url. Threads asking at once share a single client (lock + second look);
    at most MAX_CLIENTS are kept, the oldest dropped first. A dropped client is not closed, since
    a call in another thread may still be using it; its pool is released when it is collected."""
    api_key = provider_keys.key_for(config)
    key = _client_key(config, api_key)
    connection = _clients.get(key)
    if connection is not None:
        return connection
    with _clients_lock:
        connection = _clients.get(key)
        if connection is None:
            base_url, _api_key, timeout, _allowlist = key
            pools = tuple(
                egress.http_client(timeout, keep_alive=KEEP_ALIVE // POOL_STRIPES)
                for _ in range(POOL_STRIPES)
            )
            client = openai.OpenAI(
                base_url=base_url,
                api_key=api_key or "not-set",
                timeout=timeout,
                max_retries=0,
                http_client=pools[0],
            )
            headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
            headers["Authorization"] = f"Bearer {client.api_key}"
            connection = Connection(client, pools, f"{client.base_url}chat/completions", headers)
            while len(_clients) >= MAX_CLIENTS:
                del _clients[next(iter(_clients))]
            _clients[key] = connection
    return connection


def client_for(config: dict) -> openai.OpenAI:
    """The one SDK client for this configuration (see connection_for)."""
    return connection_for(config).client


def destination(config: dict) -> str:
    """host:port a config's calls go to, for error messages (no path, no credentials)."""
    parts = urlsplit(config.get("base_url") or "")
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    return f"{host}:{port}" if port else host


def _refusal(error: BaseException) -> BaseException | None:
    """The guard's refusal (or a refused redirect) behind an SDK connection error, if any."""
    for _ in range(10):  # a short chain: the SDK wraps the transport's exception once or twice
        if error is None or isinstance(error, egress.EgressRefused | egress.RedirectRefused):
            return error
        error = error.__cause__ or error.__context__
    return None


def _post(connection: Connection, body: bytes) -> httpx2.Response:
    """POST a chat completion through the client's own guarded connection pool.

    What chat.completions.create() would send, without what made it cost two thirds of an eval
    item's CPU: walking the request against the SDK's typed schema, its per-request option
    models and header merging, and a pydantic model of the answer. Failures are raised as the
    SDK's own errors (status, timeout, connection), with the SDK's messages."""
    try:
        response = connection.http.post(connection.url, content=body, headers=connection.headers)
    except httpx2.TimeoutException as exc:
        raise openai.APITimeoutError(request=exc.request) from exc
    except (httpx2.TransportError, egress.EgressRefused, egress.RedirectRefused) as exc:
        request = getattr(exc, "_request", None) or httpx2.Request("POST", connection.url)
        raise openai.APIConnectionError(request=request) from exc
    if response.status_code >= 400:
        try:
            detail = response.json()
        except ValueError:
            detail = response.text.strip()
        raise openai.APIStatusError(
            f"Error code: {response.status_code} - {detail}", response=response, body=detail
        )
    return response


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _read_completion(response: httpx2.Response) -> tuple[str, int, int, int, str, tuple]:
    """(text, prompt tokens, cached tokens, completion tokens, model, tool calls) of a chat
    completion body; ValueError when the body is not one. Missing usage counts as zero tokens;
    tool calls that are not objects are dropped."""
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices") or []
    message = (choices[0] or {}).get("message") if isinstance(choices, list) and choices else {}
    text = (message or {}).get("content") if isinstance(message, dict) else None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    model = data.get("model")
    calls = (message or {}).get("tool_calls") if isinstance(message, dict) else None
    return (
        text if isinstance(text, str) else "",
        _count(usage.get("prompt_tokens")),
        cached,
        _count(usage.get("completion_tokens")),
        model if isinstance(model, str) else "",
        tuple(c for c in calls if isinstance(c, dict)) if isinstance(calls, list) else (),
    )


def complete(
    config: dict,
    messages: list[dict],
    *,
    policy: RetryPolicy | None = None,
    extra: dict | None = None,
) -> Completion:
    """Call the model once (with retries) and account for tokens, latency and cost."""
    policy = policy or RetryPolicy(max_retries=int(config.get("max_retries", 3)))
    try:
        connection = connection_for(config)
    except provider_keys.KeyRefused as exc:
        log.warning("model call refused before sending: %s", exc)
        raise LLMError(f"not sent: {exc}", 0, "refused") from exc
    params = {
        "model": config["model"],
        "messages": messages,
        "temperature": float(config.get("temperature", 0)),
        "max_tokens": int(config.get("max_tokens", 512)),
        **(extra or {}),
    }
    body = json.dumps(params).encode()
    target = destination(config)
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        try:
            response = _post(connection, body)
        except openai.APIStatusError as exc:
            kind = "rate_limit" if exc.status_code == 429 else "server"
            if exc.status_code not in RETRYABLE_STATUS:
                raise LLMError(
                    f"HTTP {exc.status_code} from {target}: {exc.message}", attempt, "client"
                ) from exc
            error, retry_after = exc, _retry_after(exc.response)
        except openai.APITimeoutError as exc:
            kind, error, retry_after = "timeout", exc, None
        except openai.APIConnectionError as exc:
            refusal = _refusal(exc)
            if refusal is not None:
                # Not transient: the same destination is refused (or redirects) every time.
                raise LLMError(f"model call refused: {refusal}", attempt, "refused") from exc
            kind, error, retry_after = "connection", exc, None
        else:
            latency_ms = (time.perf_counter() - started) * 1000
            try:
                answer = _read_completion(response)
            except ValueError as exc:
                raise LLMError(
                    f"{target} did not answer with a chat completion: {exc}", attempt, "client"
                ) from exc
            text, prompt_tokens, cached, completion_tokens, model, tool_calls = answer
            return Completion(
                text=text,
                prompt_tokens=prompt_tokens,
                cached_tokens=cached,
                completion_tokens=completion_tokens,
                latency_ms=latency_ms,
                cost=Prices.of(config).cost(prompt_tokens, cached, completion_tokens),
                attempts=attempt,
                model=model or config["model"],
                tool_calls=tool_calls,
            )
        if attempt > policy.max_retries:
            raise LLMError(
                f"{kind} after {attempt} attempts to {target}: {error}", attempt, kind
            ) from error
        policy.sleep(policy.delay(attempt - 1, retry_after))
