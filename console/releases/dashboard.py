"""The release side of an application's dashboard: per environment, the kill switches that are
on, the staged rollouts under way and the shadows running; and the promotion requests waiting
for the viewer's decision. Registered with console.registry.dashboard in ReleasesConfig.ready."""

from __future__ import annotations

from django.http import HttpRequest

from console.accounts.roles import ADMIN, APPROVE
from console.flags.models import FlagRules
from console.registry.models import Application
from console.releases.models import Rollout, ShadowDeployment
from console.releases.selectors import awaiting_decision


def operations(request: HttpRequest, application: Application) -> dict:
    """Five queries whatever the numbers: environments, killed switches, active rollouts,
    active shadows, and (for approvers) pending requests plus their own decisions."""
    environments = list(application.environments.order_by("order", "key"))
    killed = list(
        FlagRules.objects.filter(flag__application=application, killed=True)
        .select_related("flag")
        .order_by("-killed_at")
    )
    rollouts = list(
        Rollout.objects.filter(request__application=application, status__in=Rollout.ACTIVE)
        .select_related(
            "request__environment",
            "request__prompt_version__head",
            "request__model_version__head",
        )
        .order_by("-created_at")
    )
    shadows = list(
        ShadowDeployment.objects.filter(environment__application=application, active=True)
        .select_related("prompt_version__head", "model_version__head", "created_by")
        .order_by("-created_at")
    )
    by_env = {
        env.pk: {"environment": env, "killed": [], "rollouts": [], "shadows": []}
        for env in environments
    }
    for rules in killed:
        by_env[rules.environment_id]["killed"].append(rules)
    for rollout in rollouts:
        by_env[rollout.request.environment_id]["rollouts"].append(rollout)
    for shadow in shadows:
        by_env[shadow.environment_id]["shadows"].append(shadow)
    perms = getattr(request, "app_perms", frozenset())
    return {
        "operations": list(by_env.values()),
        "operations_count": len(killed) + len(rollouts) + len(shadows),
        "awaiting_me": awaiting_decision(application, request.user, perms),
        "may_decide": bool(perms & {APPROVE, ADMIN}),
    }
