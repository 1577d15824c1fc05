"""A PM's morning in real Chromium: from the Quality page to the production samples, filter
the thumbs-down ones (htmx swaps the rows), open the wrong refund answer and add it to the
golden set with what a good answer must and must not say, land in the golden set editor, and
find the sample marked as already added. Personal data never reaches the page: the email a
sample held reads [EMAIL]."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from console.accounts.roles import Role
from console.datasets.models import DatasetItem
from console.datasets.services import create_dataset
from console.samples import partitions
from console.samples.models import Sample
from console.samples.services import ingest
from tests.e2e.conftest import Steps, log_in
from tests.factories import make_application, make_member

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.e2e

APP = "samples-e2e"
PASSWORD = "pw-test-12345"
REFUND = "Can I get a refund after 40 days?"
WRONG = "Yes, refunds are always possible [kb-7]."
EMAIL = "ana@example.com"
SHOTS = Path("/tmp/shots")


def sample(sample_id: str, minutes_ago: int, question: str, output: str, **fields) -> dict:
    return {
        "sample_id": sample_id,
        "time": (timezone.now() - timedelta(minutes=minutes_ago)).isoformat(),
        "inputs": {"question": question},
        "output": output,
        "context": "Refunds are accepted within 30 days of delivery [kb-7].",
        "sources": ["kb-7"],
        "prompt_version": "answer-question@3",
        **fields,
    }


def seed():
    application = make_application(APP)
    make_member(application, Role.CURATOR, "curator")
    engineer = make_member(application, Role.ENGINEER, "engineer")
    create_dataset(
        actor=engineer, application=application, key="support-golden", name="Support golden"
    )
    partitions.forget()  # another test may have left the day's partition remembered, not made
    ingest(
        application=application,
        environment=application.environments.get(key="prod"),
        samples=[
            sample("s-1", 3, REFUND, WRONG, feedback="down",
                   feedback_comment="Wrong: the refund window is 30 days"),
            sample("s-2", 5, "How do I reset my password?",
                   "Open Settings, then Security, then Reset password [kb-12].", feedback="up",
                   sources=["kb-12"]),
            sample("s-3", 7, "Do you ship to Canada?", "Yes, we ship to Canada [kb-3].",
                   feedback="up", sources=["kb-3"]),
            sample("s-4", 9, "Who can I write to about my invoice?",
                   f"Write to {EMAIL}, she handles invoices [kb-9].", feedback="down",
                   feedback_comment=f"Do not hand out {EMAIL}", sources=["kb-9"]),
        ],
    )  # fmt: skip
    return application


def test_pm_turns_a_thumbs_down_sample_into_a_golden_set_item(new_page, artifacts, live_server):
    application = seed()
    refund = Sample.objects.get(application=application, sample_id="s-1")
    steps = Steps(artifacts, "samples-journey")
    SHOTS.mkdir(exist_ok=True)

    def shot(step: str) -> None:
        path = steps.shot(page, step)
        shutil.copy(path, SHOTS / f"samples-{path.name}")

    page = new_page()
    log_in(page, "curator", PASSWORD)

    # From the application's menu to the quality page, then on to the samples.
    page.goto(f"/apps/{APP}/")
    nav = page.get_by_role("navigation", name="Application")
    nav.get_by_role("link", name="Quality", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/apps/{APP}/samples/quality/$"))
    page.get_by_role("link", name="Browse samples").click()
    expect(page).to_have_url(re.compile(rf"/apps/{APP}/samples/$"))

    rows = page.locator("#sample-rows tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.filter(has_text="Who can I write to")).to_contain_text("[EMAIL]")
    assert EMAIL not in page.content()

    # Thumbs down: htmx swaps the rows on change (no Apply click) and keeps the URL shareable.
    page.get_by_label("Feedback").select_option(label="Thumbs down")
    expect(page).to_have_url(re.compile(r"[?&]feedback=down"))
    expect(rows).to_have_count(2)
    for row in rows.all():
        expect(row.locator(".pill-removed")).to_contain_text("down")
    expect(page.locator("#sample-rows")).not_to_contain_text("How do I reset my password?")
    expect(page.locator("#sample-rows")).not_to_contain_text("Do you ship to Canada?")
    expect(rows.filter(has_text=REFUND)).to_have_count(1)
    email_row = rows.filter(has_text="Who can I write to")
    expect(email_row).to_contain_text("Write to [EMAIL], she handles invoices")
    assert EMAIL not in page.content()
    shot("list-thumbs-down")

    # The refund sample: the form is pre-filled from it; the curator writes the facts.
    page.get_by_role("link", name=REFUND).click()
    expect(page).to_have_url(re.compile(rf"/apps/{APP}/samples/{refund.pk}/$"))
    expect(page.locator(".sample-answer")).to_contain_text(WRONG)
    form = page.locator("form.curate-form")
    expect(form.get_by_label("Golden set")).to_have_value("support-golden")
    expect(form.get_by_label("Question")).to_have_value(REFUND)
    expect(form.get_by_label("Tags")).to_have_value("thumbs-down")
    expect(form.get_by_label("Expected sources")).to_have_value("kb-7")
    form.get_by_label("Expected facts").fill("30 days")
    form.get_by_label("Forbidden facts").fill("always possible")
    shot("sample-detail-form")
    form.get_by_role("button", name="Add to golden set").click()

    # The golden set editor, filtered to the new draft item.
    expect(page).to_have_url(re.compile(rf"/apps/{APP}/datasets/support-golden/"))
    expect(page.locator(".flashes .flash")).to_contain_text(
        "Added to Support golden as draft item prod-"
    )
    expect(page.locator(".flashes .flash")).to_contain_text(f"prod-{refund.pk}")
    shot("editor-after-add")
    item = DatasetItem.objects.get(dataset__key="support-golden", item_id=f"prod-{refund.pk}")
    assert item.question == REFUND
    assert item.expected_contains == ["30 days"]
    assert item.expected_not_contains == ["always possible"]
    assert item.expected_sources == ["kb-7"]
    assert {"production", "thumbs-down"} <= set(item.tags)
    assert item.note.startswith("From production sample s-1")
    refund.refresh_from_db()
    assert refund.curated_into == f"support-golden#prod-{refund.pk}"

    # Back on the sample: it is in the golden set, and there is no form to add it twice.
    page.goto(f"/apps/{APP}/samples/{refund.pk}/")
    curate = page.locator("#curate")
    expect(curate).to_contain_text("already in a golden set")
    expect(curate).to_contain_text(f"support-golden#prod-{refund.pk}")
    expect(page.locator("form.curate-form")).to_have_count(0)
    shot("sample-detail-added")

    assert page.js_errors == []
