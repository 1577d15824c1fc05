"""Release reads: the approver's inbox, a request's timeline and diff, environment history."""

from __future__ import annotations

from django.db.models import Count, F, Q, QuerySet

from console.accounts.roles import APPROVE
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


def inbox(application, user, perms: frozenset[str]) -> dict[str, list]:
    """Requests awaiting this user's decision, the user's own open requests, and recent ones."""
    open_requests = list(requests(application).filter(status__in=PromotionRequest.OPEN))
    decided = set(
        Approval.objects.filter(
            request__in=[r.pk for r in open_requests], approver=user
        ).values_list("request_id", "revision")
    )
    awaiting = [
        r
        for r in open_requests
        if APPROVE in perms
        and r.requested_by_id != user.pk
        and (r.pk, r.revision) not in decided
        and r.status == PromotionRequest.Status.PENDING
    ]
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
