"""A curator's morning in real Chromium: edit a cell inline (and cancel one with Escape),
import a file with a mistake and read the report, then publish the draft."""

from __future__ import annotations

import os

import pytest
from django.core.management import call_command

from console.datasets.models import Dataset
from tests.e2e.conftest import log_in
from tests.simulator_port import simulator_port

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.e2e

EDITOR = "/apps/support-bot/datasets/support-golden/"
BAD_CSV = (
    "id,question,expected_contains\n"
    'new-1,Can I pay with a gift card?,"[""gift card""]"\n'
    "new-2,Do you price match?,[not json\n"
)


def test_curator_edits_inline_imports_with_a_mistake_and_publishes(new_page, artifacts):
    with simulator_port():  # seed_demo may serve 127.0.0.1:8100
        call_command("seed_demo", verbosity=0)
    dataset = Dataset.objects.get(key="support-golden")
    item = dataset.draft_items.get(item_id="refunds-001")
    page = new_page()
    log_in(page, "curator")
    page.goto(EDITOR)
    expect(page.locator("#hints")).to_contain_text("unanswerable of 60")

    # Edit the question cell: click, type, Enter saves.
    cell = page.locator(f"#cell-{item.pk}-question")
    cell.click()
    box = page.locator(f"#cell-{item.pk}-question textarea")
    expect(box).to_be_focused()
    box.fill("How many days do I have to return an item?")
    box.press("Enter")
    expect(page.locator(f"#cell-{item.pk}-question")).to_contain_text("How many days do I have")
    expect(page.locator(f"#cell-{item.pk}-question textarea")).to_have_count(0)
    item.refresh_from_db()
    assert item.question == "How many days do I have to return an item?"

    # Escape cancels an edit: nothing is saved.
    facts = page.locator(f"#cell-{item.pk}-expected_contains")
    facts.click()
    facts_box = page.locator(f"#cell-{item.pk}-expected_contains textarea")
    facts_box.fill("something wrong")
    facts_box.press("Escape")
    expect(page.locator(f"#cell-{item.pk}-expected_contains")).to_contain_text("30 days")
    item.refresh_from_db()
    assert item.expected_contains == ["30 days"]
    page.screenshot(path=str(artifacts / "dataset-editor.png"), full_page=False)

    # Import a file whose line 3 has malformed JSON: a report, and nothing changes.
    before = dataset.draft_items.count()
    page.goto(EDITOR + "import/")
    page.set_input_files(
        "input[name=file]",
        files=[{"name": "more.csv", "mimeType": "text/csv", "buffer": BAD_CSV.encode()}],
    )
    page.get_by_role("button", name="Upload and preview").click()
    report = page.locator("#import-status")
    expect(report).to_contain_text("Nothing was imported")
    expect(report.locator("tbody tr")).to_have_count(1)
    expect(report.locator("tbody tr")).to_contain_text("3")
    expect(report.locator("tbody tr")).to_contain_text("expected_contains")
    expect(report.locator("tbody tr")).to_contain_text("malformed JSON")
    page.screenshot(path=str(artifacts / "dataset-import-report.png"), full_page=True)
    assert dataset.draft_items.count() == before

    # Publish: the preview shows the one changed item, then v2 exists.
    page.goto(EDITOR + "publish/")
    expect(page.locator(".plan-cell.changed")).to_contain_text("1")
    expect(page.locator(".item-change")).to_contain_text("refunds-001")
    page.screenshot(path=str(artifacts / "dataset-publish.png"), full_page=True)
    page.get_by_label("Message").fill("Clearer wording for the return window question")
    page.get_by_role("button", name="Publish v2").click()
    expect(page.locator(".flash")).to_contain_text("Published support-golden v2")
    dataset.refresh_from_db()
    assert dataset.latest_number == 2
    assert page.js_errors == []
