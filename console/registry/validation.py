"""Validate and normalise version content for prompts and model configs.

Each validator returns the cleaned content or raises ValidationError keyed by field name, so
the editor can show the message next to the field at fault.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import jsonschema
from django.core.exceptions import ValidationError

from console.core import egress, provider_keys
from console.registry.templating import IDENTIFIER, analyse

ENV_VAR = re.compile(r"^[A-Z_][A-Z0-9_]*$")
MAX_TEMPLATE_CHARS = 100_000
DESTINATION_REFUSED = (
    "this destination is not allowed (operators list allowed hosts in AIRLOCK_EGRESS_ALLOW)"
)


def prompt_findings(content: dict) -> tuple[dict[str, list[str]], list[str]]:
    """(errors by field, warnings) for prompt content — shared by save and live preview."""
    errors: dict[str, list[str]] = {}
    warnings: list[str] = []
    templates = {"system": content.get("system", ""), "user": content.get("user", "")}
    for name, text in templates.items():
        if not isinstance(text, str):
            errors.setdefault(name, []).append("must be text")
        elif len(text) > MAX_TEMPLATE_CHARS:
            errors.setdefault(name, []).append(f"is longer than {MAX_TEMPLATE_CHARS} characters")
    if not (templates["system"] or "").strip() and not (templates["user"] or "").strip():
        errors.setdefault("user", []).append("write a system or a user template (both are empty)")
    declared = content.get("variables", [])
    if not isinstance(declared, list) or not all(isinstance(v, str) for v in declared):
        errors.setdefault("variables", []).append("must be a list of names")
        declared = []
    for name in declared:
        if not IDENTIFIER.match(name):
            errors.setdefault("variables", []).append(
                f"{name!r} is not a valid variable name (letters, digits, underscore)"
            )
    if len(set(declared)) != len(declared):
        errors.setdefault("variables", []).append("lists a variable twice")
    analysis = analyse({k: v for k, v in templates.items() if isinstance(v, str)})
    for problem in analysis.problems:
        errors.setdefault(problem.field, []).append(
            f"line {problem.line}, column {problem.column}: {problem.message}"
        )
    for name, places in analysis.used.items():
        if name not in declared:
            where = ", ".join(f"{f} line {line}" for f, line in places)
            errors.setdefault("variables", []).append(
                f"{{{{ {name} }}}} is used ({where}) but not declared"
            )
    for name in declared:
        if name not in analysis.used:
            warnings.append(f"{name} is declared but not used in either template")
    params = content.get("params", {})
    if not isinstance(params, dict):
        errors.setdefault("params", []).append("must be a JSON object")
    _tools, problems = tool_definitions(content.get("tools") or [])
    if problems:
        errors["tools"] = problems
    return errors, warnings


TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_KEYS = ("name", "description", "parameters")


def _refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        own = [schema["$ref"]] if isinstance(schema.get("$ref"), str) else []
        return own + [ref for value in schema.values() for ref in _refs(value)]
    if isinstance(schema, list):
        return [ref for value in schema for ref in _refs(value)]
    return []


def _unresolved(schema: dict) -> list[str]:
    """The $refs of a schema that do not point inside it: checking a call's arguments against
    the schema must never need anything else (no fetching) and never fail."""
    problems = []
    for ref in dict.fromkeys(_refs(schema)):
        if not ref.startswith("#"):
            problems.append(f"$ref {ref!r} points outside the schema; use #/$defs/…")
            continue
        node: Any = schema
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                problems.append(f"$ref {ref!r} points to nothing in the schema")
                break
    return problems


def tool_definitions(raw: Any) -> tuple[list[dict], list[str]]:
    """(the tools a prompt offers the model, problems). Each is {"name", "description",
    "parameters"} (a JSON Schema for the arguments); the OpenAI form {"type": "function",
    "function": {...}} is read too and stored in the short form."""
    if not isinstance(raw, list):
        return [], ["must be a JSON array of tool definitions"]
    tools: list[dict] = []
    problems: list[str] = []
    for number, tool in enumerate(raw, start=1):
        if isinstance(tool, dict) and tool.get("type") == "function" and "function" in tool:
            tool = tool["function"]
        where = f"tool {number}"
        if not isinstance(tool, dict):
            problems.append(f'{where}: must be an object with a name, e.g. {{"name": "x"}}')
            continue
        name = tool.get("name")
        if isinstance(name, str) and TOOL_NAME.fullmatch(name):
            where = f"tool {number} ({name})"
        else:
            problems.append(f"{where}: name must be 1-64 letters, digits, _ or -")
            continue
        tool = {k: v for k, v in tool.items() if k != "strict"}  # OpenAI's, not Airlock's
        unknown = [k for k in tool if k not in TOOL_KEYS]
        if unknown:
            expected = ", ".join(TOOL_KEYS)
            problems.append(f"{where}: unknown key {unknown[0]!r} (expected {expected})")
        if any(t["name"] == name for t in tools):
            problems.append(f"{where}: a second tool named {name}")
        if not isinstance(tool.get("description", ""), str):
            problems.append(f"{where}: description must be text")
        parameters = tool.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            problems.append(f"{where}: parameters must be a JSON Schema of type object")
        else:
            try:
                jsonschema.Draft202012Validator.check_schema(parameters)
            except jsonschema.SchemaError as exc:
                at = "/".join(str(p) for p in exc.absolute_path)
                problems.append(f"{where}: parameters{'/' + at if at else ''}: {exc.message}")
            else:
                problems.extend(f"{where}: parameters: {p}" for p in _unresolved(parameters))
        definition = {"name": name, "description": tool.get("description", "")}
        definition["parameters"] = parameters
        tools.append(definition)
    return tools, problems


def _unix_newlines(text):
    # Browsers submit textareas with CRLF; stored templates always use \n, so an unchanged
    # template saved from the editor is byte-identical (a no-op) and renders the same anywhere.
    return text.replace("\r\n", "\n").replace("\r", "\n") if isinstance(text, str) else text


def clean_prompt_content(content: dict) -> dict:
    content = {
        **content,
        "system": _unix_newlines(content.get("system", "")),
        "user": _unix_newlines(content.get("user", "")),
    }
    errors, _warnings = prompt_findings(content)
    if errors:
        raise ValidationError({k: [ValidationError(m) for m in v] for k, v in errors.items()})
    cleaned = {
        "system": content.get("system", "") or "",
        "user": content.get("user", "") or "",
        "variables": list(content.get("variables", [])),
        "params": dict(content.get("params", {}) or {}),
    }
    tools, _problems = tool_definitions(content.get("tools") or [])
    if tools:  # a prompt without tools keeps the content (and hash) it always had
        cleaned["tools"] = tools
    return cleaned


MODEL_NUMBERS: dict[str, tuple[type, float, float, bool]] = {
    # field: (type, min, max, required)
    "temperature": (float, 0.0, 2.0, True),
    "max_tokens": (int, 1, 1_000_000, True),
    "timeout_s": (float, 0.1, 600.0, True),
    "max_retries": (int, 0, 10, True),
    "max_concurrency": (int, 1, 512, True),
    "price_input_per_1m": (float, 0.0, 10_000.0, True),
    "price_cached_input_per_1m": (float, 0.0, 10_000.0, True),
    "price_output_per_1m": (float, 0.0, 10_000.0, True),
}


def clean_model_config_content(content: dict) -> dict:
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    provider = str(content.get("provider", "") or "").strip()
    if not provider:
        errors["provider"] = ["is required (e.g. openai, azure-openai, local)"]
    cleaned["provider"] = provider
    model = str(content.get("model", "") or "").strip()
    if not model:
        errors["model"] = ["is required (the provider's model name)"]
    cleaned["model"] = model
    base_url = str(content.get("base_url", "") or "").strip()
    parsed = urlparse(base_url)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        errors["base_url"] = ["must be an http(s) URL such as https://api.openai.com/v1"]
    elif parsed.username or parsed.password:
        errors["base_url"] = ["must not contain credentials; name an environment variable instead"]
    cleaned["base_url"] = base_url
    api_key_env = str(content.get("api_key_env", "") or "").strip()
    if api_key_env and not ENV_VAR.match(api_key_env):
        errors["api_key_env"] = [
            "must name an environment variable (A-Z, 0-9, underscore), never the key itself"
        ]
    cleaned["api_key_env"] = api_key_env
    if "base_url" not in errors:
        try:
            egress.check_url(base_url, unresolved_ok=True)
        except egress.EgressRefused:
            errors["base_url"] = [DESTINATION_REFUSED]
    if "api_key_env" not in errors and "base_url" not in errors:
        reason = provider_keys.problem(api_key_env, base_url)
        if reason:
            errors["api_key_env"] = [reason]
    for name, (kind, low, high, required) in MODEL_NUMBERS.items():
        raw = content.get(name)
        if raw in (None, ""):
            if required:
                errors[name] = ["is required"]
            continue
        try:
            value = kind(raw)
            if kind is int and float(raw) != value:
                raise ValueError
        except (TypeError, ValueError):
            errors[name] = [f"must be {'a whole number' if kind is int else 'a number'}"]
            continue
        if not low <= value <= high:
            errors[name] = [f"must be between {low:g} and {high:g}"]
            continue
        cleaned[name] = value
    _clean_fallbacks(content, cleaned, errors)
    if errors:
        raise ValidationError({k: [ValidationError(m) for m in v] for k, v in errors.items()})
    return cleaned


MODEL_KEY = re.compile(r"^[-a-zA-Z0-9_]{1,80}$")  # a model config key (a slug)
MAX_FALLBACKS = 5
# The breaker a client applies to a model config: trip when at least `min_requests` calls in
# the last `window_s` seconds were made and the share that failed reached `error_rate`.
BREAKER_BOUNDS = {
    "error_rate": (float, 0.01, 1.0),
    "window_s": (int, 5, 3600),
    "min_requests": (int, 1, 100_000),
}


def _clean_fallbacks(content: dict, cleaned: dict, errors: dict[str, list[str]]) -> None:
    """`fallbacks`: the model configs (keys, in the order to try) a client calls when this one
    fails or its breaker is open; `breaker`: when to stop calling this one for a while. Both
    kept out of the content (and its hash) while unset."""
    raw = content.get("fallbacks") or []
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.replace("\n", ",").split(",") if part.strip()]
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        errors["fallbacks"] = ["a list of model config keys, in the order to try them"]
    else:
        bad = [k for k in raw if not MODEL_KEY.match(k)]
        if bad:
            errors["fallbacks"] = [f"not a model config key: {', '.join(map(repr, bad))}"]
        elif len(set(raw)) != len(raw):
            errors["fallbacks"] = ["each model config may appear once"]
        elif len(raw) > MAX_FALLBACKS:
            errors["fallbacks"] = [f"at most {MAX_FALLBACKS} fallbacks"]
        elif raw:
            cleaned["fallbacks"] = raw
    breaker = content.get("breaker")
    if breaker in (None, "", {}):
        return
    if not isinstance(breaker, dict) or set(breaker) - set(BREAKER_BOUNDS):
        errors["breaker"] = [f"an object of {', '.join(BREAKER_BOUNDS)}"]
        return
    out = {}
    for name, (kind, low, high) in BREAKER_BOUNDS.items():
        value = breaker.get(name)
        try:
            number = kind(value)
            if isinstance(value, bool) or (kind is int and float(value) != number):
                raise ValueError
        except (TypeError, ValueError):
            errors[f"breaker_{name}"] = [f"{name}: a number from {low:g} to {high:g}"]
            continue
        if not low <= number <= high:
            errors[f"breaker_{name}"] = [f"{name}: from {low:g} to {high:g}"]
            continue
        out[name] = number
    if len(out) == len(BREAKER_BOUNDS):
        cleaned["breaker"] = out


def model_config_problems(content: dict) -> list[str]:
    """Why a stored model config version cannot be used now (the rules may have tightened since
    it was saved): its key is not allowed for its host, or its base_url is not an allowed
    destination. Needs no DNS, so a page can show it."""
    problems = []
    base_url = str(content.get("base_url") or "")
    reason = provider_keys.problem(str(content.get("api_key_env") or ""), base_url)
    if reason:
        problems.append(f"api_key_env: {reason}")
    try:
        egress.check_url(base_url, resolve=False)
    except egress.EgressRefused:
        problems.append(f"base_url: {DESTINATION_REFUSED}")
    return problems
