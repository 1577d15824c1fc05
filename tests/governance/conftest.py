"""Governance sweep fixtures: the world built once per module inside a transaction rolled back
at the end (each test runs in a savepoint of it), runtime caches emptied before every read, and
the reader of what an environment serves."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

import pytest
from django.core.cache import caches
from django.test import Client

from console.api import auth as api_auth
from console.api import snapshot
from console.audit.models import AuditEvent
from console.celery import app as celery_app
from console.registry.models import Environment
from console.releases import policies
from tests.conftest import name_public_hosts, public_hosts, rolled_back_world
from tests.governance.world import World, build_world


@dataclass(frozen=True)
class Served:
    """What an environment serves: the exact `GET /api/v1/config` body, and the environment's
    own release policy (not part of the body, but the DESIGN's one door covers it too: a
    loosened policy lets the next change skip the door)."""

    body: bytes
    policy: dict

    def document(self) -> dict:
        return json.loads(self.body)


def read_served(world: World, env_key: str = "prod") -> Served:
    """Read the environment's config the way a production client does, with a runtime key,
    after dropping every per-process cache (the snapshot cache keeps a body up to a second)."""
    snapshot.forget_all()
    api_auth.forget_all()
    response = Client().get(
        "/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {world.secrets[f'observer-{env_key}']}"
    )
    assert response.status_code == 200, (response.status_code, response.content[:300])
    env = Environment.objects.get(pk=world.envs[env_key].pk)
    content, number = policies.current(env)
    return Served(body=response.content, policy={**content, "version": number})


def served_diff(before: Served, after: Served) -> str:
    """A unified diff of the two config bodies (pretty-printed) and of the two policies."""

    def lines(value) -> list[str]:
        return json.dumps(value, indent=2, sort_keys=True).splitlines()

    parts = []
    if before.body != after.body:
        paths = changed_paths(before.document(), after.document())
        parts.append("changed in the config: " + ", ".join(paths))
        parts += difflib.unified_diff(
            lines(before.document()), lines(after.document()),
            "config before", "config after", lineterm="", n=2,
        )  # fmt: skip
    if before.policy != after.policy:
        parts += difflib.unified_diff(
            lines(before.policy), lines(after.policy), "policy before", "policy after",
            lineterm="", n=0,
        )  # fmt: skip
    return "\n".join(parts)


def changed_paths(before, after, path: str = "") -> list[str]:
    """Dotted paths where two JSON documents differ, e.g. `flags.x.variants.1.value`."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            p
            for key in sorted(set(before) | set(after))
            for p in changed_paths(
                before.get(key, "<absent>"), after.get(key, "<absent>"), f"{path}{key}."
            )
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            p
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for p in changed_paths(b, a, f"{path}{i}.")
        ]
    return [] if before == after else [path.rstrip(".")]


def last_audit_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def audit_actions_since(seq: int) -> list[str]:
    return list(
        AuditEvent.objects.filter(seq__gt=seq).order_by("seq").values_list("action", flat=True)
    )


# The webhook receivers the world names (resolved from a table: no DNS query is sent).
PUBLIC_HOSTS = {"hooks.sweep-receiver.net": "93.184.216.34"}


@pytest.fixture(scope="module")
def shared_world(django_db_setup, django_db_blocker):
    """The world, built once for the module inside a transaction rolled back at the end;
    pytest-django runs each test in a savepoint inside it."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True  # last-used stamps run inline, never to a broker

    def build() -> World:
        with public_hosts(PUBLIC_HOSTS):
            return build_world()

    try:
        with rolled_back_world(django_db_blocker, build) as world:
            yield world
    finally:
        celery_app.conf.task_always_eager = eager


@pytest.fixture
def world(shared_world, db, settings, dns) -> World:
    name_public_hosts(settings, dns, PUBLIC_HOSTS)
    caches["default"].clear()
    api_auth.forget_all()
    snapshot.forget_all()
    return shared_world
