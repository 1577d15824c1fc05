"""Sample fixtures: API keys with the samples:write scope, fresh runtime caches, and a judge
(model config and prompts) pointing at the bundled simulator."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import caches
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.api import auth
from console.evals import demo as evals_demo
from console.ops.management.commands.seed_demo import model
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG, PROMPT
from console.samples import partitions, services

SAMPLES = "/api/v1/samples"


@pytest.fixture(autouse=True)
def fresh_runtime_state(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    auth.forget_all()
    caches["default"].clear()
    partitions.forget()
    yield
    auth.forget_all()
    partitions.forget()


@pytest.fixture
def issue(application):
    """issue(env_key="prod", scopes=[samples:write]) → the key's secret."""

    def make(env_key: str = "prod", scopes=None):
        return keys.create_api_key(
            actor=None,
            environment=application.environments.get(key=env_key),
            name=f"{env_key}-samples",
            scopes=scopes if scopes is not None else [ApiKeyScope.SAMPLES_WRITE],
        ).secret

    return make


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def sample(sample_id: str, /, minutes_ago: float = 5, **fields) -> dict:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    body = {
        "sample_id": sample_id,
        "time": at.isoformat(),
        "inputs": {"question": f"How do I reset my password? ({sample_id})"},
        "output": "Open Settings, then Security, then Reset password [kb-12].",
        "context": ["Passwords are reset from Settings > Security [kb-12]."],
        "sources": ["kb-12"],
        "prompt_version": "answer-question@3",
        "model_config": "default@1",
    }
    body.update(fields)
    return body


@pytest.fixture
def judge_policy(application, engineer, simulator_url):
    """The application's sample policy with the demo's judge on the simulator, judging every
    sample, within $5 a day."""
    judge = model("gpt-4o", 2.50, 1.25, 10.00, temperature=0.0)
    judge["base_url"] = simulator_url
    judge_version = registry.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=application, key="judge", name="Judge",
        content=judge,
    ).version  # fmt: skip
    prompts = {
        metric: registry.create_head(
            actor=engineer,
            kind=PROMPT,
            application=application,
            key=f"judge-{metric}",
            name=f"Judge {metric}",
            content=content,
        ).version
        for metric, content in (
            ("faithfulness", evals_demo.JUDGE_FAITHFULNESS),
            ("relevance", evals_demo.JUDGE_RELEVANCE),
        )
    }
    return services.update_policy(
        actor=engineer,
        application=application,
        revision=0,
        redact_kinds=["email", "phone", "card", "iban", "ssn"],
        redact_patterns="",
        judge_rate=1.0,
        judge_daily_cap=Decimal("5.00"),
        judge_model=judge_version,
        judge_prompts=prompts,
    )
