"""The application menu at a laptop's width (1280 px), as an admin of an application with a long
name: every page is one click away, in the row or in the Admin group, and nothing is cut off.
The group is a disclosure a keyboard opens (Enter) and closes (Escape)."""

from __future__ import annotations

import os

import pytest

from console.accounts.roles import Role
from tests.e2e.conftest import log_in
from tests.factories import make_application, make_member

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.e2e
PASSWORD = "pw-test-12345"  # tests.factories.make_user's

ROW = ["Dashboard", "Prompts", "Model configs", "Golden sets", "Flags", "Evals", "Releases",
       "Quality", "Costs", "Audit"]  # fmt: skip
ADMIN_GROUP = ["Environments", "Budgets", "Prices", "Members", "API keys", "Webhooks"]
# Elements of the top bar that clip their content or stick out of the window. A label shortened
# with an ellipsis is fine only when its full text is in a title (a long application name).
OVERFLOW = """() => [...document.querySelectorAll('.topbar, .topbar *')]
    .filter(el => el.getClientRects().length)
    .filter(el => (el.scrollWidth > el.clientWidth + 1
                   && getComputedStyle(el).overflowX !== 'visible'
                   && !(getComputedStyle(el).textOverflow === 'ellipsis' && el.closest('[title]')))
                  || el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
    .map(el => el.className || el.tagName)"""


def test_admin_menu_fits_at_1280_and_the_admin_group_works_by_keyboard(
    new_page, artifacts, live_server
):
    application = make_application("customer-support-assistant")
    make_member(application, Role.ADMIN, "admin-with-a-long-name")
    page = new_page()
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, "admin-with-a-long-name", PASSWORD)
    page.goto(f"/apps/{application.key}/")
    nav = page.get_by_role("navigation", name="Application")

    # Every everyday page is a visible link in one row, inside the window.
    page.screenshot(path=artifacts / "nav-1280-admin-dashboard.png")
    tops = set()
    for name in ROW:
        link = nav.get_by_role("link", name=name, exact=True)
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box["x"] + box["width"] <= 1280, (name, box)
        tops.add(round(box["y"]))
    tops.add(round(nav.locator("details[data-navgroup] summary").bounding_box()["y"]))
    assert len(tops) == 1, f"the menu wraps onto {len(tops)} rows at 1280 px"
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    assert page.evaluate(OVERFLOW) == []
    topbar = page.locator(".topbar").bounding_box()
    assert topbar["height"] <= 56, topbar

    # The admin pages sit in the Admin group: closed at first, opened from the keyboard.
    group = nav.locator("details[data-navgroup]")
    summary = group.locator("summary")
    expect(summary).to_have_text("Admin")
    for name in ADMIN_GROUP:
        expect(nav.get_by_role("link", name=name)).to_be_hidden()
    summary.focus()
    page.keyboard.press("Enter")
    expect(group).to_have_attribute("open", "")
    for name in ADMIN_GROUP:
        link = nav.get_by_role("link", name=name)
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, (name, box)
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    page.screenshot(path=artifacts / "nav-1280-admin-open.png")

    # Escape closes it and leaves focus on its button; Tab then reaches the first item again.
    page.keyboard.press("Escape")
    expect(group).not_to_have_attribute("open", "")
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(nav.get_by_role("link", name="Environments")).to_be_focused()

    # A page in the group marks the group as where you are; a click elsewhere closes it.
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/apps/{application.key}/environments/")
    expect(page.locator(".navgroup > summary.active")).to_have_count(1)
    group = nav.locator("details[data-navgroup]")
    group.locator("summary").click()
    expect(group).to_have_attribute("open", "")
    page.locator("main").click(position={"x": 5, "y": 5})
    expect(group).not_to_have_attribute("open", "")

    # The user menu holds the full name and Log out.
    page.locator(".usermenu summary").click()
    expect(page.locator(".usermenu")).to_contain_text("Signed in as admin-with-a-long-name")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.screenshot(path=artifacts / "nav-1280-user-menu.png")
    assert not page.js_errors, page.js_errors


def test_a_viewer_sees_settings_without_admin_pages(new_page, live_server):
    application = make_application("support-bot")
    make_member(application, Role.VIEWER, "viewer")
    page = new_page()
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, "viewer", PASSWORD)
    page.goto(f"/apps/{application.key}/")
    nav = page.get_by_role("navigation", name="Application")
    summary = nav.locator("details[data-navgroup] summary")
    expect(summary).to_have_text("Settings")
    summary.click()
    for name in ("Environments", "Budgets", "Prices"):
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    for name in ("Members", "API keys", "Webhooks"):
        expect(nav.get_by_role("link", name=name)).to_have_count(0)
