"""An engineer's day in the console, in real Chromium: sign in, edit a prompt with the live
preview, save a new version, read the diff and the audit log; and two people editing at once."""

from __future__ import annotations

import os
import re

import pytest
from django.core.management import call_command

from console.ops.management.commands.seed_demo import ANSWER_V3
from console.registry.models import Prompt
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
PROMPT = "answer-question"
EDIT_URL = f"/apps/{APP}/prompts/{PROMPT}/edit/"
OLD_LINE = "Keep answers under 120 words."
NEW_LINE = "Keep answers under 80 words and end with a next step."


def seed() -> Prompt:
    with simulator_port():  # seed_demo may serve 127.0.0.1:8100
        call_command("seed_demo", verbosity=0)
    return Prompt.objects.get(application__key=APP, key=PROMPT)


def test_engineer_edits_a_prompt_and_reviews_the_diff(new_page, artifacts):
    prompt = seed()
    assert prompt.latest_number == 3
    page = new_page()

    # Sign in through the form; the home page lists the application.
    log_in(page, "engineer")
    page.get_by_role("link", name=re.compile("Support bot")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Support bot")
    expect(page.locator(".matrix")).to_contain_text(PROMPT)
    page.screenshot(path=artifacts / "dashboard.png", full_page=True)

    # Dashboard → prompt → editor.
    page.get_by_role("link", name=PROMPT, exact=True).first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(PROMPT)
    page.get_by_role("link", name=re.compile("Edit")).click()
    expect(page).to_have_url(re.compile(re.escape(EDIT_URL) + "$"))
    preview = page.locator("#preview")
    expect(preview).to_contain_text(OLD_LINE)

    # Change the system template: the htmx preview re-renders from the server.
    system = page.locator("#id_system")
    system.fill(system.input_value().replace(OLD_LINE, NEW_LINE))
    expect(preview).to_contain_text(NEW_LINE)
    expect(preview).not_to_contain_text(OLD_LINE)

    # An undeclared placeholder is reported inline, next to the rendered prompt.
    system.fill(system.input_value() + "\nSign every answer as {{ store_name }}.")
    problem = preview.locator(".problem-error")
    line = len(ANSWER_V3["system"].splitlines()) + 1  # the line just added
    expect(problem).to_contain_text(
        "{{ store_name }} is used " + f"(system line {line}) but not declared"
    )
    page.screenshot(path=artifacts / "editor-problem.png", full_page=True)

    # Declare it and give it a sample value: the problem goes, the value is rendered.
    variables = page.locator("#id_variables")
    variables.fill(variables.input_value() + ", store_name")
    page.locator("#sample").fill('{"store_name": "Acme Support", "customer_tier": "gold"}')
    expect(problem).to_have_count(0)
    expect(preview).to_contain_text("Sign every answer as Acme Support.")
    expect(preview).to_contain_text("Customer (gold tier) asks:")
    expect(preview.locator(".ok-text")).to_be_visible()
    page.screenshot(path=artifacts / "editor.png", full_page=True)

    # Save with a message → the detail page shows v4.
    page.get_by_label("Message").fill("Shorter answers that end with a next step")
    page.get_by_role("button", name="Save new version").click()
    expect(page).to_have_url(re.compile(rf"/apps/{APP}/prompts/{PROMPT}/$"))
    expect(page.get_by_role("status")).to_contain_text(f"Saved {PROMPT} v4.")
    expect(page.get_by_role("heading", level=1)).to_contain_text("v4")
    expect(page.locator(".timeline").first).to_contain_text(
        "Shorter answers that end with a next step"
    )
    page.screenshot(path=artifacts / "detail.png", full_page=True)
    prompt.refresh_from_db()
    assert prompt.latest_number == 4
    v4 = prompt.versions.get(number=4)
    assert NEW_LINE in v4.content["system"]
    assert v4.content["variables"] == ["context", "question", "customer_tier", "store_name"]
    assert v4.author.username == "engineer"

    # The diff v3 → v4 highlights exactly the changed line and the added one.
    page.get_by_role("link", name="Diff latest").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("v3 → v4")
    system_diff = page.locator(".diff-field", has=page.locator("code", has_text="system"))
    replaced = system_diff.locator("tr.row-replace")
    expect(replaced).to_have_count(1)
    expect(replaced.locator("td.old")).to_have_text(OLD_LINE)
    expect(replaced.locator("td.new")).to_have_text(NEW_LINE)
    inserted = system_diff.locator("tr.row-insert td.new")
    expect(inserted).to_have_text("Sign every answer as {{ store_name }}.")
    unchanged = system_diff.locator("tr.row-equal").first
    expect(unchanged).to_contain_text("You are the support assistant for Acme Store.")
    # Highlighting is real colour, not only a class name.
    old_bg = replaced.locator("td.old").evaluate("el => getComputedStyle(el).backgroundColor")
    new_bg = replaced.locator("td.new").evaluate("el => getComputedStyle(el).backgroundColor")
    plain_bg = unchanged.locator("td.new").evaluate("el => getComputedStyle(el).backgroundColor")
    assert len({old_bg, new_bg, plain_bg}) == 3, (old_bg, new_bg, plain_bg)
    page.screenshot(path=artifacts / "diff.png", full_page=True)

    # The audit log records the new version, by the engineer.
    page.get_by_role("link", name="Audit", exact=True).click()
    first_row = page.locator("#results tbody tr").first
    expect(first_row).to_contain_text("prompt.version.create")
    expect(first_row).to_contain_text("engineer")
    expect(first_row).to_contain_text(PROMPT)
    page.screenshot(path=artifacts / "audit.png", full_page=True)

    assert page.js_errors == []


def test_second_save_gets_the_conflict_panel_and_overwrites_nothing(new_page, artifacts):
    prompt = seed()
    theirs, mine = new_page(), new_page()
    log_in(theirs, "admin")
    log_in(mine, "engineer")
    theirs.goto(EDIT_URL)
    mine.goto(EDIT_URL)

    # The admin saves first: a new user template becomes v4.
    their_user = "Customer ({{ customer_tier }} tier, via chat) asks: {{ question }}"
    theirs.locator("#id_user").fill(their_user)
    theirs.get_by_label("Message").fill("Say which channel the question came from")
    theirs.get_by_role("button", name="Save new version").click()
    expect(theirs.get_by_role("status")).to_contain_text(f"Saved {PROMPT} v4.")

    # The engineer, still on v3, saves a different change.
    system = mine.locator("#id_system")
    my_system = system.input_value().replace(OLD_LINE, NEW_LINE)
    system.fill(my_system)
    mine.get_by_label("Message").fill("Shorter answers")
    mine.get_by_role("button", name="Save new version").click()

    panel = mine.get_by_role("alert")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Someone saved a newer version while you were editing")
    expect(panel).to_contain_text("by admin")
    their_change = panel.locator(
        ".diff-field", has=mine.locator(".diff-path code", has_text="user")
    )
    expect(their_change.locator("td.old")).to_have_text(
        "Customer ({{ customer_tier }} tier) asks: {{ question }}"
    )
    expect(their_change.locator("td.new")).to_have_text(their_user)
    expect(mine.get_by_role("button", name="Save mine as v5")).to_be_visible()
    # My text is kept, and the next save is based on their version.
    expect(mine.locator("#id_system")).to_have_value(my_system)
    expect(mine.locator("input[name=base_number]")).to_have_value("4")
    mine.screenshot(path=artifacts / "conflict.png", full_page=True)

    prompt.refresh_from_db()
    assert prompt.latest_number == 4
    v4 = prompt.versions.get(number=4)
    assert v4.author.username == "admin"
    assert v4.content["user"] == their_user
    assert OLD_LINE in v4.content["system"]
    assert theirs.js_errors == [] and mine.js_errors == []


def test_saving_an_unchanged_prompt_from_the_browser_creates_no_version(new_page):
    prompt = seed()
    page = new_page()
    log_in(page, "engineer")
    page.goto(EDIT_URL)
    page.get_by_role("button", name="Save new version").click()
    expect(page.get_by_role("status")).to_contain_text("No changes")
    prompt.refresh_from_db()
    assert prompt.latest_number == 3
