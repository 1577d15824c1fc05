"""Validate and normalise flag definitions and per-environment rule sets.

Each validator returns cleaned content or raises ValidationError keyed by the field at fault
(for rules: a path such as `rules.2.conditions.1.value`), so the editor can say exactly what to
fix. The evaluator (`evaluation.py`) trusts what passes here.
"""

from __future__ import annotations

import math
import re
from typing import Any

from django.core.exceptions import ValidationError

from console.flags.evaluation import (
    LIST_OPERATORS,
    NUMBER_OPERATORS,
    OPERATORS,
    SEMVER_OPERATORS,
    parse_semver,
)
from console.flags.models import FlagType

SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")
MAX_VARIANTS = 20
MAX_RULES = 50
MAX_CONDITIONS = 10
MAX_LIST_VALUES = 500
REF_KINDS = {"prompt", "model_config"}


def _fail(errors: dict[str, list[str]]) -> None:
    if errors:
        raise ValidationError({k: [ValidationError(m) for m in v] for k, v in errors.items()})


def _value_fits(flag_type: str, value: Any) -> bool:
    if flag_type == FlagType.BOOLEAN:
        return isinstance(value, bool)
    if flag_type == FlagType.STRING:
        return isinstance(value, str)
    if flag_type == FlagType.NUMBER:
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    return value is not None  # JSON: any JSON value except null


TYPE_WORDS = {
    FlagType.BOOLEAN: "true or false",
    FlagType.STRING: "a string",
    FlagType.NUMBER: "a number",
    FlagType.JSON: "a JSON value (object, array, string, number or boolean)",
}


def default_variants(flag_type: str) -> list[dict]:
    if flag_type == FlagType.BOOLEAN:
        return [
            {"key": "on", "value": True, "description": ""},
            {"key": "off", "value": False, "description": ""},
        ]
    return []


def clean_variants(
    flag_type: str, variants: Any, off_variant: str, resolve_ref=None
) -> tuple[list[dict], str]:
    """Variants as stored, and the off variant. `resolve_ref(kind, key, version)` returns an
    error message when a referenced prompt/model config version does not exist."""
    errors: dict[str, list[str]] = {}
    if flag_type not in FlagType.values:
        errors["flag_type"] = [f"must be one of {', '.join(FlagType.values)}"]
        _fail(errors)
    if not isinstance(variants, list) or not variants:
        _fail({"variants": ["add at least one variant"]})
    if len(variants) > MAX_VARIANTS:
        _fail({"variants": [f"at most {MAX_VARIANTS} variants"]})
    cleaned: list[dict] = []
    seen: set[str] = set()
    for i, raw in enumerate(variants, start=1):
        where = f"variants.{i}"
        if not isinstance(raw, dict):
            errors.setdefault(where, []).append("must be an object")
            continue
        key = str(raw.get("key", "")).strip()
        if not key or not SLUG.match(key) or len(key) > 80:
            errors.setdefault(f"{where}.key", []).append(
                "a variant key uses letters, digits, - and _ (at most 80)"
            )
        elif key in seen:
            errors.setdefault(f"{where}.key", []).append(f"{key!r} is used twice")
        seen.add(key)
        value = raw.get("value")
        if not _value_fits(flag_type, value):
            errors.setdefault(f"{where}.value", []).append(
                f"a {flag_type} flag's value must be {TYPE_WORDS[flag_type]}"
            )
        item: dict[str, Any] = {
            "key": key,
            "value": value,
            "description": str(raw.get("description") or "")[:300],
        }
        ref = raw.get("ref")
        if ref:
            problem = _clean_ref(ref, resolve_ref)
            if isinstance(problem, str):
                errors.setdefault(f"{where}.ref", []).append(problem)
            else:
                item["ref"] = problem
        cleaned.append(item)
    if flag_type == FlagType.BOOLEAN and len(cleaned) != 2:
        errors.setdefault("variants", []).append("a boolean flag has exactly two variants")
    off_variant = (off_variant or "").strip()
    if off_variant not in seen:
        errors.setdefault("off_variant", []).append(
            "choose the variant served when the flag is off or killed"
        )
    _fail(errors)
    return cleaned, off_variant


def _clean_ref(ref: Any, resolve_ref) -> dict | str:
    if not isinstance(ref, dict):
        return "must name a prompt or model config version"
    kind = ref.get("kind")
    key = str(ref.get("key") or "").strip()
    try:
        version = int(ref.get("version"))
    except (TypeError, ValueError):
        return "version must be a number"
    if kind not in REF_KINDS or not key or version < 1:
        return "must name a prompt or model config, its key and a version"
    if resolve_ref is not None:
        problem = resolve_ref(kind, key, version)
        if problem:
            return problem
    return {"kind": kind, "key": key, "version": version}


def empty_rules(default_variant: str, *, enabled: bool = False) -> dict:
    return {"enabled": enabled, "rules": [], "default": {"variant": default_variant}}


