"""Build test data in code, through the same services the console uses."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model

from console.accounts.services import grant_role
from console.audit.services import SYSTEM
from console.registry import services
from console.registry.kinds import MODEL_CONFIG, PROMPT

_seq = itertools.count(1)

PROMPT_CONTENT = {
    "system": "You answer questions for Acme.\nContext:\n{{ context }}",
    "user": "{{ question }}",
    "variables": ["context", "question"],
    "params": {"top_k": 5},
}

MODEL_CONTENT = {
    "provider": "openai-compatible",
    "base_url": "http://127.0.0.1:8100/v1",
    "model": "gpt-4o-mini",
    "api_key_env": "",  # the simulator needs no key
    "temperature": 0.2,
    "max_tokens": 256,
    "timeout_s": 10,
    "max_retries": 2,
    "max_concurrency": 4,
    "price_input_per_1m": 0.15,
    "price_cached_input_per_1m": 0.075,
    "price_output_per_1m": 0.6,
}


def make_user(username: str | None = None, password: str = "pw-test-12345"):
    user = get_user_model().objects.create_user(
        username=username or f"user{next(_seq)}", password=password
    )
    return user


def make_application(key: str | None = None):
    key = key or f"app-{next(_seq)}"
    return services.create_application(
        actor=SYSTEM,
        key=key,
        name=key.replace("-", " ").title(),
        environments=[
            {"key": "dev", "name": "dev"},
            {"key": "staging", "name": "staging"},
            {"key": "prod", "name": "prod", "protected": True, "required_approvals": 1,
             "eval_gate_required": True},
        ],
    )  # fmt: skip


def make_member(application, role: str, username: str | None = None):
    user = make_user(username)
    grant_role(actor=SYSTEM, user=user, application=application, role=role)
    return user


def make_prompt(application, author, key: str = "answer", content: dict | None = None):
    return services.create_head(
        actor=author, kind=PROMPT, application=application, key=key, name=key.title(),
        content=content or PROMPT_CONTENT,
    ).version.head  # fmt: skip


def make_model_config(application, author, key: str = "main", content: dict | None = None):
    return services.create_head(
        actor=author, kind=MODEL_CONFIG, application=application, key=key, name=key.title(),
        content=content or MODEL_CONTENT,
    ).version.head  # fmt: skip
