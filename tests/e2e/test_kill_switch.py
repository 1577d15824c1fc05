"""An incident, in real Chromium: an engineer kills `answers-enabled` in protected prod with a
reason (confirm step included), sees it in the flag list and in the audit log, and the runtime
API serves the off variant at once."""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from console.accounts import keys
from console.flags.demo import seed_flags
from console.registry.models import Application
from tests.e2e.conftest import log_in
from tests.simulator_port import simulator_port

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.e2e

APP = "support-bot"
REASON = "Answers quote the old refund policy (incident 412)"


def seed() -> Application:
    with simulator_port():  # seed_demo may serve 127.0.0.1:8100
        call_command("seed_demo", verbosity=0)
    application = Application.objects.get(key=APP)
    users = {
        u.username: u for u in get_user_model().objects.filter(username__in=["engineer", "admin"])
    }
    seed_flags(application, users)
    return application


def test_engineer_kills_a_switch_in_prod_with_a_reason(new_page, artifacts, live_server):
    application = seed()
    secret = keys.create_api_key(
        actor=None, environment=application.environments.get(key="prod"), name="e2e"
    ).secret
    page = new_page()
    log_in(page, "engineer")

    page.goto(f"/apps/{APP}/flags/")
    row = page.locator("tr[data-flag='answers-enabled']")
    expect(row.locator("td.env-cell").nth(2)).to_contain_text("On")

    row.get_by_role("link", name="answers-enabled").click()
    prod = page.locator("#env-prod")
    expect(prod).to_contain_text("protected")

    # The big control opens a confirm step; the reason is required.
    prod.get_by_text("Kill switch…").click()
    confirm = prod.get_by_role("button", name="Kill answers-enabled in prod now")
    expect(confirm).to_be_visible()
    page.screenshot(path=artifacts / "kill-confirm.png", full_page=True)
    confirm.click()  # an empty reason: the browser refuses to submit
    expect(page).to_have_url(re.compile(r"/flags/answers-enabled/$"))
    prod.get_by_label(re.compile("Why kill it")).fill(REASON)
    confirm.click()

    expect(page.locator(".flashes .flash")).to_contain_text("Killed answers-enabled in prod")
    prod = page.locator("#env-prod")
    expect(prod).to_contain_text("Killed")
    expect(prod).to_contain_text("by engineer")
    page.screenshot(path=artifacts / "kill-detail.png", full_page=True)

    # The list shows where, by whom and since when, at a glance.
    page.goto(f"/apps/{APP}/flags/")
    cell = page.locator("tr[data-flag='answers-enabled'] td.env-cell").nth(2)
    expect(cell).to_contain_text("Killed")
    expect(cell).to_contain_text("by engineer")
    expect(cell).to_contain_text("just now")
    expect(cell).to_contain_text("old refund policy")
    expect(page.locator("tr[data-flag='answers-enabled'] td.env-cell").nth(0)).to_contain_text("On")
    page.screenshot(path=artifacts / "kill-list.png", full_page=True)

    # The runtime API serves the off variant straight away.
    response = page.request.post(
        f"{live_server.url}/ofrep/v1/evaluate/flags/answers-enabled",
        data='{"context": {"targetingKey": "user-1"}}',
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    assert response.status == 200
    assert response.json()["value"] is False and response.json()["reason"] == "DISABLED"

    # The audit log has the event with its reason.
    page.goto(f"/audit/?application={APP}&action=flag.kill")
    results = page.locator("#results")
    expect(results).to_contain_text("flag.kill")
    expect(results).to_contain_text("answers-enabled in prod")
    expect(results).to_contain_text(REASON)
    page.screenshot(path=artifacts / "kill-audit.png", full_page=True)
    assert page.js_errors == []
