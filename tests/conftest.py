"""Shared fixtures: real services when present, clear skips (or failures in CI) when not."""

from __future__ import annotations

import contextlib
import os
import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connection

from console.accounts.roles import Role
from tests.factories import make_application, make_member


def _reachable(url: str, default_port: int) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def need(condition: bool, reason: str) -> None:
    """Skip when a real service is missing, or fail when AIRLOCK_REQUIRE_SERVICES=1."""
    if condition:
        return
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty shared cache: rate-limit counters, login throttles and
    once-per-period markers from an earlier test (or run) must not leak into the next."""
    from django.core.cache import cache

    cache.clear()


# The bundled simulator's address the factories' model configs point at (console.config).
SIMULATOR = "127.0.0.1:8100"


@pytest.fixture(autouse=True)
def egress_allow(settings):
    """Every test starts with an explicit allowlist: only the simulator's address. Tests that
    start a loopback listener add its host:port (see allow_loopback); nothing else is allowed."""
    settings.AIRLOCK_EGRESS_ALLOW = [SIMULATOR]
    settings.AIRLOCK_PROVIDER_KEYS = {}
    return settings


@pytest.fixture
def allow_loopback(settings, monkeypatch):
    """allow_loopback(port) adds 127.0.0.1:port to the allowlist of this process and of the
    processes the test starts after it (workers read AIRLOCK_EGRESS_ALLOW)."""

    def allow(port: int) -> str:
        entry = f"127.0.0.1:{port}"
        settings.AIRLOCK_EGRESS_ALLOW = [*settings.AIRLOCK_EGRESS_ALLOW, entry]
        monkeypatch.setenv("AIRLOCK_EGRESS_ALLOW", ",".join(settings.AIRLOCK_EGRESS_ALLOW))
        return entry

    return allow


@pytest.fixture
def simulator_url(allow_loopback):
    """The bundled OpenAI-compatible simulator on a free loopback port, for this test."""
    from console.evals.simulator import serve_in_thread

    server, base_url = serve_in_thread(0)
    allow_loopback(server.server_address[1])
    yield base_url
    server.shutdown()
    server.server_close()


@contextlib.contextmanager
def public_hosts(names: dict[str, str], also: tuple[str, ...] = ()):
    """For worlds built once per module (before the per-test fixtures apply): let the egress
    guard resolve `names` ({name: public address}) and allow them, without any DNS query."""
    from django.test import override_settings

    from console.core import egress

    real = egress.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        address = names.get(str(host).lower().rstrip("."))
        if address is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    egress.getaddrinfo = getaddrinfo
    try:
        with override_settings(AIRLOCK_EGRESS_ALLOW=[SIMULATOR, *names, *also]):
            yield
    finally:
        egress.getaddrinfo = real


@contextlib.contextmanager
def rolled_back_world(django_db_blocker, build):
    """For module-scoped worlds: `build()` inside a transaction rolled back when the module is
    done; pytest-django runs each test in a savepoint inside it, so every test sees exactly
    the state `build` left."""
    from django.db import transaction

    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            world = build()
        except BaseException:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
            raise
    try:
        yield world
    finally:
        with django_db_blocker.unblock():
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


def name_public_hosts(settings, dns, names: dict[str, str], *also: str) -> None:
    """Per test: the guard resolves `names` from the test's table and allows them (and `also`)."""
    for name, address in names.items():
        dns[name] = [address]
    settings.AIRLOCK_EGRESS_ALLOW = [*settings.AIRLOCK_EGRESS_ALLOW, *names, *also]


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    """No test sends a DNS query: the guard's resolver answers from this table ({name: [ip]})
    and "localhost"; any other name does not resolve."""
    from console.core import egress

    table: dict[str, list[str]] = {"localhost": ["127.0.0.1"]}

    def getaddrinfo(host, port, *args, **kwargs):
        addresses = table.get(str(host).lower().rstrip("."))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(egress, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def postgres(db):
    need(connection.vendor == "postgresql", "needs PostgreSQL (set DATABASE_URL=postgres://...)")
    return connection


@pytest.fixture
def postgres_tx(transactional_db):
    need(connection.vendor == "postgresql", "needs PostgreSQL (set DATABASE_URL=postgres://...)")
    return connection


@pytest.fixture
def redis_url():
    url = settings.CELERY_BROKER_URL
    need(
        url.startswith("redis") and _reachable(url, 6379),
        "needs Redis as the broker (set CELERY_BROKER_URL=redis://...)",
    )
    return url


@pytest.fixture
def application(db):
    return make_application()


@pytest.fixture
def member(application):
    """member(role) → a user holding `role` in the `application` fixture."""

    def make(role: str = Role.ENGINEER, username: str | None = None):
        return make_member(application, role, username)

    return make


@pytest.fixture
def engineer(member):
    return member(Role.ENGINEER, "eng")


@pytest.fixture
def engineer_client(client, engineer):
    client.force_login(engineer)
    return client


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Fault and soak runs (marked slow) take minutes: CI runs them (AIRLOCK_REQUIRE_SERVICES=1),
    a laptop's `make test` does only when asked (AIRLOCK_RUN_SLOW=1).

    They come first: parallel workers (`make test`) take modules in this order, so the fault
    run's and the soak's minutes overlap the rest instead of ending the run alone. (After
    pytest-django's own ordering, hence trylast; they use private deployments, not the test
    database, so its database-test order is kept.)"""
    items.sort(key=lambda item: "slow" not in item.keywords)
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1" or os.environ.get("AIRLOCK_RUN_SLOW"):
        return
    skip = pytest.mark.skip(reason="fault/soak run: set AIRLOCK_RUN_SLOW=1 (CI always runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
