"""Accessibility of the console as production serves it (bin/web, DEBUG=0, the demo seeded):
axe-core checks the main pages for WCAG 2 A/AA and best-practice rules, and two tasks are done
with the keyboard alone. The full axe report goes to test-artifacts/accessibility/."""

from __future__ import annotations

import json
import os
import re

import pytest

from console.evals.models import EvalRun
from console.releases.models import PromotionRequest
from tests.e2e.conftest import Steps, log_in

try:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip(
        "needs playwright and axe-playwright-python (pip install -e '.[dev]')",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.e2e, pytest.mark.services]

APP = "support-bot"
BLOCKING = {"serious", "critical"}


def pages() -> dict[str, str]:
    """The main pages, by name → path, on the seeded demo."""
    runs = list(EvalRun.objects.filter(application__key=APP).order_by("pk")[:2])
    request = PromotionRequest.objects.filter(application__key=APP).order_by("pk").first()
    a = f"/apps/{APP}"
    return {
        "home": "/",
        "dashboard": f"{a}/",
        "prompts": f"{a}/prompts/",
        "prompt": f"{a}/prompts/answer-question/",
        "prompt-edit": f"{a}/prompts/answer-question/edit/",
        "golden-sets": f"{a}/datasets/",
        "golden-set-editor": f"{a}/datasets/support-golden/",
        "evals": f"{a}/evals/",
        "eval-launch": f"{a}/evals/new/",
        "eval-run": f"{a}/evals/{runs[0].pk}/",
        "eval-compare": f"{a}/evals/compare/?a={runs[0].pk}&b={runs[1].pk}",
        "flags": f"{a}/flags/",
        "flag": f"{a}/flags/answers-enabled/",
        "releases": f"{a}/releases/",
        "release": f"{a}/releases/{request.pk}/",
        "costs": f"{a}/usage/",
        "audit": f"/audit/?application={APP}",
        "members": f"{a}/members/",
        "keys": f"{a}/keys/",
    }


def summary(name: str, violations: list[dict]) -> list[str]:
    lines = []
    for v in violations:
        targets = ", ".join(" ".join(n["target"]) for n in v["nodes"][:4])
        more = f" (+{len(v['nodes']) - 4} more)" if len(v["nodes"]) > 4 else ""
        lines.append(f"{name}: {v['id']} [{v['impact']}] {v['help']} — {targets}{more}")
    return lines


def test_main_pages_have_no_serious_axe_violations(production_page, artifacts):
    axe = Axe()
    folder = artifacts / "accessibility"
    folder.mkdir(exist_ok=True)
    report: dict[str, list[dict]] = {}
    blocking: list[str] = []
    page = production_page()

    page.goto("/accounts/login/")
    results = axe.run(page)
    report["login"] = results.response["violations"]
    log_in(page, "admin")
    for name, path in pages().items():
        response = page.goto(path)
        assert response.status == 200, (name, path, response.status)
        if name in {"eval-compare", "costs"}:  # judge the page with its charts drawn
            page.locator("[data-chart] .main-svg").first.wait_for()
        if name == "golden-set-editor":  # its hints panel loads itself through htmx
            page.wait_for_load_state("networkidle")
        report[name] = axe.run(page).response["violations"]

    (folder / "axe-report.json").write_text(json.dumps(report, indent=2))
    lines = [line for name, found in report.items() for line in summary(name, found)]
    (folder / "axe-summary.txt").write_text("\n".join(lines) + "\n")
    for name, found in report.items():
        blocking += summary(name, [v for v in found if v["impact"] in BLOCKING])
    assert len(report) == len(pages()) + 1
    assert not blocking, "\n".join(blocking)
    assert page.js_errors == []


def tab_to(page, locator, limit: int = 120) -> None:
    """Press Tab until `locator` has the focus (as a person would, never clicking)."""
    for _ in range(limit):
        if locator.evaluate("el => el === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{locator} never got the focus in {limit} Tabs")


def luminance(rgb: str) -> float:
    channels = [int(c) / 255 for c in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def assert_visible_focus(locator, behind: str = "rgb(255, 255, 255)") -> None:
    """The focused element draws a focus ring (:focus-visible) at least 2px wide whose colour
    stands out 3:1 against what is behind it (WCAG 1.4.11)."""
    ring = locator.evaluate(
        """el => { const s = getComputedStyle(el);
                   return {style: s.outlineStyle, width: parseFloat(s.outlineWidth),
                           color: s.outlineColor, visible: el.matches(':focus-visible')}; }"""
    )
    assert ring["visible"] and ring["style"] != "none" and ring["width"] >= 2, ring
    assert contrast(ring["color"], behind) >= 3, (ring, behind)


def test_kill_switch_confirm_and_a_main_form_work_from_the_keyboard(production_page, artifacts):
    steps = Steps(artifacts, "keyboard")
    page = production_page()
    # The sign-in form, keyboard only: Tab into each field, Enter submits.
    page.goto("/accounts/login/")
    username = page.get_by_label("Username")
    tab_to(page, username)
    page.keyboard.type("engineer")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("airlock-demo")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/accounts/login" not in url)

    # The kill switch's confirm step: Tab to it, Enter opens it, Escape closes it again with the
    # focus back on the control; then Tab to the reason, type it, Tab to the button, Enter.
    page.goto(f"/apps/{APP}/flags/answers-enabled/")
    prod = page.locator("#env-prod")
    control = prod.locator("summary", has_text="Kill switch…")
    tab_to(page, control)
    assert_visible_focus(control)
    steps.shot(page, "kill-control-focused", full_page=False)
    page.keyboard.press("Enter")
    reason = prod.get_by_label(re.compile("Why kill it"))
    expect(reason).to_be_visible()
    page.keyboard.press("Escape")
    expect(reason).to_be_hidden()
    expect(control).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(reason).to_be_focused()
    assert_visible_focus(reason)
    page.keyboard.type("Answers quote the old refund policy")
    page.keyboard.press("Tab")
    confirm = prod.get_by_role("button", name="Kill answers-enabled in prod now")
    expect(confirm).to_be_focused()
    assert_visible_focus(confirm)
    steps.shot(page, "kill-confirm-focused", full_page=False)
    page.keyboard.press("Enter")
    expect(page.locator(".flashes .flash")).to_contain_text("Killed answers-enabled in prod")
    expect(page.locator("#env-prod")).to_contain_text("Killed")

    # A link in the navigation shows where the focus is too.
    nav_link = page.get_by_role("navigation", name="Application").get_by_role("link", name="Evals")
    tab_to(page, nav_link)
    topbar = page.locator(".topbar").evaluate("el => getComputedStyle(el).backgroundColor")
    assert_visible_focus(nav_link, behind=topbar)
    steps.shot(page, "nav-link-focused", full_page=False)
    assert page.js_errors == []
