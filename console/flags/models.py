"""Feature flags: a definition per application, and a versioned rule set per environment.

The definition (`Flag`) says what the flag can serve: its type, variants, the variant served when
it is off, a kind and an owner. Each environment's behaviour is a `FlagRules` head whose
immutable versions hold the rules JSON (the versioning core), so every change is numbered,
diffable and attributable. The kill switch is deliberately *not* a rules version: it is an
override on the head that takes effect at once — protected environments included — and leaves
the reviewed rules untouched, so restoring returns exactly to them.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.core.versioning import Version, VersionedHead
from console.registry.models import Application, Environment


class FlagType(models.TextChoices):
    BOOLEAN = "boolean", "Boolean"
    STRING = "string", "String"
    NUMBER = "number", "Number"
    JSON = "json", "JSON"


class FlagKind(models.TextChoices):
    RELEASE = "release", "Release"
    EXPERIMENT = "experiment", "Experiment"
    OPERATIONAL = "operational", "Operational"
    KILL_SWITCH = "kill_switch", "Kill switch"


def new_salt() -> str:
    return secrets.token_hex(4)


class Flag(models.Model):
    """content of `variants`: [{"key": slug, "value": any, "description": str,
    "ref": {"kind": "prompt" | "model_config", "key": str, "version": int} (optional)}]"""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="flags")
    key = models.SlugField(max_length=80)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    flag_type = models.CharField(max_length=16, choices=FlagType.choices)
    kind = models.CharField(max_length=16, choices=FlagKind.choices, default=FlagKind.RELEASE)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_flags",
    )
    variants = models.JSONField(default=list)
    off_variant = models.SlugField(max_length=80)
    # Part of the bucketing formula; fixed at creation so assignments never reshuffle.
    salt = models.CharField(max_length=32, default=new_salt, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["application", "key"], name="flag_unique_key")
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def variant_keys(self) -> list[str]:
        return [v["key"] for v in self.variants]

    @property
    def is_kill_switch(self) -> bool:
        return self.kind == FlagKind.KILL_SWITCH


def served_definition(flag: Flag) -> dict:
    """The part of a flag's definition an environment serves. Each rules version carries a
    copy, so a protected environment keeps serving the definition it was promoted with while
    the flag is edited for the others."""
    return {"kind": flag.kind, "variants": flag.variants, "off_variant": flag.off_variant}


def definition_in(content: dict | None, flag: Flag) -> dict:
    """The definition a rules version serves (versions older than the copy serve the flag's)."""
    return (content or {}).get("definition") or served_definition(flag)


class FlagRules(VersionedHead):
    """One flag's rule set in one environment (a versioned head) plus its kill-switch state.

    `key` mirrors the flag's key and `name` reads "<flag> in <environment>".
    """

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="rule_sets")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="flag_rule_sets"
    )
    killed = models.BooleanField(default=False)
    killed_at = models.DateTimeField(null=True, blank=True)
    killed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    killed_by_label = models.CharField(max_length=150, blank=True)
    kill_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["flag_id", "environment__order"]
        constraints = [
            models.UniqueConstraint(fields=["flag", "environment"], name="flagrules_unique_env")
        ]


class FlagRulesVersion(Version):
    """content: {"enabled": bool, "rules": [{"name", "conditions": [...], "serve": {...}}],
    "default": {"variant": key} | {"rollout": [{"variant": key, "weight": percent}]}}"""

    head = models.ForeignKey(FlagRules, on_delete=models.PROTECT, related_name="versions")

    class Meta(Version.Meta):
        pass
