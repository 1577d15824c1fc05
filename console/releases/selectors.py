"""Release reads: the approver's inbox, a request's timeline and diff, environment history."""

from __future__ import annotations

from django.db.models import Count, F, Q, QuerySet

from console.accounts.roles import ADMIN, APPROVE
from console.audit.models import AuditEvent
from console.core.diff import diff_contents
from console.releases import services
from console.releases.models import Approval, PromotionRequest, Rollout

RELATED = (
    "environment",
    "application",
    "requested_by",
    "prompt_version__head",
    "model_version__head",
    "flag_version__head__flag",
)


def requests(application) -> QuerySet:
    return PromotionRequest.objects.filter(application=application).select_related(*RELATED)


def awaiting_decision(
    application, user, perms: frozenset[str], open_requests: list | None = None
) -> list[PromotionRequest]:
    """Open requests this user may decide on now: pending, not their own, not yet decided by
    them on this revision, and within their role (a policy change needs an admin, anything else
    an approver). Two queries; `open_requests` saves the first when the caller has them."""
    if APPROVE not in perms and ADMIN not in perms:
        return []
    if open_requests is None:
        open_requests = list(
            requests(application)
            .filter(status=PromotionRequest.Status.PENDING)
            .exclude(requested_by=user)
        )
    decided = set(
        Approval.objects.filter(
            request__in=[r.pk for r in open_requests], approver=user
        ).values_list("request_id", "revision")
    )
    return [
        r
        for r in open_requests
        if (ADMIN if r.kind == PromotionRequest.Kind.POLICY else APPROVE) in perms
        and r.requested_by_id != user.pk
        and (r.pk, r.revision) not in decided
        and r.status == PromotionRequest.Status.PENDING
    ]


def inbox(application, user, perms: frozenset[str]) -> dict[str, list]:
    """Requests awaiting this user's decision, the user's own open requests, and recent ones."""
    open_requests = list(requests(application).filter(status__in=PromotionRequest.OPEN))
    awaiting = awaiting_decision(application, user, perms, open_requests)
    mine = [r for r in open_requests if r.requested_by_id == user.pk]
    counts = dict(
        Approval.objects.filter(
            request__in=[r.pk for r in open_requests],
            decision=Approval.Decision.APPROVE,
            revision=F("request__revision"),  # approvals of an edited request no longer count
        )
        .values_list("request_id")
        .annotate(n=Count("id"))
    )
    for r in open_requests:
        r.approval_count = counts.get(r.pk, 0)
    recent = list(requests(application).exclude(status__in=PromotionRequest.OPEN)[:20])
    return {"awaiting": awaiting, "mine": mine, "recent": recent, "open": open_requests}


def timeline(request: PromotionRequest) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            object_type="promotionrequest", object_id=str(request.pk)
        ).order_by("seq")
    )


def version_diff(request: PromotionRequest):
    live = services.live_version(request.kind, request.version, request.environment)
    return live, diff_contents(live.content if live else {}, request.version.content)


def environment_history(environment, limit: int = 200) -> list[AuditEvent]:
    """What went live when, who asked and who approved: binding, rules and promotion events."""
    return list(
        AuditEvent.objects.filter(environment=environment)
        .filter(
            Q(action__endswith=".bind")
            | Q(action__startswith="promotion.")
            | Q(action__startswith="flag.")
            | Q(action__startswith="shadow.")
        )
        .order_by("-seq")[:limit]
    )


def active_rollouts(application) -> list[Rollout]:
    return list(
        Rollout.objects.filter(request__application=application)
        .select_related(
            "request__environment",
            "request__requested_by",
            "flag",
            "request__prompt_version__head",
            "request__model_version__head",
        )
        .order_by("-created_at")[:50]
    )


def choices(application) -> dict:
    """What can be requested where: protected environments, and the newest versions of
    prompts, model configs and flag rule sets to pick from (a handful of queries)."""
    from console.flags.models import FlagRules
    from console.registry.models import ModelConfig, Prompt

    protected = list(application.environments.filter(protected=True).order_by("order"))
    rule_sets = (
        FlagRules.objects.filter(flag__application=application, environment__protected=False)
        .select_related("flag", "environment")
        .order_by("flag__key", "environment__order")
    )
    return {
        "protected": protected,
        "prompts": list(Prompt.objects.filter(application=application).order_by("key")),
        "models": list(ModelConfig.objects.filter(application=application).order_by("key")),
        "rule_sets": list(rule_sets),
    }


def paired_choices(application, kind: str) -> list[str]:
    """`key@N` of every version that can be the other half of a bundle (newest first)."""
    from console.registry.models import ModelConfigVersion, PromptVersion

    if kind not in ("prompt", "model_config"):
        return []
    model = ModelConfigVersion if kind == "prompt" else PromptVersion
    rows = (
        model.objects.filter(head__application=application)
        .order_by("head__key", "-number")
        .values_list("head__key", "number")[:200]
    )
    return [f"{key}@{number}" for key, number in rows]


def rules_change(live, version) -> dict:
    """Flag rules before and after, as rules (not JSON), and the rules that disappear."""
    before = (live.content if live else {}) or {}
    after = version.content or {}
    names_after = {r.get("name") for r in after.get("rules", [])}
    return {
        "before": before,
        "after": after,
        "removed": [r for r in before.get("rules", []) if r.get("name") not in names_after],
        "definition_changed": before.get("definition") != after.get("definition"),
    }


def policy_versions(environment, limit: int = 20) -> list:
    from console.releases.models import ReleasePolicyVersion

    return list(
        ReleasePolicyVersion.objects.filter(head__environment=environment)
        .select_related("author")
        .order_by("-number")[:limit]
    )


def open_policy_request(environment) -> PromotionRequest | None:
    return PromotionRequest.objects.filter(
        environment=environment, subject="policy", status__in=PromotionRequest.OPEN
    ).first()
