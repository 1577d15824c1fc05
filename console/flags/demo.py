"""Demo flags for support-bot: a kill switch and a prompt canary, plus a few everyday flags.

`seed_flags(application, users)` is idempotent (a flag that exists is left alone) and goes
through the same services as the console, so every change is versioned and audited.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from console.core.versioning import dated
from console.flags import services, validation
from console.flags.models import Flag, FlagKind, FlagRules, FlagRulesVersion, FlagType

EXPERIMENT_AGE = timedelta(days=3)


def _switch_on(flag: Flag, actor, environments, content: dict, message: str) -> None:
    for env in environments:
        head = flag.rule_sets.get(environment=env)
        services.save_rules(
            actor=actor,
            flag=flag,
            environment=env,
            content=content,
            base_number=head.latest_number,
            message=message,
            # prod is protected: the demo stands in for an applied promotion, as seed_demo
            # does for prompt bindings.
            via_promotion=env.protected,
        )


def _release_switched_off(application, actor) -> None:
    """Every demo flag exists in prod, served off where nothing switched it on — as earlier
    promotions of its (switched-off) rules would have left it."""
    for head in FlagRules.objects.filter(
        flag__application=application, environment__protected=True
    ).select_related("flag", "environment"):
        latest = head.latest_version
        if latest is not None and latest.content.get("unreleased"):
            services.save_rules(
                actor=actor,
                flag=head.flag,
                environment=head.environment,
                content=validation.empty_rules(head.flag.off_variant),
                base_number=head.latest_number,
                message="Released switched off",
                via_promotion=True,
            )


def seed_flags(application, users: dict) -> None:
    engineer = users["engineer"]
    environments = list(application.environments.order_by("order", "key"))
    by_key = {e.key: e for e in environments}
    existing = set(Flag.objects.filter(application=application).values_list("key", flat=True))

    if "answers-enabled" not in existing:
        flag = services.create_flag(
            actor=engineer,
            application=application,
            key="answers-enabled",
            name="Answers enabled",
            description="Kill switch for generated answers: off sends every customer to a human.",
            flag_type=FlagType.BOOLEAN,
            kind=FlagKind.KILL_SWITCH,
            owner=engineer,
        )
        _switch_on(
            flag,
            engineer,
            environments,
            {"enabled": True, "rules": [], "default": {"variant": "on"}},
            "Answers on everywhere",
        )

    if "support-prompt" not in existing:
        variants = [
            {
                "key": "stable",
                "value": "answer-question@2",
                "description": "The reviewed prompt",
                "ref": {"kind": "prompt", "key": "answer-question", "version": 2},
            },
            {
                "key": "canary",
                "value": "answer-question@3",
                "description": "Cites sources, shorter, tier-aware",
                "ref": {"kind": "prompt", "key": "answer-question", "version": 3},
            },
        ]
        # The prod split has run for three days: the demo experiment's report covers them
        # (console.experiments.demo sends their traffic).
        with dated(FlagRulesVersion, timezone.now() - EXPERIMENT_AGE):
            flag = services.create_flag(
                actor=engineer,
                application=application,
                key="support-prompt",
                name="Support prompt canary",
                description="Which answer-question prompt version a customer gets.",
                flag_type=FlagType.STRING,
                kind=FlagKind.EXPERIMENT,
                owner=engineer,
                variants=variants,
                off_variant="stable",
            )
            _switch_on(
                flag,
                engineer,
                [by_key[k] for k in ("dev", "staging") if k in by_key],
                {"enabled": True, "rules": [], "default": {"variant": "canary"}},
                "Canary everywhere before prod",
            )
            if "prod" in by_key:
                _switch_on(
                    flag,
                    engineer,
                    [by_key["prod"]],
                    {
                        "enabled": True,
                        "rules": [
                            {
                                "name": "Internal staff",
                                "conditions": [
                                    {
                                        "attribute": "email",
                                        "operator": "ends_with",
                                        "value": "@acme.com",
                                    }
                                ],
                                "serve": {"variant": "canary"},
                            }
                        ],
                        "default": {
                            "rollout": [
                                {"variant": "stable", "weight": 75},
                                {"variant": "canary", "weight": 25},
                            ]
                        },
                    },
                    "25% canary in prod, staff always on the canary",
                )

    if "tier-routing" not in existing:
        flag = services.create_flag(
            actor=engineer,
            application=application,
            key="tier-routing",
            name="Route gold customers to the bigger model",
            flag_type=FlagType.STRING,
            kind=FlagKind.RELEASE,
            owner=users.get("admin", engineer),
            variants=[
                {"key": "small", "value": "gpt-main", "description": ""},
                {"key": "large", "value": "judge", "description": "gpt-4o"},
            ],
            off_variant="small",
        )
        _switch_on(
            flag,
            engineer,
            [by_key["dev"]] if "dev" in by_key else [],
            {
                "enabled": True,
                "rules": [
                    {
                        "name": "Gold tier on app ≥ 2.4",
                        "conditions": [
                            {"attribute": "tier", "operator": "in", "values": ["gold", "platinum"]},
                            {
                                "attribute": "app_version",
                                "operator": "semver_gte",
                                "value": "2.4.0",
                            },
                        ],
                        "serve": {"variant": "large"},
                    }
                ],
                "default": {"variant": "small"},
            },
            "Try the large model for gold customers",
        )

    if "max-context-docs" not in existing:
        services.create_flag(
            actor=engineer,
            application=application,
            key="max-context-docs",
            name="Retrieved documents per answer",
            flag_type=FlagType.NUMBER,
            kind=FlagKind.OPERATIONAL,
            owner=engineer,
            variants=[
                {"key": "five", "value": 5, "description": "default"},
                {"key": "three", "value": 3, "description": "cheaper under load"},
            ],
            off_variant="five",
        )
    _release_switched_off(application, engineer)
