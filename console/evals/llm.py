"""The one place Airlock calls a model: chat completions through the `openai` SDK.

Works with OpenAI, Azure OpenAI and any OpenAI-compatible server through `base_url`. The key
comes from the environment variable the model config names (never from the database).
Retries are ours (the SDK's own are off) so they are visible and testable: exponential backoff
with full jitter on 429, 5xx, timeouts and connection errors, honouring `Retry-After`.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import openai

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0


class LLMError(Exception):
    """The call failed after every retry; `attempts` says how many were made."""

    def __init__(self, message: str, attempts: int, kind: str):
        self.attempts = attempts
        self.kind = kind  # rate_limit | server | timeout | connection | client
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


_clients: dict[tuple, openai.OpenAI] = {}


def client_for(config: dict) -> openai.OpenAI:
    """One SDK client per (base_url, key, timeout): connection pools are reused across calls."""
    env_name = config.get("api_key_env") or ""
    api_key = os.environ.get(env_name, "") if env_name else ""
    key = (config["base_url"], api_key, float(config.get("timeout_s") or 30))
    client = _clients.get(key)
    if client is None:
        client = openai.OpenAI(
            base_url=config["base_url"],
            api_key=api_key or "not-set",
            timeout=float(config.get("timeout_s") or 30),
            max_retries=0,
        )
        _clients[key] = client
    return client


def complete(
    config: dict,
    messages: list[dict],
    *,
    policy: RetryPolicy | None = None,
    extra: dict | None = None,
) -> Completion:
    """Call the model once (with retries) and account for tokens, latency and cost."""
    policy = policy or RetryPolicy(max_retries=int(config.get("max_retries", 3)))
    client = client_for(config)
    params = {
        "model": config["model"],
        "messages": messages,
        "temperature": float(config.get("temperature", 0)),
        "max_tokens": int(config.get("max_tokens", 512)),
        **(extra or {}),
    }
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        try:
            response = client.chat.completions.create(**params)
        except openai.APIStatusError as exc:
            kind = "rate_limit" if exc.status_code == 429 else "server"
            if exc.status_code not in RETRYABLE_STATUS:
                raise LLMError(f"HTTP {exc.status_code}: {exc.message}", attempt, "client") from exc
            error, retry_after = exc, _retry_after(exc.response)
        except openai.APITimeoutError as exc:
            kind, error, retry_after = "timeout", exc, None
        except openai.APIConnectionError as exc:
            kind, error, retry_after = "connection", exc, None
        else:
            latency_ms = (time.perf_counter() - started) * 1000
            usage = response.usage
            prompt_tokens = usage.prompt_tokens if usage else 0
            completion_tokens = usage.completion_tokens if usage else 0
            details = getattr(usage, "prompt_tokens_details", None) if usage else None
            cached = (getattr(details, "cached_tokens", 0) or 0) if details else 0
            text = response.choices[0].message.content or "" if response.choices else ""
            return Completion(
                text=text,
                prompt_tokens=prompt_tokens,
                cached_tokens=cached,
                completion_tokens=completion_tokens,
                latency_ms=latency_ms,
                cost=Prices.of(config).cost(prompt_tokens, cached, completion_tokens),
                attempts=attempt,
                model=response.model or config["model"],
            )
        if attempt > policy.max_retries:
            raise LLMError(f"{kind} after {attempt} attempts: {error}", attempt, kind) from error
        policy.sleep(policy.delay(attempt - 1, retry_after))
