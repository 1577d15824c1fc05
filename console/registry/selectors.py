"""Registry reads shared by several views."""

from __future__ import annotations

from django.db.models import QuerySet

from console.registry.kinds import KINDS, Kind
from console.registry.models import Application, Environment


def environments(application: Application) -> list[Environment]:
    return list(application.environments.order_by("order", "key"))


def heads_with_bindings(kind: Kind, application: Application) -> list:
    """Every head of `kind` with `.live` = {environment_id: version number}, in two queries."""
    heads = list(kind.head.objects.filter(application=application).order_by("key"))
    bindings = kind.binding.objects.filter(head__application=application).values_list(
        "head_id", "environment_id", "version__number"
    )
    live: dict[int, dict[int, int]] = {}
    for head_id, env_id, number in bindings:
        live.setdefault(head_id, {})[env_id] = number
    for head in heads:
        head.live = live.get(head.pk, {})
    return heads


def dashboard(application: Application) -> dict:
    envs = environments(application)
    sections = []
    for kind in KINDS.values():
        heads = heads_with_bindings(kind, application)
        for head in heads:
            head.cells = [head.live.get(env.pk) for env in envs]
            head.drift = len({n for n in head.cells if n}) > 1
        sections.append({"kind": kind, "heads": heads})
    return {"environments": envs, "sections": sections}


def versions(kind: Kind, head) -> QuerySet:
    return kind.version.objects.filter(head=head).select_related("author").order_by("-number")


def head_bindings(kind: Kind, head) -> list[tuple[Environment, object]]:
    """(environment, binding or None) for every environment of the head's application."""
    by_env = {
        b.environment_id: b
        for b in kind.binding.objects.filter(head=head).select_related("version", "bound_by")
    }
    return [(env, by_env.get(env.pk)) for env in environments(head.application)]
