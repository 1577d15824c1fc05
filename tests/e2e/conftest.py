"""Browser journeys: real Chromium (Debian's, never a downloaded one) driven by Playwright.

The browser talks to pytest-django's `live_server` (a real HTTP server in a thread, with a
transactional database). Chromium comes from AIRLOCK_CHROMIUM (default /usr/bin/chromium); when
it is missing the journeys skip with the reason, or fail when AIRLOCK_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test thread; Django would then refuse ORM
# calls made by the test itself (seeding, assertions) with SynchronousOnlyOperation.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DEMO_PASSWORD = "airlock-demo"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 900}


def chromium_path() -> str | None:
    configured = os.environ.get("AIRLOCK_CHROMIUM", "/usr/bin/chromium")
    if os.path.isfile(configured) and os.access(configured, os.X_OK):
        return configured
    return shutil.which(configured)


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


@pytest.fixture
def new_page(browser, live_server) -> Iterator[Callable]:
    """new_page() → a page in a fresh browser context (its own cookies), closed after the test."""
    contexts = []

    def make():
        context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        return page

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
