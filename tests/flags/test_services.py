"""Flag writes: versioned rules per environment, policy, kill switch, one audit event each."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from console.audit.models import AuditEvent
from console.core.versioning import ImmutableVersionError, VersionConflict
from console.flags import services
from console.flags.models import FlagKind, FlagRules, FlagRulesVersion, FlagType
from console.registry.services import PromotionRequired
from tests.factories import make_prompt
from tests.flags.helpers import CANARY_VARIANTS, make_flag, on, set_rules, split


def events(after: int = 0) -> list[str]:
    return list(
        AuditEvent.objects.filter(seq__gt=after).order_by("seq").values_list("action", flat=True)
    )


def last_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def env(flag, key):
    return flag.application.environments.get(key=key)


def test_create_flag_makes_a_switched_off_rule_set_in_every_environment(application, engineer):
    before = last_seq()
    flag = make_flag(application, engineer, "new-checkout")
    heads = FlagRules.objects.filter(flag=flag).order_by("environment__order")
    assert [h.environment.key for h in heads] == ["dev", "staging", "prod"]
    for head in heads:
        assert head.latest_number == 1
        assert head.latest_version.content == {
            "enabled": False,
            "rules": [],
            "default": {"variant": "off"},
            "definition": {"kind": "release", "variants": flag.variants, "off_variant": "off"},
        } | ({"unreleased": True} if head.environment.protected else {})
    assert flag.variants == [
        {"key": "on", "value": True, "description": ""},
        {"key": "off", "value": False, "description": ""},
    ]
    assert events(before) == ["flag.create"]
    event = AuditEvent.objects.get(seq__gt=before)
    assert event.actor_label == engineer.username and event.application_id == application.pk


def test_duplicate_key_and_bad_variants_are_refused(application, engineer):
    make_flag(application, engineer, "dup")
    with pytest.raises(ValidationError) as dup:
        make_flag(application, engineer, "dup")
    assert "already exists" in str(dup.value)
    with pytest.raises(ValidationError) as wrong_type:
        make_flag(
            application,
            engineer,
            "num",
            flag_type=FlagType.NUMBER,
            variants=[{"key": "x", "value": "three"}],
            off_variant="x",
        )
    assert "variants.1.value" in wrong_type.value.message_dict
    with pytest.raises(ValidationError) as no_off:
        make_flag(
            application,
            engineer,
            "s",
            flag_type=FlagType.STRING,
            variants=CANARY_VARIANTS,
            off_variant="nope",
        )
    assert "off_variant" in no_off.value.message_dict


def test_variant_refs_must_name_an_existing_version(application, engineer):
    make_prompt(application, engineer, key="answer")
    ok = [
        {"key": "v1", "value": "answer@1", "ref": {"kind": "prompt", "key": "answer", "version": 1}}
    ]
    flag = make_flag(
        application, engineer, "p", flag_type=FlagType.STRING, variants=ok, off_variant="v1"
    )
    assert flag.variants[0]["ref"] == {"kind": "prompt", "key": "answer", "version": 1}
    missing = [
        {"key": "v9", "value": "x", "ref": {"kind": "prompt", "key": "answer", "version": 9}}
    ]
    with pytest.raises(ValidationError) as exc:
        make_flag(
            application,
            engineer,
            "q",
            flag_type=FlagType.STRING,
            variants=missing,
            off_variant="v9",
        )
    assert "has no version 9" in str(exc.value)


def test_rules_are_versioned_noop_on_identical_content_and_conflict_on_stale_base(flag, engineer):
    dev = env(flag, "dev")
    before = last_seq()
    v2 = services.save_rules(
        actor=engineer, flag=flag, environment=dev, content=on("on"), base_number=1, message="go"
    ).version
    assert (v2.number, v2.parent.number, v2.message) == (2, 1, "go")
    same = services.save_rules(
        actor=engineer, flag=flag, environment=dev, content=on("on"), base_number=2
    )
    assert same.created is False and same.version.number == 2
    with pytest.raises(VersionConflict):
        services.save_rules(
            actor=engineer,
            flag=flag,
            environment=dev,
            content=split(("on", 10), ("off", 90)),
            base_number=1,
        )
    assert events(before) == ["flag.rules.create"]
    event = AuditEvent.objects.get(seq__gt=before)
    assert event.before["enabled"] is False and event.after["enabled"] is True
    assert event.environment_id == dev.pk and event.reason == "go"
    # Other environments are untouched.
    assert flag.rule_sets.get(environment=env(flag, "staging")).latest_number == 1


def test_rule_versions_are_immutable(flag):
    version = FlagRulesVersion.objects.filter(head__flag=flag).first()
    with pytest.raises(ImmutableVersionError):
        version.save()
    with pytest.raises(ImmutableVersionError):
        FlagRulesVersion.objects.filter(pk=version.pk).update(message="x")


def test_invalid_rules_are_refused_naming_the_place(flag, engineer):
    bad = {
        "enabled": True,
        "rules": [
            {
                "name": "r",
                "conditions": [{"attribute": "v", "operator": "semver_gt", "value": "two"}],
                "serve": {"variant": "on"},
            }
        ],
        "default": {"rollout": [{"variant": "on", "weight": 60}, {"variant": "off", "weight": 30}]},
    }
    with pytest.raises(ValidationError) as exc:
        services.save_rules(
            actor=engineer, flag=flag, environment=env(flag, "dev"), content=bad, base_number=1
        )
    errors = exc.value.message_dict
    assert "rules.1.conditions.1.value" in errors
    assert any("add up to 90%" in m for m in errors["default.rollout"])


def test_protected_environment_refuses_rule_edits_but_not_the_kill_switch(flag, engineer):
    prod = env(flag, "prod")
    before = last_seq()
    with pytest.raises(PromotionRequired):
        services.save_rules(
            actor=engineer, flag=flag, environment=prod, content=on("on"), base_number=1
        )
    assert events(before) == []
    head, changed = services.kill_flag(
        actor=engineer, flag=flag, environment=prod, reason="bad answers"
    )
    assert changed and head.killed and head.killed_by == engineer
    assert head.latest_number == 1  # the kill is not a rules edit
    assert events(before) == ["flag.kill"]


def test_kill_requires_a_reason_and_is_audited_with_it(flag, engineer):
    dev = env(flag, "dev")
    for reason in ("", "   "):
        with pytest.raises(ValidationError):
            services.kill_flag(actor=engineer, flag=flag, environment=dev, reason=reason)
    before = last_seq()
    services.kill_flag(actor=engineer, flag=flag, environment=dev, reason="incident 412")
    _, again = services.kill_flag(actor=engineer, flag=flag, environment=dev, reason="twice")
    assert again is False
    services.restore_flag(actor=engineer, flag=flag, environment=dev, reason="fixed")
    kill, restore = AuditEvent.objects.filter(seq__gt=before).order_by("seq")
    assert (kill.action, kill.reason, kill.before, kill.after) == (
        "flag.kill",
        "incident 412",
        {"killed": False},
        {"killed": True},
    )
    assert (restore.action, restore.reason) == ("flag.restore", "fixed")
    assert kill.environment_id == dev.pk and kill.object_label == f"{flag.key} in dev"


def test_a_failed_change_leaves_no_event_and_no_row(flag, engineer):
    before = last_seq()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.kill_flag(actor=engineer, flag=flag, environment=env(flag, "dev"), reason="x")
        raise RuntimeError("boom")
    assert events(before) == []
    assert not FlagRules.objects.filter(flag=flag, killed=True).exists()


def test_update_flag_refuses_removing_a_variant_still_served(application, engineer):
    flag = make_flag(
        application,
        engineer,
        "canary",
        flag_type=FlagType.STRING,
        variants=CANARY_VARIANTS,
        off_variant="stable",
    )
    set_rules(flag, "staging", on("canary"), engineer)
    before = last_seq()
    with pytest.raises(ValidationError) as exc:
        services.update_flag(
            actor=engineer,
            flag=flag,
            name="x",
            description="",
            kind=flag.kind,
            owner=None,
            variants=CANARY_VARIANTS[:1],
            off_variant="stable",
        )
    assert "canary is still served in staging" in str(exc.value)
    updated = services.update_flag(
        actor=engineer,
        flag=flag,
        name="Renamed",
        description="d",
        kind=FlagKind.EXPERIMENT,
        owner=None,
        variants=CANARY_VARIANTS,
        off_variant="stable",
    )
    assert updated.name == "Renamed" and updated.kind == FlagKind.EXPERIMENT
    assert events(before) == ["flag.update"]


def test_system_actions_author_versions_as_the_system_account(application):
    """Budget circuit breakers and rollout halts act as the system: their rule versions are
    recorded under the inactive system account, and the audit event names the system."""
    from console.audit.models import AuditEvent
    from console.audit.services import SYSTEM
    from console.core.versioning import SYSTEM_USERNAME

    flag = services.create_flag(
        actor=SYSTEM, application=application, key="sys", name="Sys", flag_type=FlagType.BOOLEAN
    )
    version = flag.rule_sets.first().versions.get(number=1)
    assert version.author.username == SYSTEM_USERNAME
    assert not version.author.is_active and not version.author.has_usable_password()
    event = AuditEvent.objects.filter(action="flag.create").order_by("-seq").first()
    assert (event.actor_type, event.actor_label) == ("system", "system")
