"""Flag evaluation: a pure function of (flag definition, evaluation context).

Nothing here touches the database, the cache or the clock, so the console's "who gets what"
panel, the runtime API and any SDK that ports these rules all give the same answer for the same
input. A `FlagDefinition` is built once per snapshot (parsed and validated rule set), then
`evaluate(definition, context)` decides the variant:

1. killed in this environment → the off variant, reason DISABLED;
2. no rule set in this environment (one added after the flag) → the off variant, UNKNOWN;
3. switched off → the off variant, reason DISABLED;
4. the first targeting rule whose conditions all hold → its variant (TARGETING_MATCH) or its
   percentage split (SPLIT);
5. otherwise the default: a fixed variant (STATIC) or a percentage split (SPLIT).

A targeting key is needed only when a split or a percentage condition is reached
(TARGETING_KEY_MISSING otherwise); a missing attribute never matches a condition.

Rollout bucketing (DESIGN.md, reproducible by any SDK):
`bucket = int(sha256(f"{flag_key}:{salt}:{targeting_key}").hexdigest()[:15], 16) / 16**15`,
a float in [0, 1); variant weights are cumulative in their stored order, so growing a variant's
share from 25% to 50% only ever moves users *into* it.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# OFREP reasons (open-feature/protocol service/openapi.yaml).
STATIC = "STATIC"
TARGETING_MATCH = "TARGETING_MATCH"
SPLIT = "SPLIT"
DISABLED = "DISABLED"
UNKNOWN = "UNKNOWN"

# OFREP error codes.
FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
PARSE_ERROR = "PARSE_ERROR"
INVALID_CONTEXT = "INVALID_CONTEXT"
GENERAL = "GENERAL"

TARGETING_KEY = "targetingKey"
BUCKET_SCALE = 16**15

LIST_OPERATORS = {"in", "not_in"}
SEMVER_OPERATORS = {"semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte"}
NUMBER_OPERATORS = {"gt", "gte", "lt", "lte"}
OPERATORS: dict[str, str] = {
    "equals": "equals",
    "not_equals": "does not equal",
    "in": "is one of",
    "not_in": "is not one of",
    "contains": "contains",
    "starts_with": "starts with",
    "ends_with": "ends with",
    "semver_eq": "version =",
    "semver_gt": "version >",
    "semver_gte": "version ≥",
    "semver_lt": "version <",
    "semver_lte": "version ≤",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "percentage": "in the first % of",
}


class EvaluationError(Exception):
    """An evaluation that cannot produce a value; `code` is an OFREP error code."""

    def __init__(self, code: str, details: str):
        self.code = code
        self.details = details
        super().__init__(f"{code}: {details}")


def bucket(flag_key: str, salt: str, targeting_key: str) -> float:
    """The documented, stable bucket of a targeting key for a flag, in [0, 1)."""
    digest = hashlib.sha256(f"{flag_key}:{salt}:{targeting_key}".encode()).digest()
    # The first 15 hex digits are the first 60 bits: the same number, without hex text.
    return (int.from_bytes(digest[:8], "big") >> 4) / BUCKET_SCALE


def pick_variant(weights: tuple[tuple[str, float], ...], point: float) -> str:
    """The variant whose cumulative weight range (in percent, stored order) holds `point`."""
    cumulative = 0.0
    for variant, weight in weights:
        cumulative += weight
        if point * 100 < cumulative:
            return variant
    # Rounding can leave a hair below 100%: the last variant with any weight takes it.
    for variant, weight in reversed(weights):
        if weight > 0:
            return variant
    return weights[-1][0]


# ---------------------------------------------------------------------------------- semver

_SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*))?(?:\.(?P<patch>0|[1-9]\d*))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


@lru_cache(maxsize=4096)
def _parse_semver(text: str) -> tuple | None:
    match = _SEMVER.match(text.strip())
    if match is None:
        return None
    core = tuple(int(match.group(part) or 0) for part in ("major", "minor", "patch"))
    pre = match.group("pre")
    if pre is None:
        return (*core, (1,))
    identifiers = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (*core, (0, identifiers))


def parse_semver(text: Any) -> tuple | None:
    """A sortable key for a semantic version ("1.4", "v2.0.1-rc.1"), or None if it is not one.

    Precedence follows semver 2.0: a pre-release sorts before its release, numeric identifiers
    numerically and below alphanumeric ones; build metadata is ignored.
    """
    if not isinstance(text, str) or len(text) > 256:
        return None
    return _parse_semver(text)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _same(a: Any, b: Any) -> bool:
    """Equality as a person means it: 3 == 3.0, "3" != 3, True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


# ------------------------------------------------------------------------- the definition


