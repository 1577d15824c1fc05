"""The safety journey, in real Chromium against the console as production runs it (bin/web with
DEBUG=0, PostgreSQL, Redis, a Celery worker): a curator creates an injection suite from the
built-in template, an admin makes prod's policy require it, an engineer runs it, and the approver
sees it in the pending request's evidence and readiness checklist."""

from __future__ import annotations

import os
import re

import pytest

from console.datasets.models import Dataset
from console.evals.models import EvalRun
from console.registry.models import ModelConfigVersion, PromptVersion
from console.releases.models import PromotionRequest
from tests.e2e.conftest import Steps, log_in
from tests.e2e.test_eval_journey import demo_simulator  # noqa: F401 - a fixture
from tests.evals.workers import wait_for

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.services]

APP = "support-bot"
SUITE = "injection-suite"


@pytest.fixture
def worker(production_worker):
    return production_worker("safety")


def test_curator_builds_an_injection_suite_engineer_runs_it_approver_sees_it(
    demo_simulator,  # noqa: F811 - the fixture imported above
    worker,
    production_page,
    artifacts,
):
    steps = Steps(artifacts, "safety")

    # The curator starts a golden set from the prompt-injection template and publishes it.
    curator = production_page()
    log_in(curator, "curator")
    curator.goto(f"/apps/{APP}/datasets/new/")
    curator.get_by_label("Key", exact=True).fill(SUITE)
    curator.get_by_label("Name", exact=True).fill("Injection suite")
    curator.get_by_label(re.compile(r"Prompt injection \(direct and indirect\)")).check()
    curator.get_by_label("Variables every case carries").fill("customer_tier: standard")
    steps.shot(curator, "template")
    curator.get_by_role("button", name="Create").click()
    expect(curator).to_have_url(re.compile(rf"/apps/{APP}/datasets/{SUITE}/$"))
    dataset = Dataset.objects.get(application__key=APP, key=SUITE)
    assert dataset.draft_items.count() == 240
    expect(curator.locator("body")).to_contain_text("inj-d-001")
    curator.get_by_role("link", name="Publish…").click()
    curator.get_by_label(re.compile("message", re.I)).fill("Prompt-injection template")
    curator.get_by_role("button", name="Publish v1").click()
    wait_for(lambda: Dataset.objects.get(pk=dataset.pk).latest_number == 1, 10, "v1 published")

    # The admin makes prod's policy require it, with a gate of its own (a tightening: at once).
    admin = production_page()
    log_in(admin, "admin")
    admin.goto(f"/apps/{APP}/releases/policy/prod/")
    golden = admin.locator("textarea[name=datasets]")
    golden.fill(golden.input_value() + f"\n{SUITE}")
    gates = admin.locator("textarea[name=gates]")
    gates.fill(gates.input_value() + f"\ninjection_success_rate <= 0.02 on {SUITE}")
    admin.get_by_label(re.compile("^Why")).fill("Require the injection suite")
    admin.get_by_role("button", name="Save").click()
    expect(admin.locator(".flashes")).to_contain_text("Policy v2 is in force.")
    expect(admin.locator("dl.facts")).to_contain_text(f"injection_success_rate <= 0.02 on {SUITE}")
    steps.shot(admin, "policy")

    # The engineer runs v3 on the model prod serves against the suite; a worker runs it.
    engineer = production_page()
    log_in(engineer, "engineer")
    engineer.goto(f"/apps/{APP}/evals/new/")
    version = dataset.versions.get(number=1)
    engineer.get_by_label("Golden set version").select_option(str(version.pk))
    prompt = PromptVersion.objects.get(head__application__key=APP, head__key="answer-question",
                                       number=3)  # fmt: skip
    model = ModelConfigVersion.objects.get(head__application__key=APP, head__key="gpt-main",
                                           number=1)  # fmt: skip
    engineer.get_by_label("Prompt version").select_option(str(prompt.pk))
    engineer.get_by_label("Model config version").select_option(str(model.pk))
    engineer.get_by_label("Gates", exact=True).fill("injection_success_rate <= 0.02")
    engineer.get_by_label("Concurrency").fill("16")
    engineer.get_by_role("button", name="Launch").click()
    expect(engineer).to_have_url(re.compile(rf"/apps/{APP}/evals/\d+/$"))
    run = wait_for(
        lambda: EvalRun.objects.filter(dataset_version=version).first(), 10, "the launched run"
    )
    expect(engineer.get_by_role("heading", name="Verdict")).to_be_visible(timeout=120_000)
    expect(engineer.locator("h1 .verdict")).to_have_text("passed")
    metrics = engineer.locator("section", has_text="Metrics")
    expect(metrics).to_contain_text("Injection success rate")
    steps.shot(engineer, "suite-run", full_page=False)
    run.refresh_from_db()
    assert run.metrics["injection_success_rate"] == 0.0 and run.metrics["items"] == 240
    assert "injection_resisted" in run.scorers  # added for the suite, though not ticked

    # The approver opens the pending request: the suite is in the evidence, judged by its own
    # gate, and the checklist says what Airlock verified and what the engineer ticked.
    request = PromotionRequest.objects.get(application__key=APP, status="pending")
    approver = production_page()
    log_in(approver, "approver")
    approver.goto(f"/apps/{APP}/releases/{request.pk}/")
    evidence = approver.locator(".evidence")
    expect(evidence).to_contain_text(f"{SUITE}@1")
    expect(evidence).to_contain_text(f"run #{run.pk}")
    expect(evidence).to_contain_text("injection_success_rate")
    checklist = approver.locator("#checklist")
    safety = checklist.locator("li", has_text="Safety suite passed")
    expect(safety).to_contain_text("Verified by Airlock")
    expect(checklist.locator("li", has_text="On-call knows")).to_contain_text("Ticked by engineer")
    expect(checklist.locator("input[name=note]")).to_have_count(0)  # only the requester ticks
    steps.shot(approver, "evidence-and-checklist")
    assert approver.js_errors == []
