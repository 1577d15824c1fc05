"""Usage fixtures: fresh per-process runtime caches and API keys built the way the console
builds them."""

from __future__ import annotations

import pytest
from django.core.cache import caches

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.api import auth
from console.celery import app as celery_app


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Test users get a cheap password hash (PBKDF2 would cost ~0.5 s per user)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_runtime_state():
    """Empty key caches and rate-limit windows; Celery tasks (last-used stamps) run inline."""
    auth.forget_all()
    caches["default"].clear()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager
    auth.forget_all()


@pytest.fixture
def issue(application):
    """issue(env_key="prod", scopes=[usage:write]) → the key's secret."""

    def make(env_key: str = "prod", scopes=None):
        issued = keys.create_api_key(
            actor=None,
            environment=application.environments.get(key=env_key),
            name=f"{env_key}-usage",
            scopes=scopes if scopes is not None else [ApiKeyScope.USAGE_WRITE],
        )
        return issued.secret

    return make
