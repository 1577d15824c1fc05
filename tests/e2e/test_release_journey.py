"""A promotion into protected prod, in real Chromium: the engineer requests answer-question v3
(it passed its eval on support-golden@1), the approver finds it in the Releases inbox, opens the
evidence and approves, the engineer applies — and the runtime config serves v3. Then a rollback
from prod's history page, and the config serves v2 again."""

from __future__ import annotations

import os
import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.audit.models import AuditEvent
from console.evals.models import EvalRun
from console.registry.models import Application
from console.releases.models import PromotionRequest
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
JUSTIFICATION = "v3 cites its sources; it passes every gate on support-golden@1."


def live_prompt(page, base_url: str, secret: str, expected: int) -> dict:
    """GET /api/v1/config as production does, until it serves `expected` (snapshots may be up
    to a second old)."""
    deadline = time.monotonic() + 5
    while True:
        response = page.request.get(
            f"{base_url}/api/v1/config", headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status == 200
        prompt = response.json()["prompts"]["answer-question"]
        if prompt["version"] == expected or time.monotonic() > deadline:
            return prompt
        time.sleep(0.3)


def test_engineer_requests_approver_approves_engineer_applies_then_rolls_back(
    new_page, artifacts, live_server
):
    with simulator_port():  # seed_demo may serve 127.0.0.1:8100
        call_command("seed_demo", verbosity=0)
    application = Application.objects.get(key=APP)
    prod = application.environments.get(key="prod")
    v3_run = EvalRun.objects.get(
        application=application, prompt_version__head__key="answer-question",
        prompt_version__number=3, status="completed", dataset_version__head__key="support-golden",
    )  # fmt: skip
    assert v3_run.verdict == "passed"
    secret = keys.create_api_key(
        actor=None, environment=prod, name="e2e-config", scopes=[ApiKeyScope.CONFIG_READ]
    ).secret
    engineer_page = new_page()
    assert live_prompt(engineer_page, live_server.url, secret, 2)["version"] == 2

    # The engineer withdraws the seeded request, then asks again from the prompt's page.
    log_in(engineer_page, "engineer")
    seeded = PromotionRequest.objects.get(application=application, status="pending")
    engineer_page.goto(f"/apps/{APP}/releases/{seeded.pk}/")
    engineer_page.get_by_text("Edit, re-confirm or withdraw").click()
    engineer_page.get_by_role("button", name="Withdraw").click()
    expect(engineer_page.locator(".flashes")).to_contain_text("Withdrawn.")

    engineer_page.goto(f"/apps/{APP}/prompts/answer-question/")
    engineer_page.get_by_label("Version to promote to prod").select_option("3")
    engineer_page.get_by_role("button", name="Request promotion").click()
    expect(engineer_page.locator("h1")).to_contain_text("Promote answer-question@3 to prod")
    # prod serves two model configs: the request pairs v3 with the one it was evaluated on.
    expect(engineer_page.locator(".page-head")).to_contain_text("answer-question@3 × gpt-main@1")
    expect(engineer_page.locator(".evidence")).to_contain_text("policy gates met")
    engineer_page.get_by_label("Justification").fill(JUSTIFICATION)
    engineer_page.get_by_role("button", name="Request approval").click()
    expect(engineer_page.locator(".flashes")).to_contain_text("approvers have been notified")
    request = PromotionRequest.objects.get(application=application, status="pending")
    assert request.requested_by.username == "engineer" and request.justification == JUSTIFICATION
    detail_url = f"/apps/{APP}/releases/{request.pk}/"
    assert engineer_page.url.endswith(detail_url)
    expect(engineer_page.locator(".decide")).to_contain_text("You cannot decide on your own")

    # The approver finds it in the inbox and reads the evidence.
    approver_page = new_page()
    log_in(approver_page, "approver")
    approver_page.goto(f"/apps/{APP}/releases/")
    awaiting = approver_page.locator("section", has_text="Awaiting your decision")
    row = awaiting.locator("tr", has_text=f"#{request.pk} answer-question@3 → prod")
    expect(row).to_be_visible()
    expect(row).to_contain_text("policy gates met")
    approver_page.screenshot(path=artifacts / "release-inbox.png", full_page=True)
    row.get_by_role("link", name=re.compile(rf"#{request.pk} ")).click()
    evidence = approver_page.locator(".evidence")
    expect(evidence).to_contain_text("support-golden@1")
    expect(evidence).to_contain_text(f"run #{v3_run.pk}")
    expect(evidence).to_contain_text("passed")
    approver_page.screenshot(path=artifacts / "release-detail.png", full_page=True)
    evidence.get_by_role("link", name=f"run #{v3_run.pk}").click()
    expect(approver_page).to_have_url(re.compile(rf"/apps/{APP}/evals/{v3_run.pk}/$"))
    approver_page.go_back()
    approver_page.get_by_placeholder("Comment (required to reject)").fill("Evidence is solid.")
    approver_page.get_by_role("button", name="Approve").click()
    expect(approver_page.locator(".flashes")).to_contain_text(f"You approved #{request.pk}.")
    expect(approver_page.locator("h1")).to_contain_text("Approved")

    # The engineer applies; the runtime config serves v3.
    engineer_page.goto(detail_url)
    engineer_page.get_by_role(
        "button", name="Apply: make answer-question@3 × gpt-main@1 live in prod"
    ).click()
    expect(engineer_page.locator(".flashes")).to_contain_text("Applied.")
    expect(engineer_page.locator("h1")).to_contain_text("Applied")
    served = live_prompt(engineer_page, live_server.url, secret, 3)
    assert served["version"] == 3 and "Cite the source id" in served["system"]

    # Something is off in production: back to v2 from prod's history page.
    engineer_page.goto(f"/apps/{APP}/releases/history/prod/")
    form = engineer_page.locator("form.rollback", has_text="answer-question")
    form.get_by_label("Version of answer-question").select_option("2")
    form.get_by_placeholder("reason (required)").fill("v3 answers are too terse for gold tier")
    expect(engineer_page.locator("tbody")).to_contain_text("promotion.apply")
    form.get_by_role("button", name="Roll back").click()
    expect(engineer_page.locator(".flashes")).to_contain_text(
        "Rolled prod back to answer-question@2."
    )
    expect(engineer_page.locator("tbody")).to_contain_text("promotion.rollback")
    engineer_page.screenshot(path=artifacts / "release-history.png", full_page=True)
    assert live_prompt(engineer_page, live_server.url, secret, 2)["version"] == 2

    actions = list(
        AuditEvent.objects.filter(application=application, environment=prod)
        .filter(action__in=["promotion.approve", "promotion.apply", "promotion.rollback"])
        .order_by("seq")
        .values_list("action", "actor_label")
    )
    assert actions == [
        ("promotion.approve", "approver"),
        ("promotion.apply", "engineer"),
        ("promotion.rollback", "engineer"),
    ]
    assert (
        get_user_model()
        .objects.get(username="approver")
        .notifications.filter(kind="promotion.requested")
        .exists()
    )
    assert engineer_page.js_errors == [] and approver_page.js_errors == []
