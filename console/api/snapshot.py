"""The runtime snapshot of one environment: what `GET /api/v1/config` returns and what OFREP
evaluates against.

Built from the database in a handful of queries, then kept in this process for at most
`MAX_AGE_SECONDS` (DESIGN.md: no server cache older than one second), so a change is visible to
the next poll. A flag change in this process drops the environment at once (signal). The body
and its strong ETag are computed once per build, so serving the config is a dictionary lookup.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from console.core.canonical import canonical_json
from console.flags.evaluation import (
    EvaluationError,
    FlagDefinition,
    Resolution,
    decide,
    evaluate,
    resolution,
)
from console.flags.selectors import environment_flags
from console.flags.signals import flag_rules_changed
from console.registry.models import (
    Environment,
    ModelConfigBinding,
    ModelConfigVersion,
    PromptBinding,
    PromptVersion,
)

MAX_AGE_SECONDS = 1.0
# Never part of a snapshot, whatever a model config's content holds (the registry already
# refuses secrets; this is the second lock on the door).
SECRET_FIELDS = {"api_key", "secret", "password", "token", "authorization"}


@dataclass(frozen=True)
class Snapshot:
    environment_id: int
    built_at: float
    body: bytes
    etag: str
    flags: dict[str, FlagDefinition]
    # OFREP answers of flags that no context can change (off, killed, one fixed variant),
    # computed once per build instead of once per request: key → (body, JSON text).
    fixed: dict[str, tuple[dict, str]]
    # Every other flag has a handful of possible outcomes (rule × variant × reason); the answer
    # for each is built the first time it occurs and reused: (key, outcome) → (body, JSON).
    outcomes: dict[tuple, tuple[dict, str]] = field(default_factory=dict)


def success_payload(resolution: Resolution) -> dict[str, Any]:
    """The OFREP evaluationSuccess body."""
    return {
        "key": resolution.key,
        "value": resolution.value,
        "reason": resolution.reason,
        "variant": resolution.variant,
        "metadata": resolution.metadata(),
    }


def failure_payload(key: str, exc: EvaluationError) -> dict[str, Any]:
    """The OFREP evaluationFailure body."""
    return {"key": key, "errorCode": exc.code, "errorDetails": exc.details}


def _encoded(body: dict) -> tuple[dict, str]:
    return body, json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def ofrep_answer(snapshot: Snapshot, key: str, context: dict) -> tuple[dict, str]:
    """(OFREP body, its JSON text) for one flag of the snapshot and a context."""
    fixed = snapshot.fixed.get(key)
    if fixed is not None:
        return fixed
    flag = snapshot.flags[key]
    try:
        rule_index, variant, reason, point = decide(flag, context)
    except EvaluationError as exc:
        return _encoded(failure_payload(key, exc))
    outcome = (key, rule_index, variant, reason)
    answer = snapshot.outcomes.get(outcome)
    if answer is None:
        try:
            answer = _encoded(success_payload(resolution(flag, rule_index, variant, reason, point)))
        except EvaluationError as exc:
            answer = _encoded(failure_payload(key, exc))
        snapshot.outcomes[outcome] = answer
    return answer


_snapshots: dict[int, Snapshot] = {}
_lock = threading.Lock()
# One rebuild at a time per environment (single flight): the other threads of this process keep
# serving the current bytes while it runs, or wait for it once those are too old.
_build_locks: dict[int, threading.Lock] = {}
# Bumped by every flag change: a rebuild that read the database before the change is not kept.
_generation = {"n": 0}
# A rebuild starts once the snapshot is this old, so that the threads which do not run it can
# go on serving the current one without it ever getting older than MAX_AGE_SECONDS.
REFRESH_FRACTION = 0.75


def _forget(sender, environment_ids: list[int], **kwargs) -> None:
    with _lock:
        _generation["n"] += 1
        for environment_id in environment_ids:
            _snapshots.pop(environment_id, None)


flag_rules_changed.connect(_forget, dispatch_uid="api-snapshot-forget")


def forget_all() -> None:
    with _lock:
        _generation["n"] += 1
        _snapshots.clear()


# While the database is briefly unreachable, the last good snapshot keeps being served for at
# most this long (and /ready says so); after that the runtime API answers 503.
STALE_LIMIT_SECONDS = 300.0
degraded = {"since": None, "error": ""}


def snapshot_for(environment_id: int) -> Snapshot:
    """The environment's snapshot, at most MAX_AGE_SECONDS old — or, during a database outage,
    the last good one for up to STALE_LIMIT_SECONDS.

    Past REFRESH_FRACTION of its age one thread rebuilds it; the others serve the current one
    meanwhile, and only wait for the rebuild if the current one has reached MAX_AGE_SECONDS
    (or there is none)."""
    snapshot = _snapshots.get(environment_id)
    now = time.monotonic()
    if snapshot is not None:
        age = now - snapshot.built_at
        if age < MAX_AGE_SECONDS * REFRESH_FRACTION:
            return snapshot
    else:
        age = math.inf
    build_lock = _build_locks.get(environment_id)
    if build_lock is None:
        build_lock = _build_locks.setdefault(environment_id, threading.Lock())
    if age < MAX_AGE_SECONDS:
        if not build_lock.acquire(blocking=False):
            return snapshot  # another thread is rebuilding it
    else:
        build_lock.acquire()
    try:
        current = _snapshots.get(environment_id)
        if (
            current is not None
            and current is not snapshot
            and time.monotonic() - current.built_at < MAX_AGE_SECONDS
        ):
            return current  # rebuilt by another thread while this one waited for the lock
        return _rebuild(environment_id, current)
    finally:
        build_lock.release()


def _rebuild(environment_id: int, snapshot: Snapshot | None) -> Snapshot:
    generation = _generation["n"]
    now = time.monotonic()
    try:
        fresh = build(environment_id)
    except DatabaseError as exc:
        if snapshot is None or now - snapshot.built_at > STALE_LIMIT_SECONDS:
            raise
        if degraded["since"] is None:
            degraded["since"] = time.time()
        degraded["error"] = f"{type(exc).__name__}: {exc}"[:200]
        return snapshot
    degraded["since"] = None
    with _lock:
        if _generation["n"] == generation:
            _snapshots[environment_id] = fresh
    return fresh


def strong_etag(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'


def _prompt(version: PromptVersion) -> dict[str, Any]:
    content = version.content
    prompt = {
        "version": version.number,
        "content_hash": version.content_hash,
        "system": content.get("system", ""),
        "user": content.get("user", ""),
        "variables": content.get("variables", []),
        "params": content.get("params", {}),
    }
    if content.get("tools"):  # an agent's prompt: the tools it offers the model
        prompt["tools"] = content["tools"]
    return prompt


def _model_config(version: ModelConfigVersion) -> dict[str, Any]:
    public = {k: v for k, v in version.content.items() if k.lower() not in SECRET_FIELDS}
    return {"version": version.number, "content_hash": version.content_hash, **public}


def document(environment: Environment) -> tuple[dict[str, Any], dict[str, FlagDefinition]]:
    """The resolved snapshot as a JSON-ready dict, and the flag definitions to evaluate."""
    flags = environment_flags(environment)
    prompts = {
        b.head.key: _prompt(b.version)
        for b in PromptBinding.objects.filter(environment=environment).select_related(
            "head", "version"
        )
    }
    models = {
        b.head.key: _model_config(b.version)
        for b in ModelConfigBinding.objects.filter(environment=environment).select_related(
            "head", "version"
        )
    }
    wanted = {
        kind: {(key, number) for k, key, number in flags.references if k == kind}
        for kind in ("prompt", "model_config")
    }
    prompt_versions = _referenced(PromptVersion, environment, wanted["prompt"], _prompt)
    model_versions = _referenced(
        ModelConfigVersion, environment, wanted["model_config"], _model_config
    )
    doc = {
        "application": environment.application.key,
        "environment": environment.key,
        "prompts": prompts,
        "model_configs": models,
        "flags": flags.documents,
        # Versions named by flag variants (a prompt or model canary), live or not.
        "prompt_versions": prompt_versions,
        "model_config_versions": model_versions,
        "shadows": _shadows(environment),
    }
    return doc, flags.definitions


def _shadows(environment: Environment) -> dict[str, dict]:
    """Versions to call alongside the live one and report (variant "shadow"), never serve."""
    from console.releases.models import ShadowDeployment

    shadows: dict[str, dict] = {"prompts": {}, "model_configs": {}}
    rows = ShadowDeployment.objects.filter(environment=environment, active=True).select_related(
        "prompt_version__head", "model_version__head"
    )
    for shadow in rows:
        if shadow.prompt_version_id:
            shadows["prompts"][shadow.prompt_version.head.key] = _prompt(shadow.prompt_version)
        else:
            shadows["model_configs"][shadow.model_version.head.key] = _model_config(
                shadow.model_version
            )
    return shadows


def _referenced(model, environment: Environment, wanted: set[tuple[str, int]], shape) -> dict:
    if not wanted:
        return {}
    rows = model.objects.filter(
        head__application_id=environment.application_id,
        head__key__in={key for key, _ in wanted},
        number__in={number for _, number in wanted},  # not every version of those heads
    ).select_related("head")
    return {f"{v.head.key}@{v.number}": shape(v) for v in rows if (v.head.key, v.number) in wanted}


def build(environment_id: int) -> Snapshot:
    started = time.monotonic()  # its age counts from before the first read
    environment = Environment.objects.select_related("application").get(pk=environment_id)
    doc, definitions = document(environment)
    body = canonical_json(doc).encode()
    fixed: dict[str, tuple[dict, str]] = {}
    for key, flag in definitions.items():
        if flag.context_free:
            try:
                fixed[key] = _encoded(success_payload(evaluate(flag, {})))
            except EvaluationError as exc:
                fixed[key] = _encoded(failure_payload(key, exc))
    return Snapshot(
        environment_id=environment_id,
        built_at=started,
        body=body,
        etag=strong_etag(body),
        flags=definitions,
        fixed=fixed,
    )


def bulk_etag(snapshot: Snapshot, context: dict) -> str:
    """Bulk OFREP results are a pure function of (snapshot, context): tag that pair, so a
    client polling with the same context gets 304 without anything being evaluated."""
    return strong_etag(snapshot.etag + canonical_json(context))


def if_none_match(header: str, etag: str) -> bool:
    """RFC 9110 If-None-Match with the weak comparison it prescribes."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))
