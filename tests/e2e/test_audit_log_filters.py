"""The audit log in real Chromium: picking an action from the list and typing a word in the
search box swap the results through htmx (and keep the URL shareable), and a change reads as
coloured `old → new` values and a line diff, not a dict repr."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta

import pytest

from console.accounts.roles import Role
from console.audit.models import ActorType
from tests.audit.helpers import append_events
from tests.e2e.conftest import log_in
from tests.factories import make_application, make_member

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.e2e
PASSWORD = "pw-test-12345"
START = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


def seed():
    app = make_application("audit-e2e")
    make_member(app, Role.VIEWER, "auditor")
    template = "\n".join(f"Rule {n}." for n in range(1, 13))
    specs = []
    for n, (action, before, after) in enumerate(
        [
            ("dataset.create", None, {"key": "golden", "name": "Golden"}),
            ("dataset.publish", None, {"number": 1, "items": 60}),
            ("prompt.version.create", {"system": template},
             {"system": template.replace("Rule 6.", "Rule six, reworded.")}),
            ("eval.gates.change", {"max_error_rate": 0.1}, {"max_error_rate": 0.05}),
            ("dataset.publish", None, {"number": 2, "items": 61}),
        ]
    ):  # fmt: skip
        specs.append(
            {
                "at": START + timedelta(minutes=n),
                "actor_type": ActorType.USER,
                "actor_id": 1,
                "actor_label": "alice",
                "action": action,
                "object_type": action.split(".")[0],
                "object_id": str(n),
                "object_label": f"{action.split('.')[0]}-{n}",
                "application_id": app.pk,
                "before": before,
                "after": after,
            }
        )
    append_events(specs)


def actions_shown(page) -> list[str]:
    return page.locator("#results tbody .action-tag").all_inner_texts()


def test_pick_an_action_search_by_word_and_read_the_change(new_page, artifacts, live_server):
    seed()
    page = new_page()
    log_in(page, "auditor", PASSWORD)
    page.goto("/audit/?application=audit-e2e")

    # The list offers the actions that exist; picking one filters at once (htmx, no submit).
    page.get_by_label("Action").select_option("dataset.publish")
    expect(page).to_have_url(re.compile(r"action=dataset\.publish"))
    expect(page.locator("#results tbody .action-tag")).to_have_count(2)
    assert set(actions_shown(page)) == {"dataset.publish"}

    # A word in the search box matches action words as prefixes: "dataset" finds dataset.*.
    page.get_by_label("Action").select_option("")
    page.get_by_label("Search").fill("dataset")
    page.get_by_label("Search").press("Enter")
    expect(page).to_have_url(re.compile(r"q=dataset"))
    expect(page.locator("#results tbody .action-tag")).to_have_count(3)
    assert set(actions_shown(page)) == {"dataset.create", "dataset.publish"}

    # Before/after: a value change is old → new in red and green; text is diffed by line.
    page.goto("/audit/?application=audit-e2e")
    gates = page.locator("#results tbody > tr", has_text="eval.gates.change")
    expect(gates.locator(".change")).to_contain_text("max_error_rate")
    old = gates.locator(".ch-old")
    new = gates.locator(".ch-new")
    expect(old).to_have_text("0.1")
    expect(new).to_have_text("0.05")
    old_bg = old.evaluate("el => getComputedStyle(el).backgroundColor")
    new_bg = new.evaluate("el => getComputedStyle(el).backgroundColor")
    assert old_bg != new_bg, (old_bg, new_bg)
    prompt = page.locator("#results tbody > tr", has_text="prompt.version.create")
    expect(prompt.locator(".ld-del")).to_have_text(re.compile(r"Rule 6\."))
    expect(prompt.locator(".ld-ins")).to_have_text(re.compile(r"Rule six, reworded\."))
    expect(prompt.locator(".ld-skip").first).to_contain_text("unchanged line")
    expect(page.locator("#results")).not_to_contain_text("{'")
    page.screenshot(path=artifacts / "audit-changes.png", full_page=True)
    assert page.js_errors == []