def clean_rules(content: Any, variant_keys: list[str]) -> dict:
    """A rule set as stored: enabled, ordered rules, and the default serve."""
    errors: dict[str, list[str]] = {}
    if not isinstance(content, dict):
        _fail({"content": ["must be a JSON object"]})
    enabled = content.get("enabled", False)
    if not isinstance(enabled, bool):
        errors["enabled"] = ["must be true or false"]
    rules_in = content.get("rules", [])
    if not isinstance(rules_in, list):
        errors["rules"] = ["must be a list"]
        rules_in = []
    if len(rules_in) > MAX_RULES:
        errors["rules"] = [f"at most {MAX_RULES} rules"]
    rules: list[dict] = []
    for i, raw in enumerate(rules_in, start=1):
        where = f"rules.{i}"
        if not isinstance(raw, dict):
            errors.setdefault(where, []).append("must be an object")
            continue
        conditions_in = raw.get("conditions", [])
        if not isinstance(conditions_in, list) or not conditions_in:
            errors.setdefault(f"{where}.conditions", []).append("add at least one condition")
            conditions_in = []
        if len(conditions_in) > MAX_CONDITIONS:
            errors.setdefault(f"{where}.conditions", []).append(
                f"at most {MAX_CONDITIONS} conditions per rule"
            )
        conditions = [
            _clean_condition(c, f"{where}.conditions.{j}", errors)
            for j, c in enumerate(conditions_in, start=1)
        ]
        rules.append(
            {
                "name": str(raw.get("name") or "").strip()[:120] or f"Rule {i}",
                "conditions": conditions,
                "serve": _clean_serve(raw.get("serve"), variant_keys, f"{where}.serve", errors),
            }
        )
    default = _clean_serve(content.get("default"), variant_keys, "default", errors)
    _fail(errors)
    return {"enabled": enabled, "rules": rules, "default": default}


def _clean_condition(raw: Any, where: str, errors: dict[str, list[str]]) -> dict:
    if not isinstance(raw, dict):
        errors.setdefault(where, []).append("must be an object")
        return {}
    operator = raw.get("operator")
    attribute = str(raw.get("attribute") or "").strip()
    if operator not in OPERATORS:
        errors.setdefault(f"{where}.operator", []).append(
            f"unknown operator {operator!r}; use one of {', '.join(OPERATORS)}"
        )
        return {}
    if operator != "percentage" and not attribute:
        errors.setdefault(f"{where}.attribute", []).append("name a context attribute")
    if len(attribute) > 100:
        errors.setdefault(f"{where}.attribute", []).append("at most 100 characters")
    condition: dict[str, Any] = {"attribute": attribute or "targetingKey", "operator": operator}
    if operator in LIST_OPERATORS:
        values = raw.get("values")
        if not isinstance(values, list) or not values:
            errors.setdefault(f"{where}.values", []).append("list at least one value")
            values = []
        if len(values) > MAX_LIST_VALUES:
            errors.setdefault(f"{where}.values", []).append(f"at most {MAX_LIST_VALUES} values")
        if any(isinstance(v, dict | list) or v is None for v in values):
            errors.setdefault(f"{where}.values", []).append(
                "values are strings, numbers or booleans"
            )
        condition["values"] = values
        return condition
    value = raw.get("value")
    if operator == "percentage":
        if not _is_number(value) or not 0 <= value <= 100:
            errors.setdefault(f"{where}.value", []).append("a percentage from 0 to 100")
    elif operator in NUMBER_OPERATORS:
        if not _is_number(value):
            errors.setdefault(f"{where}.value", []).append("compare with a number")
    elif operator in SEMVER_OPERATORS:
        if parse_semver(value) is None:
            errors.setdefault(f"{where}.value", []).append(
                "a semantic version such as 2.4.0 or 3.0.0-beta.1"
            )
    elif value is None or value == "" or isinstance(value, dict | list):
        errors.setdefault(f"{where}.value", []).append("give a value to compare with")
    condition["value"] = value
    return condition


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _clean_serve(raw: Any, variant_keys: list[str], where: str, errors) -> dict:
    if not isinstance(raw, dict):
        errors.setdefault(where, []).append("choose a variant or a percentage split")
        return {}
    rollout = raw.get("rollout")
    if rollout:
        if not isinstance(rollout, list):
            errors.setdefault(f"{where}.rollout", []).append("must be a list")
            return {}
        cleaned = []
        seen: set[str] = set()
        total = 0.0
        for part in rollout:
            variant = part.get("variant") if isinstance(part, dict) else None
            weight = part.get("weight") if isinstance(part, dict) else None
            if variant not in variant_keys:
                errors.setdefault(f"{where}.rollout", []).append(f"unknown variant {variant!r}")
                continue
            if variant in seen:
                errors.setdefault(f"{where}.rollout", []).append(f"{variant!r} appears twice")
            seen.add(variant)
            if not _is_number(weight) or weight < 0 or weight > 100:
                errors.setdefault(f"{where}.rollout", []).append(
                    f"{variant}: a weight from 0 to 100 (percent)"
                )
                continue
            total += weight
            cleaned.append({"variant": variant, "weight": weight})
        if cleaned and abs(total - 100) > 1e-6:
            errors.setdefault(f"{where}.rollout", []).append(
                f"weights add up to {total:g}%, not 100%"
            )
        return {"rollout": cleaned}
    variant = raw.get("variant")
    if variant not in variant_keys:
        errors.setdefault(where, []).append(
            f"unknown variant {variant!r}; the flag defines {', '.join(variant_keys)}"
        )
    return {"variant": variant}


def referenced_variants(content: dict) -> set[str]:
    """Every variant a rule set can serve (used to refuse removing one still in use)."""
    serves = [r.get("serve") or {} for r in content.get("rules", [])]
    serves.append(content.get("default") or {})
    used: set[str] = set()
    for serve in serves:
        if serve.get("variant"):
            used.add(serve["variant"])
        used.update(p["variant"] for p in serve.get("rollout") or [])
    return used
