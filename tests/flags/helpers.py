"""Flag test data, built through the same services the console uses."""

from __future__ import annotations

from console.flags import services
from console.flags.evaluation import FlagDefinition
from console.flags.models import Flag, FlagKind, FlagType

CANARY_VARIANTS = [
    {"key": "stable", "value": "answer@1", "description": ""},
    {"key": "canary", "value": "answer@2", "description": ""},
]


def make_flag(
    application,
    author,
    key: str = "new-checkout",
    *,
    flag_type: str = FlagType.BOOLEAN,
    kind: str = FlagKind.RELEASE,
    variants: list[dict] | None = None,
    off_variant: str = "",
) -> Flag:
    return services.create_flag(
        actor=author,
        application=application,
        key=key,
        name=key.replace("-", " ").title(),
        flag_type=flag_type,
        kind=kind,
        owner=author,
        variants=variants,
        off_variant=off_variant,
    )


def set_rules(flag: Flag, env_key: str, content: dict, author, message: str = "test"):
    """Save rules in any environment (protected ones as if a promotion applied them)."""
    env = flag.application.environments.get(key=env_key)
    head = flag.rule_sets.get(environment=env)
    return services.save_rules(
        actor=author,
        flag=flag,
        environment=env,
        content=content,
        base_number=head.latest_number,
        message=message,
        via_promotion=env.protected,
    ).version


def on(variant: str = "on", rules: list | None = None) -> dict:
    return {"enabled": True, "rules": rules or [], "default": {"variant": variant}}


def split(*weights: tuple[str, float], rules: list | None = None) -> dict:
    return {
        "enabled": True,
        "rules": rules or [],
        "default": {"rollout": [{"variant": v, "weight": w} for v, w in weights]},
    }


def definition(
    rules: dict | None,
    *,
    key: str = "flag",
    salt: str = "salt",
    flag_type: str = "string",
    variants: list[dict] | None = None,
    off_variant: str = "off",
    killed: bool = False,
) -> FlagDefinition:
    """A definition straight from content, for pure evaluation tests (no database)."""
    variants = variants or [
        {"key": "on", "value": "ON"},
        {"key": "off", "value": "OFF"},
        {"key": "a", "value": "A"},
        {"key": "b", "value": "B"},
    ]
    return FlagDefinition.from_content(
        key=key,
        flag_type=flag_type,
        salt=salt,
        variants=variants,
        off_variant=off_variant,
        rules_content=rules,
        killed=killed,
        version=1,
    )
