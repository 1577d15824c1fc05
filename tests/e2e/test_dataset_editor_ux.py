"""The golden-set editor in real Chromium at a laptop's 1440x900: every column within the window
(long values clamped, a real "more" button), a cell edited with the keyboard alone, an added row
that stays where it appeared after a reload, and a published version read as a table."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from console.datasets import services
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
LAPTOP = {"width": 1440, "height": 900}
LONG = ("An unusually long customer profile value, " * 60).strip()


@pytest.fixture
def laptop(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport=LAPTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()


@pytest.fixture
def golden(db):
    with simulator_port():  # seed_demo may serve 127.0.0.1:8100
        call_command("seed_demo", verbosity=0)
    dataset = Dataset.objects.get(key="support-golden")
    item = dataset.draft_items.get(item_id="refunds-001")
    curator = get_user_model().objects.get(username="curator")
    services.update_item_field(
        actor=curator, item=item, field_name="variables",
        value={"profile": LONG, "tier": "gold", "url": "https://example.test/" + "x" * 300},
        base=item.variables,
    )  # fmt: skip
    return dataset


def overflow(page) -> dict:
    return page.evaluate(
        """() => {
          const wrap = document.querySelector('#items');
          const heads = [...document.querySelectorAll('.ds-table th')];
          return {
            doc: document.documentElement.scrollWidth, viewport: window.innerWidth,
            wrap: wrap.scrollWidth, wrapClient: wrap.clientWidth,
            rightmost: Math.max(...heads.map(h => h.getBoundingClientRect().right)),
          };
        }"""
    )


def test_every_column_fits_a_laptop_and_long_values_expand(laptop, golden, artifacts):
    item = golden.draft_items.get(item_id="refunds-001")
    page = laptop
    log_in(page, "curator")
    page.goto(EDITOR + "?q=refunds-001")
    widths = overflow(page)
    assert widths["doc"] <= widths["viewport"] == 1440, widths
    assert widths["wrap"] <= widths["wrapClient"], widths
    assert widths["rightmost"] <= 1440, widths
    for header in ["Tags", "Note", "Variables"]:
        box = page.locator("th", has_text=header).bounding_box()
        assert box["x"] + box["width"] <= 1440, header
    page.screenshot(path=str(artifacts / "dataset-editor-1440.png"), full_page=False)

    # The long value is clamped; "more" is a real button that expands it without editing.
    cell = page.locator(f"#cell-{item.pk}-variables")
    more = cell.get_by_role("button", name="more")
    expect(more).to_be_visible()
    expect(more).to_have_attribute("aria-expanded", "false")
    clamped = cell.locator(".clamp").bounding_box()["height"]
    more.click()
    less = cell.get_by_role("button", name="less")
    expect(less).to_have_attribute("aria-expanded", "true")
    assert cell.locator(".clamp").bounding_box()["height"] > clamped * 3
    expect(cell.locator("textarea")).to_have_count(0)  # expanding did not open the editor
    assert overflow(page)["doc"] <= 1440
    page.screenshot(path=str(artifacts / "dataset-editor-1440-expanded.png"), full_page=False)
    less.click()
    expect(cell.get_by_role("button", name="more")).to_be_visible()

    # Editing still works in the narrower columns, and the editor shows name: value lines.
    cell.click()
    box = cell.locator("textarea")
    expect(box).to_be_focused()
    assert "profile: An unusually long" in box.input_value()
    assert "tier: gold" in box.input_value()
    assert overflow(page)["doc"] <= 1440
    page.screenshot(path=str(artifacts / "dataset-editor-1440-editing.png"), full_page=False)

    # A line that is not "name: value" is refused with the line, the value and an example.
    box.press("ControlOrMeta+End")
    box.press("Enter")
    box.type("premium customer")
    box.press("Control+Enter")
    error = cell.locator(".cell-error")
    expect(error).to_contain_text('variables: line 4: "premium customer" is not "name: value"')
    expect(error).to_contain_text('e.g. "customer: Ada"')
    page.screenshot(path=str(artifacts / "dataset-editor-1440-error.png"), full_page=False)
    cell.locator("textarea").press("Escape")
    expect(cell.locator("textarea")).to_have_count(0)
    item.refresh_from_db()
    assert set(item.variables) == {"profile", "tier", "url"}
    assert page.js_errors == []


def test_a_cell_is_edited_with_the_keyboard_alone(laptop, golden):
    item = golden.draft_items.get(item_id="refunds-002")
    page = laptop
    log_in(page, "curator")
    page.goto(EDITOR)
    # Start on the row's checkbox and tab along: Duplicate, then the question cell.
    page.focus('input[name="ids"][value="refunds-002"]')
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    question = page.locator(f"#cell-{item.pk}-question")
    expect(question).to_be_focused()

    page.keyboard.press("Enter")
    box = question.locator("textarea")
    expect(box).to_be_focused()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Can I get my money back without a receipt?")
    page.keyboard.press("Enter")  # Enter saves a question
    expect(question).to_contain_text("Can I get my money back without a receipt?")
    expect(question).to_be_focused()  # the focus comes back to the cell
    item.refresh_from_db()
    assert item.question == "Can I get my money back without a receipt?"

    # Next cell: a list, one entry per line; Enter is a new line, Ctrl+Enter saves.
    page.keyboard.press("Tab")
    facts = page.locator(f"#cell-{item.pk}-expected_contains")
    expect(facts).to_be_focused()
    page.keyboard.press("Enter")
    expect(facts.locator("textarea")).to_be_focused()
    page.keyboard.press("ControlOrMeta+End")
    page.keyboard.press("Enter")
    page.keyboard.type("proof of purchase")
    page.keyboard.press("Control+Enter")
    expect(facts.locator("li", has_text="proof of purchase")).to_be_visible()
    expect(facts).to_be_focused()
    item.refresh_from_db()
    assert item.expected_contains == ["order number", "proof of purchase"]

    # Escape cancels: nothing is saved and the focus stays on the cell.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    sources = page.locator(f"#cell-{item.pk}-expected_sources")
    expect(sources).to_be_focused()
    page.keyboard.press("Enter")
    expect(sources.locator("textarea")).to_be_focused()
    page.keyboard.type("\nnot this one")
    page.keyboard.press("Escape")
    expect(sources.locator("textarea")).to_have_count(0)
    expect(sources).to_be_focused()
    item.refresh_from_db()
    assert item.expected_sources == ["refund-policy"]

    # The Save button is reachable with Tab: variables as name: value lines.
    variables = page.locator(f"#cell-{item.pk}-variables")
    page.keyboard.press("Tab")  # tool calls
    page.keyboard.press("Tab")  # reference answer
    page.keyboard.press("Tab")
    expect(variables).to_be_focused()
    page.keyboard.press("Enter")
    expect(variables.locator("textarea")).to_be_focused()
    assert "customer_tier: standard" in variables.locator("textarea").input_value()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("customer: Ada\nseats: 3")
    page.keyboard.press("Tab")
    expect(variables.get_by_role("button", name="Save")).to_be_focused()
    page.keyboard.press("Enter")
    expect(variables).to_contain_text("customer:")
    expect(variables).to_be_focused()
    item.refresh_from_db()
    assert item.variables == {"customer": "Ada", "seats": 3}
    assert page.js_errors == []


def test_an_added_row_keeps_its_place_after_a_reload(laptop, golden, artifacts):
    page = laptop
    log_in(page, "curator")
    page.goto(EDITOR)
    page.get_by_label("New question").fill("Do you deliver to the Moon?")
    page.get_by_role("button", name="Add item").click()
    rows = page.locator("#items-body tr")
    expect(rows.first).to_contain_text("Do you deliver to the Moon?")
    shown = rows.evaluate_all("rows => rows.map(r => r.id)")
    page.reload()
    expect(rows.first).to_contain_text("Do you deliver to the Moon?")
    assert rows.evaluate_all("rows => rows.map(r => r.id)")[: len(shown)] == shown[:50]

    # Published, the version reads as a table from the versions page.
    services.publish(
        actor=get_user_model().objects.get(username="curator"), dataset=golden, message="moon"
    )
    page.goto(EDITOR + "versions/")
    page.get_by_role("link", name="View items").first.click()
    expect(page.locator("h1")).to_contain_text("v2")
    expect(page.locator("tbody tr").first).to_contain_text("Do you deliver to the Moon?")
    assert overflow(page)["doc"] <= 1440
    page.screenshot(path=str(artifacts / "dataset-version-1440.png"), full_page=False)
    assert page.js_errors == []
