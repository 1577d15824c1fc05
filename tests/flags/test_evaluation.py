"""Rule matching, reasons and precedence: the pure evaluator, no database."""

from __future__ import annotations

import pytest

from console.flags.evaluation import (
    DISABLED,
    GENERAL,
    INVALID_CONTEXT,
    SPLIT,
    STATIC,
    TARGETING_KEY_MISSING,
    TARGETING_MATCH,
    UNKNOWN,
    EvaluationError,
    check_context,
    evaluate,
    parse_semver,
)
from console.flags.validation import clean_rules
from tests.flags.helpers import definition, on, split

VARIANTS = ["on", "off", "a", "b"]


def rule(*conditions: dict, variant: str = "a", name: str = "r") -> dict:
    return {"name": name, "conditions": list(conditions), "serve": {"variant": variant}}


def cond(attribute: str, operator: str, value=None, values=None) -> dict:
    c = {"attribute": attribute, "operator": operator}
    if values is not None:
        c["values"] = values
    else:
        c["value"] = value
    return c


def decide(condition: dict, context: dict) -> bool:
    """Does a one-condition rule match? (Validated first, exactly as the services store it.)"""
    content = clean_rules(on("off", rules=[rule(condition)]), VARIANTS)
    result = evaluate(definition(content), context)
    return result.variant == "a"


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        # equals / not_equals: strict types, 3 == 3.0, "3" != 3, True is not 1
        (cond("plan", "equals", "pro"), {"plan": "pro"}, True),
        (cond("plan", "equals", "pro"), {"plan": "Pro"}, False),
        (cond("seats", "equals", 3), {"seats": 3.0}, True),
        (cond("seats", "equals", 3), {"seats": "3"}, False),
        (cond("beta", "equals", True), {"beta": True}, True),
        (cond("beta", "equals", True), {"beta": 1}, False),
        (cond("plan", "not_equals", "free"), {"plan": "pro"}, True),
        (cond("plan", "not_equals", "free"), {"plan": "free"}, False),
        # in / not_in
        (cond("country", "in", values=["FR", "DE"]), {"country": "DE"}, True),
        (cond("country", "in", values=["FR", "DE"]), {"country": "US"}, False),
        (cond("country", "not_in", values=["FR", "DE"]), {"country": "US"}, True),
        (cond("country", "not_in", values=["FR", "DE"]), {"country": "FR"}, False),
        (cond("org", "in", values=[7, 8]), {"org": 8}, True),
        # contains: substring of a string, member of a list
        (cond("email", "contains", "@acme"), {"email": "zoe@acme.com"}, True),
        (cond("email", "contains", "@acme"), {"email": "zoe@example.com"}, False),
        (cond("groups", "contains", "beta"), {"groups": ["staff", "beta"]}, True),
        (cond("groups", "contains", "beta"), {"groups": ["staff"]}, False),
        # starts_with / ends_with
        (cond("email", "starts_with", "admin"), {"email": "admin@x.io"}, True),
        (cond("email", "starts_with", "admin"), {"email": "x@admin.io"}, False),
        (cond("email", "ends_with", "@acme.com"), {"email": "zoe@acme.com"}, True),
        (cond("email", "ends_with", "@acme.com"), {"email": "zoe@acme.co"}, False),
        # semver, with pre-release precedence and a leading v
        (cond("app", "semver_eq", "2.4.0"), {"app": "v2.4"}, True),
        (cond("app", "semver_gt", "2.4.0"), {"app": "2.10.0"}, True),
        (cond("app", "semver_gt", "2.4.0"), {"app": "2.4.0"}, False),
        (cond("app", "semver_gte", "2.4.0"), {"app": "2.4.0"}, True),
        (cond("app", "semver_gte", "2.4.0"), {"app": "2.4.0-rc.1"}, False),
        (cond("app", "semver_lt", "2.4.0"), {"app": "2.4.0-rc.1"}, True),
        (cond("app", "semver_lt", "2.4.0"), {"app": "2.3.9"}, True),
        (cond("app", "semver_lte", "2.4.0"), {"app": "2.4.0+build.7"}, True),
        (cond("app", "semver_lte", "2.4.0"), {"app": "2.4.1"}, False),
        (cond("app", "semver_gt", "2.4.0"), {"app": "not-a-version"}, False),
        # numeric comparisons (numbers or numeric strings)
        (cond("age", "gt", 18), {"age": 19}, True),
        (cond("age", "gt", 18), {"age": 18}, False),
        (cond("age", "gte", 18), {"age": "18"}, True),
        (cond("age", "lt", 18), {"age": 17.5}, True),
        (cond("age", "lte", 18), {"age": 18}, True),
        (cond("age", "lte", 18), {"age": 19}, False),
        (cond("age", "gt", 18), {"age": "old"}, False),
        (cond("age", "gt", 18), {"age": True}, False),
        # nested attributes by dotted name
        (cond("user.plan", "equals", "pro"), {"user": {"plan": "pro"}}, True),
        # a missing attribute never matches, negated operators included
        (cond("plan", "not_equals", "free"), {}, False),
        (cond("country", "not_in", values=["FR"]), {}, False),
    ],
)
def test_every_operator_matches_as_documented(condition, context, expected):
    assert decide(condition, context) is expected


