"""Which environment variables a model config may send as its provider key, and to which hosts.

A model config names its key's variable in `api_key_env`. The operator lists the variables that
may be named in AIRLOCK_PROVIDER_KEYS, each bound to the hosts it may go to
(`OPENAI_API_KEY@api.openai.com,AZURE_KEY@*.openai.azure.com`). Airlock's own settings
(SECRET_KEY, DATABASE_URL, AIRLOCK_*, ...) can never be named, listed or not. The rule is checked
when a version is saved, shown on the model config's page, checked when a run is launched, and
checked again by the LLM client right before a key would be sent.
"""

from __future__ import annotations

import functools
import os

from django.conf import settings

from console.config import is_own_variable
from console.core.egress import Destination, canonical_host, parse_destination, split_url


class KeyRefused(Exception):
    """The model config may not send this key to this host; str() is for the user."""


@functools.lru_cache(maxsize=32)
def _bindings(items: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, tuple[Destination, ...]]:
    return {name: tuple(parse_destination(p) for p in patterns) for name, patterns in items}


def bindings() -> dict[str, tuple[Destination, ...]]:
    raw = getattr(settings, "AIRLOCK_PROVIDER_KEYS", {}) or {}
    return _bindings(tuple(sorted((name, tuple(p)) for name, p in raw.items())))


def _bound(destination: Destination, host: str, port: int) -> bool:
    if not destination.port_ok(port):
        return False
    try:
        name, address = canonical_host(host)
    except ValueError:
        return False
    if address is not None:
        return destination.address == address
    return destination.matches_name(name)


def problem(api_key_env: str, base_url: str) -> str | None:
    """Why a config naming `api_key_env` may not send it to `base_url`, or None when it may
    (or names no key at all)."""
    name = (api_key_env or "").strip()
    if not name:
        return None
    if is_own_variable(name):
        return (
            f"{name} is one of Airlock's own settings: it is never sent to a model provider. "
            "Name the variable that holds the provider's key."
        )
    allowed = bindings()
    if name not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        return (
            f"{name} is not a provider key this deployment allows "
            f"(AIRLOCK_PROVIDER_KEYS lists: {listed})."
        )
    try:
        target = split_url(base_url)
    except Exception:
        return "base_url must be an http(s) URL before a key can be sent to it."
    if not any(_bound(d, target.host, target.port) for d in allowed[name]):
        hosts = ", ".join(str(d) for d in allowed[name])
        return f"{name} may only be sent to {hosts}; base_url points elsewhere."
    return None


def key_for(config: dict) -> str:
    """The key to send for this model config ("" when it names none), or KeyRefused."""
    name = (config.get("api_key_env") or "").strip()
    reason = problem(name, config.get("base_url") or "")
    if reason:
        raise KeyRefused(reason)
    return os.environ.get(name, "") if name else ""