@dataclass(frozen=True)
class Condition:
    attribute: str
    operator: str
    value: Any = None
    values: tuple = ()
    # The condition compiled once per snapshot: context → bool (may raise EvaluationError).
    test: Callable[[Mapping[str, Any]], bool] = field(
        default=lambda context: False, compare=False, repr=False
    )

    @classmethod
    def from_content(cls, raw: Mapping, *, flag_key: str = "", salt: str = "") -> Condition:
        operator = raw["operator"]
        attribute = raw.get("attribute") or ""
        value = raw.get("value")
        values = tuple(raw.get("values") or ())
        return cls(
            attribute=attribute,
            operator=operator,
            value=value,
            values=values,
            test=_compile(operator, attribute, value, values, flag_key, salt),
        )


@dataclass(frozen=True)
class Serve:
    """What a rule (or the default) serves: one variant, or a split across variants."""

    variant: str | None = None
    rollout: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_content(cls, raw: Mapping) -> Serve:
        if raw.get("rollout"):
            return cls(rollout=tuple((r["variant"], float(r["weight"])) for r in raw["rollout"]))
        return cls(variant=raw.get("variant"))

    @property
    def is_split(self) -> bool:
        return bool(self.rollout)


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...]
    serve: Serve


@dataclass(frozen=True)
class FlagDefinition:
    """Everything needed to evaluate one flag in one environment (a snapshot, never a row)."""

    key: str
    flag_type: str
    salt: str
    variants: Mapping[str, Any]  # variant key → value, in stored order
    off_variant: str
    configured: bool = True
    enabled: bool = False
    killed: bool = False
    rules: tuple[Rule, ...] = ()
    default: Serve = field(default_factory=Serve)
    version: int = 0
    kind: str = ""

    @classmethod
    def from_content(
        cls,
        *,
        key: str,
        flag_type: str,
        salt: str,
        variants: list[Mapping],
        off_variant: str,
        rules_content: Mapping | None,
        killed: bool = False,
        version: int = 0,
        kind: str = "",
    ) -> FlagDefinition:
        values = {v["key"]: v.get("value") for v in variants}
        if rules_content is None:
            return cls(
                key,
                flag_type,
                salt,
                values,
                off_variant,
                configured=False,
                killed=killed,
                kind=kind,
            )
        rules = tuple(
            Rule(
                name=r.get("name") or f"Rule {i}",
                conditions=tuple(
                    Condition.from_content(c, flag_key=key, salt=salt)
                    for c in r.get("conditions", [])
                ),
                serve=Serve.from_content(r.get("serve") or {}),
            )
            for i, r in enumerate(rules_content.get("rules", []), start=1)
        )
        return cls(
            key=key,
            flag_type=flag_type,
            salt=salt,
            variants=values,
            off_variant=off_variant,
            enabled=bool(rules_content.get("enabled")),
            killed=killed,
            rules=rules,
            default=Serve.from_content(rules_content.get("default") or {}),
            version=version,
            kind=kind,
        )

    @property
    def context_free(self) -> bool:
        """True when every context gets the same answer (so it can be computed once)."""
        if not self.configured or self.killed or not self.enabled:
            return True
        return not self.rules and not self.default.is_split


@dataclass(frozen=True)
class Resolution:
    key: str
    value: Any
    variant: str
    reason: str
    rule_index: int | None = None  # 1-based, None when no rule decided
    rule_name: str = ""
    bucket: float | None = None
    version: int = 0

    @property
    def decided_by(self) -> str:
        if self.reason == DISABLED:
            return "kill switch" if self.rule_name == "killed" else "flag is off"
        if self.reason == UNKNOWN:
            return "no rules in this environment"
        where = f"rule {self.rule_index} “{self.rule_name}”" if self.rule_index else "default"
        return f"{where}, split" if self.reason == SPLIT else where

    def metadata(self) -> dict[str, Any]:
        """OFREP metadata: only booleans, strings and numbers."""
        data: dict[str, Any] = {"rulesVersion": self.version}
        if self.rule_index is not None:
            data["ruleIndex"] = self.rule_index
            data["ruleName"] = self.rule_name
        if self.reason == DISABLED and self.rule_name == "killed":
            data["killed"] = True
        return data


# ----------------------------------------------------------------------------- evaluation


def attribute_value(context: Mapping[str, Any], name: str) -> Any:
    """The context attribute `name`; a dotted name reaches into nested objects."""
    if name in context:
        return context[name]
    current: Any = context
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def _targeting_key(flag_key: str, context: Mapping[str, Any]) -> str:
    key = context.get(TARGETING_KEY)
    if key is None or key == "":
        raise EvaluationError(
            TARGETING_KEY_MISSING,
            f"flag {flag_key!r} splits traffic by targeting key; send context.targetingKey",
        )
    return str(key)


