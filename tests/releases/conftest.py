"""Release fixtures: an application whose prod is protected (one approval, eval gate on the
"golden" set), a prompt with three versions (v1 live everywhere), people in every role, and
evidence built either as EvalRun rows or by a real run against the simulator."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone

from console.accounts.roles import Role
from console.api import auth, snapshot
from console.celery import app as celery_app
from console.datasets.demo import items as demo_items
from console.evals.models import EvalRun
from console.registry import services as registry
from console.releases import policies
from tests.evals.helpers import publish_items
from tests.factories import make_model_config, make_prompt

_fingerprints = itertools.count(1)


def content(n: int) -> dict:
    return {
        "system": f"Answer v{n}.\nContext:\n{{{{ context }}}}",
        "user": "{{ question }}",
        "variables": ["context", "question"],
        "params": {"top_k": n},
    }


@dataclass
class World:
    application: object
    envs: dict
    users: dict
    prompt: object
    versions: dict  # number → PromptVersion
    model: object
    dataset: object
    dataset_version: object

    @property
    def prod(self):
        return self.envs["prod"]

    def live(self, env: str = "prod") -> int | None:
        binding = self.prompt.bindings.filter(environment=self.envs[env]).first()
        return binding.version.number if binding else None

    def passing_run(self, number: int, verdict: str = EvalRun.Verdict.PASSED, **extra) -> EvalRun:
        """A completed run of prompt v`number` on the golden set's latest version (or on the
        `dataset_version` given)."""
        version = self.versions[number]
        return EvalRun.objects.create(
            application=self.application,
            target_type=EvalRun.Target.PROMPT_MODEL,
            prompt_version=version,
            model_version=self.model.versions.get(number=1),
            dataset_version=extra.pop("dataset_version", self.dataset_version),
            fingerprint=f"fp-{next(_fingerprints)}",
            label=f"answer@{number} on golden@1",
            status=EvalRun.Status.COMPLETED,
            verdict=verdict,
            verdict_detail={"gates": [], "reason": "all gates met" if verdict == "passed" else ""},
            metrics={
                "items": 3,
                "errors": 0,
                "error_rate": 0.0,
                "pass_rate": 1.0 if verdict == EvalRun.Verdict.PASSED else 0.34,
                "cost_model": 0.003,
                **extra.pop("metrics", {}),
            },
            created_by=self.users["engineer"],
            finished_at=timezone.now(),
            **extra,
        )


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Test users get a cheap password hash (PBKDF2 would cost ~0.5 s per user)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_runtime_state():
    """Empty runtime caches; Celery tasks (API key last-used stamps) run inline."""
    auth.forget_all()
    snapshot.forget_all()
    caches["default"].clear()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager
    auth.forget_all()
    snapshot.forget_all()


@pytest.fixture
def world(application, member) -> World:
    users = {
        "engineer": member(Role.ENGINEER, "eng"),
        "engineer2": member(Role.ENGINEER, "eng2"),
        "approver": member(Role.APPROVER, "appr"),
        "approver2": member(Role.APPROVER, "appr2"),
        "admin": member(Role.ADMIN, "adm"),
        "viewer": member(Role.VIEWER, "view"),
        "curator": member(Role.CURATOR, "cur"),
    }
    for name, user in users.items():
        user.email = f"{name}@example.com"
        user.save()
    engineer = users["engineer"]
    prompt = make_prompt(application, engineer, key="answer", content=content(1))
    for n in (2, 3):
        registry.save_head_version(
            actor=engineer, head=prompt, content=content(n), base_number=n - 1
        )
    model = make_model_config(application, engineer, key="main")
    envs = {e.key: e for e in application.environments.all()}
    for env in envs.values():
        for version in (prompt.versions.get(number=1), model.versions.get(number=1)):
            registry.bind_version(
                actor=engineer, environment=env, version=version, via_promotion=env.protected
            )
    dataset, dataset_version = publish_items(
        application, users["curator"], "golden", demo_items()[:3]
    )
    with transaction.atomic():
        policies.apply_content(
            actor=users["admin"],
            environment=envs["prod"],
            content=policies.clean(
                envs["prod"],
                {
                    **policies.current(envs["prod"])[0],
                    "datasets": [dataset.key],
                    "gates": [{"metric": "pass_rate", "op": ">=", "threshold": 0.8}],
                },
            ),
            message="test policy",
            number=0,
        )
    world = World(
        application=application,
        envs=envs,
        users=users,
        prompt=prompt,
        versions={v.number: v for v in prompt.versions.all()},
        model=model,
        dataset=dataset,
        dataset_version=dataset_version,
    )
    world.passing_run(1)  # the baseline: what prod serves now, on the policy's golden set
    return world
