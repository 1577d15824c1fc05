"""Flag reads shared by the pages and the runtime API: the flag table, per-environment state,
and the definitions the evaluator runs on (built from rows once, then pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from console.flags.evaluation import FlagDefinition
from console.flags.models import Flag, FlagKind, FlagRules, FlagRulesVersion, definition_in
from console.registry.models import Application, Environment
from console.registry.selectors import environments

STALE_AFTER = timedelta(days=30)
# Release and experiment flags are meant to be removed once decided; operational flags and
# kill switches live as long as the code path they guard.
TEMPORARY_KINDS = {FlagKind.RELEASE, FlagKind.EXPERIMENT}


@dataclass
class EnvState:
    """One flag in one environment, as the list and detail pages show it."""

    environment: Environment
    head: FlagRules | None
    content: dict | None
    version: int = 0

    @property
    def killed(self) -> bool:
        return bool(self.head and self.head.killed)

    @property
    def enabled(self) -> bool:
        return bool(self.content and self.content.get("enabled"))

    @property
    def state(self) -> str:
        if self.content is None:
            return "unconfigured"
        if self.killed:
            return "killed"
        return "on" if self.enabled else "off"

    @property
    def default(self) -> dict:
        return (self.content or {}).get("default") or {}

    @property
    def rules(self) -> list[dict]:
        return (self.content or {}).get("rules") or []

    @property
    def split(self) -> list[dict]:
        return self.default.get("rollout") or []


@dataclass
class FlagRow:
    flag: Flag
    states: list[EnvState] = field(default_factory=list)
    last_change: datetime | None = None

    @property
    def stale(self) -> bool:
        return (
            self.flag.kind in TEMPORARY_KINDS
            and self.last_change is not None
            and timezone.now() - self.last_change > STALE_AFTER
        )

    @property
    def stale_days(self) -> int:
        return (timezone.now() - self.last_change).days if self.last_change else 0

    @property
    def killed_anywhere(self) -> bool:
        return any(s.killed for s in self.states)


def latest_rules(flags: QuerySet | list[Flag]) -> dict[tuple[int, int], tuple[FlagRules, Any]]:
    """(flag id, environment id) → (head, latest version row as (number, content)), 2 queries."""
    flag_ids = [f.pk for f in flags]
    heads = {
        h.pk: h for h in FlagRules.objects.filter(flag_id__in=flag_ids).select_related("killed_by")
    }
    versions = FlagRulesVersion.objects.filter(
        head_id__in=list(heads), number=F("head__latest_number")
    ).values_list("head_id", "number", "content")
    by_head = {head_id: (number, content) for head_id, number, content in versions}
    return {
        (h.flag_id, h.environment_id): (h, by_head.get(h.pk, (0, None))) for h in heads.values()
    }


FLAGS_PER_PAGE = 50


def flag_rows(
    application: Application, *, q: str = "", kind: str = "", owner: str = "", page=None
) -> tuple[list[Environment], list[FlagRow], Page]:
    """The flag list: one page of flags with their state per environment, filtered. Killed
    switches come first, so an incident's cause is on the first page whatever the count."""
    envs = environments(application)
    flags = Flag.objects.filter(application=application).select_related("owner").order_by("key")
    if q:
        flags = flags.filter(Q(key__icontains=q) | Q(name__icontains=q))
    if kind:
        flags = flags.filter(kind=kind)
    if owner == "-":
        flags = flags.filter(owner__isnull=True)
    elif owner:
        flags = flags.filter(owner__username=owner)
    killed = FlagRules.objects.filter(flag=OuterRef("pk"), killed=True)
    flags = flags.annotate(any_killed=Exists(killed)).order_by("-any_killed", "key")
    page_obj = Paginator(flags, FLAGS_PER_PAGE).get_page(page)
    flags = list(page_obj.object_list)
    rules = latest_rules(flags)
    rows = []
    for flag in flags:
        row = FlagRow(flag=flag, last_change=flag.updated_at)
        for env in envs:
            head, (number, content) = rules.get((flag.pk, env.pk), (None, (0, None)))
            row.states.append(EnvState(env, head, content, number))
            for moment in (head.updated_at if head else None, head.killed_at if head else None):
                if moment and (row.last_change is None or moment > row.last_change):
                    row.last_change = moment
        rows.append(row)
    return envs, rows, page_obj


def flag_states(flag: Flag) -> list[EnvState]:
    rules = latest_rules([flag])
    states = []
    for env in environments(flag.application):
        head, (number, content) = rules.get((flag.pk, env.pk), (None, (0, None)))
        states.append(EnvState(env, head, content, number))
    return states


def owners(application: Application) -> list[str]:
    return sorted(
        {
            name
            for name in Flag.objects.filter(application=application, owner__isnull=False)
            .values_list("owner__username", flat=True)
            .distinct()
        }
    )


def rule_versions(head: FlagRules, limit: int = 100) -> list[FlagRulesVersion]:
    return list(
        FlagRulesVersion.objects.filter(head=head)
        .select_related("author")
        .order_by("-number")[:limit]
    )


@dataclass(frozen=True)
class EnvironmentFlags:
    """An environment's flags, as plain data: for the config snapshot and for evaluation."""

    definitions: dict[str, FlagDefinition]
    documents: dict[str, dict]  # the config snapshot's "flags" section
    references: set[tuple[str, str, int]]  # (kind, key, version) named by variants


def environment_flags(environment: Environment) -> EnvironmentFlags:
    """Read an environment's flags once (3 queries); everything after this is pure."""
    flags = list(Flag.objects.filter(application_id=environment.application_id).order_by("key"))
    heads = {
        h.flag_id: h
        for h in FlagRules.objects.filter(environment=environment).only(
            "pk", "flag_id", "latest_number", "killed"
        )
    }
    versions = dict(
        FlagRulesVersion.objects.filter(
            head__environment=environment, number=F("head__latest_number")
        ).values_list("head_id", "content")
    )
    definitions: dict[str, FlagDefinition] = {}
    documents: dict[str, dict] = {}
    references: set[tuple[str, str, int]] = set()
    for flag in flags:
        head = heads.get(flag.pk)
        content = versions.get(head.pk) if head else None
        if (content or {}).get("unreleased") or (content is None and environment.protected):
            continue  # not in this protected environment until a promotion brings it
        killed = bool(head and head.killed)
        number = head.latest_number if head else 0
        served = definition_in(content, flag)
        variants, off_variant = served["variants"], served["off_variant"]
        definitions[flag.key] = FlagDefinition.from_content(
            key=flag.key,
            flag_type=flag.flag_type,
            salt=flag.salt,
            variants=variants,
            off_variant=off_variant,
            rules_content=content,
            killed=killed,
            version=number,
            kind=served["kind"],
        )
        for variant in variants:
            ref = variant.get("ref")
            if ref:
                references.add((ref["kind"], ref["key"], ref["version"]))
        documents[flag.key] = {
            "type": flag.flag_type,
            "kind": served["kind"],
            "salt": flag.salt,
            "variants": variants,
            "off_variant": off_variant,
            "rules_version": number,
            "killed": killed,
            "enabled": bool(content and content.get("enabled")),
            "rules": (content or {}).get("rules", []),
            "default": (content or {}).get("default", {"variant": off_variant}),
        }
    return EnvironmentFlags(definitions, documents, references)