_COMPARE = {
    "eq": operator.eq,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _getter(name: str) -> Callable[[Mapping[str, Any]], Any]:
    if "." not in name:
        return lambda context: context.get(name)
    return lambda context: attribute_value(context, name)


def _compile(
    op: str, attribute: str, value: Any, values: tuple, flag_key: str, salt: str
) -> Callable[[Mapping[str, Any]], bool]:
    """One condition as a function of the context. A missing attribute never matches
    (negations included)."""
    get = _getter(attribute)
    if op == "percentage":
        share = _number(value)
        by_key = not attribute or attribute == TARGETING_KEY

        def percentage(context: Mapping[str, Any]) -> bool:
            if by_key:
                point = bucket(flag_key, salt, _targeting_key(flag_key, context))
            else:
                raw = get(context)
                if raw is None:
                    return False
                point = bucket(flag_key, salt, str(raw))
            return share is not None and point * 100 < share

        return percentage
    if op in ("equals", "not_equals"):
        negate = op == "not_equals"

        def equals(context: Mapping[str, Any]) -> bool:
            actual = get(context)
            return actual is not None and _same(actual, value) != negate

        return equals
    if op in LIST_OPERATORS:
        negate = op == "not_in"

        def member(context: Mapping[str, Any]) -> bool:
            actual = get(context)
            if actual is None:
                return False
            return any(_same(actual, v) for v in values) != negate

        return member
    if op == "contains":
        needle = str(value)

        def contains(context: Mapping[str, Any]) -> bool:
            actual = get(context)
            if isinstance(actual, list):
                return any(_same(item, value) for item in actual)
            return isinstance(actual, str) and needle in actual

        return contains
    if op in ("starts_with", "ends_with"):
        text = str(value)
        method = str.startswith if op == "starts_with" else str.endswith
        return lambda context: isinstance(a := get(context), str) and method(a, text)
    if op in SEMVER_OPERATORS:
        wanted = parse_semver(value)
        compare = _COMPARE[op.removeprefix("semver_")]

        def semver(context: Mapping[str, Any]) -> bool:
            mine = parse_semver(get(context))
            return mine is not None and wanted is not None and compare(mine, wanted)

        return semver
    if op in NUMBER_OPERATORS:
        limit = _number(value)
        compare = _COMPARE[op]

        def numeric(context: Mapping[str, Any]) -> bool:
            mine = _number(get(context))
            return mine is not None and limit is not None and compare(mine, limit)

        return numeric

    def unknown(context: Mapping[str, Any]) -> bool:
        raise EvaluationError(GENERAL, f"flag {flag_key!r} uses unknown operator {op!r}")

    return unknown


KILLED_RULE = 0  # the rule index `decide` reports when the kill switch decided


def decide(
    flag: FlagDefinition, context: Mapping[str, Any]
) -> tuple[int | None, str, str, float | None]:
    """The core of evaluation: (rule index, variant, reason, bucket) for `context`.

    Rule indexes are 1-based; None means the default decided, KILLED_RULE the kill switch.
    Every (rule index, variant, reason) is one of a small, fixed set per flag, which lets the
    runtime API reuse the answer it built the first time it saw that outcome.
    """
    if flag.killed:
        return KILLED_RULE, flag.off_variant, DISABLED, None
    if not flag.configured:
        return None, flag.off_variant, UNKNOWN, None
    if not flag.enabled:
        return None, flag.off_variant, DISABLED, None
    index, serve = None, flag.default
    for position, rule in enumerate(flag.rules, start=1):
        for condition in rule.conditions:
            if not condition.test(context):
                break
        else:
            index, serve = position, rule.serve
            break
    if serve.is_split:
        point = bucket(flag.key, flag.salt, _targeting_key(flag.key, context))
        return index, pick_variant(serve.rollout, point), SPLIT, point
    if not serve.variant:
        raise EvaluationError(GENERAL, f"flag {flag.key!r} has a rule that serves nothing")
    return index, serve.variant, (TARGETING_MATCH if index else STATIC), None


def resolution(
    flag: FlagDefinition, rule_index: int | None, variant: str, reason: str, point: float | None
) -> Resolution:
    """The full answer for a decided outcome (GENERAL if the variant is not defined)."""
    if variant not in flag.variants:
        raise EvaluationError(
            GENERAL, f"flag {flag.key!r} serves variant {variant!r}, which it does not define"
        )
    killed = rule_index == KILLED_RULE
    return Resolution(
        key=flag.key,
        value=flag.variants[variant],
        variant=variant,
        reason=reason,
        rule_index=None if killed else rule_index,
        rule_name="killed" if killed else (flag.rules[rule_index - 1].name if rule_index else ""),
        bucket=point,
        version=flag.version,
    )


def evaluate(flag: FlagDefinition, context: Mapping[str, Any]) -> Resolution:
    """Decide the variant of `flag` for `context` (see the module docstring for the order)."""
    return resolution(flag, *decide(flag, context))


def check_context(context: Any) -> dict[str, Any]:
    """Validate an OFREP evaluation context; raise INVALID_CONTEXT naming the problem."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise EvaluationError(INVALID_CONTEXT, "context must be a JSON object")
    if TARGETING_KEY in context and not isinstance(context[TARGETING_KEY], str):
        # Absent is fine (no split needed); present must be a string — null included.
        raise EvaluationError(INVALID_CONTEXT, "context.targetingKey must be a string")
    return context
