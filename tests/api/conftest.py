"""Runtime API fixtures: keys per environment, fresh caches, Celery tasks run inline."""

from __future__ import annotations

import time

import pytest
from django.core.cache import caches

from console.accounts import keys
from console.api import auth, snapshot
from console.celery import app as celery_app
from console.flags.models import FlagKind, FlagType
from tests.factories import make_model_config, make_prompt
from tests.flags.helpers import CANARY_VARIANTS, make_flag, on, set_rules, split


@pytest.fixture(autouse=True)
def fresh_runtime_state():
    """Each test starts with empty per-process caches and runs the last-used task inline."""
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
def issue(application):
    """issue(env_key="prod", scopes=None, rate=None) → (ApiKey, secret)."""

    def make(env_key: str = "prod", scopes=None, rate=None, app=None):
        if rate is not None:
            clear_of_a_window_edge()
        environment = (app or application).environments.get(key=env_key)
        issued = keys.create_api_key(
            actor=None,
            environment=environment,
            name=f"{env_key}-key",
            scopes=scopes,
            rate_limit_per_minute=rate,
        )
        return issued.api_key, issued.secret

    return make


def clear_of_a_window_edge(margin_s: float = 10.0) -> None:
    """Rate limits count calls per clock minute (auth.RATE_WINDOW_SECONDS): a test that counts
    calls against a limit starts at least `margin_s` before the next minute begins, so that its
    calls all fall in one window (a window turning over mid-test let a fourth call of three
    through in one CI run)."""
    into = time.time() % auth.RATE_WINDOW_SECONDS
    if into > auth.RATE_WINDOW_SECONDS - margin_s:
        time.sleep(auth.RATE_WINDOW_SECONDS - into + 0.05)


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@pytest.fixture
def live_app(application, engineer):
    """An application with a live prompt and model in every environment and three flags."""
    from console.registry import services as registry

    prompt = make_prompt(application, engineer, key="answer")
    registry.save_head_version(
        actor=engineer,
        head=prompt,
        content={
            "system": "v2 {{ context }}",
            "user": "{{ question }}",
            "variables": ["context", "question"],
            "params": {"top_k": 3},
        },
        base_number=1,
    )
    model = make_model_config(application, engineer, key="main")
    for env in application.environments.all():
        registry.bind_version(
            actor=engineer,
            environment=env,
            version=prompt.versions.get(number=1),
            via_promotion=env.protected,
        )
        registry.bind_version(
            actor=engineer,
            environment=env,
            version=model.versions.get(number=1),
            via_promotion=env.protected,
        )
    switch = make_flag(application, engineer, "answers-enabled", kind=FlagKind.KILL_SWITCH)
    variants = [
        dict(CANARY_VARIANTS[0], ref={"kind": "prompt", "key": "answer", "version": 1}),
        dict(CANARY_VARIANTS[1], ref={"kind": "prompt", "key": "answer", "version": 2}),
    ]
    canary = make_flag(
        application,
        engineer,
        "support-prompt",
        flag_type=FlagType.STRING,
        kind=FlagKind.EXPERIMENT,
        variants=variants,
        off_variant="stable",
    )
    docs = make_flag(
        application,
        engineer,
        "max-docs",
        flag_type=FlagType.NUMBER,
        kind=FlagKind.OPERATIONAL,
        variants=[{"key": "five", "value": 5}, {"key": "three", "value": 3}],
        off_variant="five",
    )
    for env in ("dev", "staging", "prod"):
        set_rules(switch, env, on("on"), engineer)
    staff = [
        {
            "name": "Staff",
            "conditions": [{"attribute": "email", "operator": "ends_with", "value": "@acme.com"}],
            "serve": {"variant": "canary"},
        }
    ]
    set_rules(canary, "prod", split(("stable", 75), ("canary", 25), rules=staff), engineer)
    set_rules(docs, "prod", on("three"), engineer)
    return {"switch": switch, "canary": canary, "docs": docs, "prompt": prompt, "model": model}
