"""The demo's experiment, concluded by its engineer in real Chromium: `support-prompt` in prod
has split customers between answer-question v2 (stable) and v3 (canary) for three days, and v3
wins. The demo already holds a request for v3 (the approver's inbox), so concluding adds the
report to that request's evidence instead of opening a second one; the approver then finds it
there. Prod serves what it served before."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command

from console.api import snapshot
from console.audit.models import AuditEvent
from console.registry.models import Application
from console.releases.models import PromotionRequest
from tests.e2e.conftest import Steps, log_in
from tests.simulator_port import simulator_port

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.e2e

SHOTS = Path("/tmp/shots")


def test_engineer_concludes_the_demo_experiment_into_its_promotion(
    new_page, artifacts, live_server
):
    with simulator_port():  # seed_demo may serve 127.0.0.1:8100
        call_command("seed_demo", verbosity=0)
    prod = Application.objects.get(key="support-bot").environments.get(key="prod")
    demo_request = PromotionRequest.objects.get(environment=prod, status="pending")
    served = snapshot.build(prod.pk).body
    steps = Steps(artifacts, "demo-experiment")
    SHOTS.mkdir(exist_ok=True)

    def shot(step: str) -> None:
        path = steps.shot(page, step)
        shutil.copy(path, SHOTS / f"demo-experiment-{path.name}")

    page = new_page()
    log_in(page, "engineer")
    page.goto("/apps/support-bot/flags/")
    page.get_by_role("link", name="Experiments").click()
    page.locator("tr", has_text="support-prompt").get_by_role("link", name="Report").click()
    expect(page).to_have_url(re.compile(r"/apps/support-bot/experiments/prod/support-prompt/$"))
    expect(page.locator(".conclusion")).to_contain_text("Winner: canary")
    expect(page.locator(".conclusion")).to_contain_text("canary beats stable")
    # Staff always get the canary: the ratio check is off, and the page says why.
    expect(page.locator(".card", has_text="Variants")).to_contain_text("Sample ratio check off")
    form = page.locator("form.conclude-form")
    expect(form.get_by_label("Variant to promote")).to_have_value("canary")
    shot("report")
    form.get_by_role("button", name="Conclude: request promotion").click()

    expect(page).to_have_url(re.compile(rf"/apps/support-bot/releases/{demo_request.pk}/$"))
    expect(page.locator(".flashes .flash")).to_contain_text(
        f"#{demo_request.pk} already asks for answer-question@3 → prod"
    )
    evidence = page.locator(".online-evidence")
    expect(evidence).to_contain_text("Experiment report")
    expect(evidence).to_contain_text("the winner")
    shot("request")
    assert PromotionRequest.objects.filter(environment=prod).count() == 1
    demo_request.refresh_from_db()
    assert demo_request.evidence["online"]["variant"] == "canary"
    assert AuditEvent.objects.filter(action="promotion.evidence").count() == 1

    # The approver reads the report where they decide.
    approver = new_page()
    log_in(approver, "approver")
    approver.goto(f"/apps/support-bot/releases/{demo_request.pk}/")
    expect(approver.locator(".online-evidence")).to_contain_text("canary beats stable")
    snapshot.forget_all()
    assert snapshot.build(prod.pk).body == served
    assert page.js_errors == [] and approver.js_errors == []
