"""Browser journeys: real Chromium (Debian's, never a downloaded one) driven by Playwright.

The browser talks to pytest-django's `live_server` (a real HTTP server in a thread, with a
transactional database). Chromium comes from AIRLOCK_CHROMIUM (default /usr/bin/chromium); when
it is missing the journeys skip with the reason, or fail when AIRLOCK_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test thread; Django would then refuse ORM
# calls made by the test itself (seeding, assertions) with SynchronousOnlyOperation.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

from console.ops.pageload import CHROMIUM_ARGS, VIEWPORT, chromium_path
from tests.conftest import SIMULATOR, _reachable, need
from tests.simulator_port import simulator_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DEMO_PASSWORD = "airlock-demo"


@pytest.fixture(scope="session")
def browser() -> Iterator:
    path = chromium_path()
    need(
        path is not None,
        f"needs Chromium at {os.environ.get('AIRLOCK_CHROMIUM', '/usr/bin/chromium')} "
        "(apt-get install chromium, or set AIRLOCK_CHROMIUM)",
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - dev extra not installed
        need(False, "needs the playwright Python package (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _pages(browser, base_url: str, timeout_ms: int) -> tuple[Callable, list]:
    """make() → a page on `base_url` in a fresh browser context (its own cookies) that records
    the page's JavaScript errors in `page.js_errors`; the list holds the contexts to close."""
    contexts: list = []

    def make():
        context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
        context.set_default_timeout(timeout_ms)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        return page

    return make, contexts


@pytest.fixture
def new_page(browser, live_server) -> Iterator[Callable]:
    """new_page() → a page in a fresh browser context (its own cookies), closed after the test."""
    make, contexts = _pages(browser, live_server.url, 10_000)
    yield make
    for context in contexts:
        context.close()


def log_in(page, username: str, password: str = DEMO_PASSWORD) -> None:
    """Sign in through the login form, the way a person does."""
    page.goto("/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/accounts/login" not in url)


@pytest.fixture(scope="module")
def production_web(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """bin/web (gunicorn, DEBUG=0) on the test database with the demo seeded, ONE per module:
    the module's tests share it. The demo is committed (the server is another process), so the
    test database is emptied when the module is done, as a transactional test would leave it.
    The web process publishes eval runs to the dedicated worker Redis db (tests/evals/workers).
    Every test using it takes `production_db` (directly or through `production_page`)."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import override_settings

    from tests.deploy.test_processes import production_environment, running_web
    from tests.evals.workers import dedicated_broker_url

    broker = settings.CELERY_BROKER_URL
    need(
        broker.startswith("redis") and _reachable(broker, 6379),
        "needs Redis as the broker (set CELERY_BROKER_URL=redis://...)",
    )
    with django_db_blocker.unblock():
        need(
            connection.vendor == "postgresql", "needs PostgreSQL (set DATABASE_URL=postgres://...)"
        )
        # seed_demo may serve 127.0.0.1:8100 while it seeds: take turns with other workers.
        with override_settings(AIRLOCK_EGRESS_ALLOW=[SIMULATOR]), simulator_port():
            call_command("seed_demo", stdout=(seeded := io.StringIO()))
        # The pages under test assume the whole demo: say why seeding left part of it out.
        assert "not opened" not in seeded.getvalue(), seeded.getvalue()
    data_dir = tmp_path_factory.mktemp("production-web")
    env = {
        **production_environment(broker, data_dir),
        "CELERY_BROKER_URL": dedicated_broker_url(broker),
    }
    try:
        with running_web(env) as base:
            yield base
    finally:
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def production_db(production_web, db) -> None:
    """ORM access from the test to the database `production_web` serves: the test's own writes
    are rolled back, it reads what the demo and the server committed. (Asking for `db` is also
    what makes pytest-django create the test database at all.)"""


@pytest.fixture
def production_page(browser, production_web, production_db) -> Iterator[Callable]:
    """production_page() → a page on `production_web` in a fresh context (its own cookies)."""
    make, contexts = _pages(browser, production_web, 15_000)
    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def production_worker(production_web, production_db, redis_url, tmp_path):
    """production_worker(name) → a real Celery worker on the Redis db bin/web publishes eval
    runs to, stopped after the test."""
    import redis

    from tests.evals.workers import dedicated_broker_url, workers

    broker = dedicated_broker_url(redis_url)
    redis.Redis.from_url(broker).flushdb()
    with workers(broker, tmp_path) as start:
        yield start


class Steps:
    """Numbered screenshots of one journey: test-artifacts/<journey>/NN-step.png."""

    def __init__(self, root: Path, journey: str):
        self.folder = root / journey
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.count = 0

    def shot(self, page, step: str, **options) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        page.screenshot(path=path, **({"full_page": True} | options))
        return path