def test_percentage_condition_buckets_the_targeting_key_or_a_named_attribute():
    everyone = cond("targetingKey", "percentage", 100)
    nobody = cond("targetingKey", "percentage", 0)
    assert decide(everyone, {"targetingKey": "u1"}) is True
    assert decide(nobody, {"targetingKey": "u1"}) is False
    by_org = cond("org", "percentage", 100)
    assert decide(by_org, {"org": "acme"}) is True
    assert decide(by_org, {"targetingKey": "u1"}) is False  # no org: no match
    with pytest.raises(EvaluationError) as missing:
        decide(cond("targetingKey", "percentage", 50), {})
    assert missing.value.code == TARGETING_KEY_MISSING


def test_first_matching_rule_decides_and_all_its_conditions_must_hold():
    content = clean_rules(
        on(
            "off",
            rules=[
                rule(cond("plan", "equals", "pro"), cond("country", "equals", "FR"), name="FR pro"),
                rule(cond("plan", "equals", "pro"), variant="b", name="Any pro"),
            ],
        ),
        VARIANTS,
    )
    flag = definition(content)
    fr = evaluate(flag, {"plan": "pro", "country": "FR"})
    us = evaluate(flag, {"plan": "pro", "country": "US"})
    free = evaluate(flag, {"plan": "free"})
    assert (fr.variant, fr.reason, fr.rule_index, fr.rule_name) == (
        "a",
        TARGETING_MATCH,
        1,
        "FR pro",
    )
    assert (us.variant, us.reason, us.rule_index) == ("b", TARGETING_MATCH, 2)
    assert (free.variant, free.reason, free.rule_index) == ("off", STATIC, None)
    assert fr.value == "A" and fr.metadata() == {
        "rulesVersion": 1,
        "ruleIndex": 1,
        "ruleName": "FR pro",
    }


def test_reasons_static_split_disabled_unknown():
    assert evaluate(definition(on("on")), {}).reason == STATIC
    split_result = evaluate(definition(split(("a", 50), ("b", 50))), {"targetingKey": "u"})
    assert split_result.reason == SPLIT and split_result.bucket is not None
    off = evaluate(definition({"enabled": False, "rules": [], "default": {"variant": "on"}}), {})
    assert (off.variant, off.reason, off.value) == ("off", DISABLED, "OFF")
    unconfigured = evaluate(definition(None), {})
    assert (unconfigured.variant, unconfigured.reason) == ("off", UNKNOWN)
    killed_unconfigured = evaluate(definition(None, killed=True), {})
    assert (killed_unconfigured.variant, killed_unconfigured.reason) == ("off", DISABLED)


def test_a_rule_can_serve_a_split():
    content = clean_rules(
        on(
            "off",
            rules=[
                {
                    "name": "beta",
                    "conditions": [cond("beta", "equals", True)],
                    "serve": {"rollout": [{"variant": "a", "weight": 100}]},
                }
            ],
        ),
        VARIANTS,
    )
    result = evaluate(definition(content), {"beta": True, "targetingKey": "u"})
    assert (result.variant, result.reason, result.rule_index) == ("a", SPLIT, 1)


def test_kill_switch_beats_rules_splits_and_enabled():
    rules = clean_rules(
        split(("a", 100), rules=[rule(cond("plan", "equals", "pro"), variant="b")]), VARIANTS
    )
    killed = definition(rules, killed=True)
    for context in ({"plan": "pro"}, {"targetingKey": "u1"}, {}):
        result = evaluate(killed, context)
        assert (result.variant, result.value, result.reason) == ("off", "OFF", DISABLED)
        assert result.metadata()["killed"] is True
        assert result.decided_by == "kill switch"
    # Not killed, the same rules decide again.
    assert evaluate(definition(rules), {"plan": "pro"}).variant == "b"


def test_split_without_targeting_key_is_targeting_key_missing_but_static_flags_need_none():
    with pytest.raises(EvaluationError) as exc:
        evaluate(definition(split(("a", 50), ("b", 50))), {"plan": "pro"})
    assert exc.value.code == TARGETING_KEY_MISSING
    assert evaluate(definition(on("on")), {}).variant == "on"


def test_a_definition_serving_an_undefined_variant_is_a_general_error():
    broken = definition({"enabled": True, "rules": [], "default": {"variant": "ghost"}})
    with pytest.raises(EvaluationError) as exc:
        evaluate(broken, {})
    assert exc.value.code == GENERAL


def test_context_validation():
    assert check_context(None) == {}
    assert check_context({"targetingKey": "u"}) == {"targetingKey": "u"}
    for bad in ([], "x", {"targetingKey": 5}):
        with pytest.raises(EvaluationError) as exc:
            check_context(bad)
        assert exc.value.code == INVALID_CONTEXT


def test_semver_precedence():
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
        "2.0.0",
    ]
    keys = [parse_semver(v) for v in order]
    assert keys == sorted(keys)
    assert parse_semver("01.2.3") is None and parse_semver(3) is None
