"""One journey per role, in real Chromium, against the console as production runs it: bin/web
(gunicorn, DEBUG=0) on PostgreSQL and Redis with the demo seeded, one server for the module.
Each journey leaves numbered screenshots in test-artifacts/<journey>/.

The journeys share the server and its database, in file order: the approver decides first,
because a golden set version published later (the curator's) asks for fresh evidence."""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth import get_user_model

from console.accounts.models import ApiKey, Membership
from console.datasets.models import Dataset
from console.evals.models import EvalRun, ResultReview
from console.flags.models import FlagRules
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
NEWCOMER = "dana"


@pytest.fixture(scope="module")
def newcomer(production_web, django_db_blocker) -> str:
    """An account that exists but belongs to no application yet (committed: the server reads
    it; the module's teardown empties the database)."""
    with django_db_blocker.unblock():
        get_user_model().objects.create_user(NEWCOMER, f"{NEWCOMER}@airlock.local", "x" * 20)
    return NEWCOMER


@pytest.fixture
def worker(production_worker):
    return production_worker("personas")


def test_approver_approves_anothers_request_and_cannot_decide_their_own(production_page, artifacts):
    steps = Steps(artifacts, "approver")
    request = PromotionRequest.objects.get(application__key=APP, status="pending")
    assert request.requested_by.username == "engineer"
    approver = production_page()
    log_in(approver, "approver")
    approver.get_by_role("link", name=re.compile("Support bot")).click()
    approver.get_by_role("navigation", name="Application").get_by_role(
        "link", name="Releases"
    ).click()
    awaiting = approver.locator("section", has_text="Awaiting your decision")
    row = awaiting.locator("tr", has_text=f"#{request.pk} answer-question@3 → prod")
    expect(row).to_contain_text("policy gates met")
    steps.shot(approver, "inbox")

    row.get_by_role("link", name=re.compile(rf"#{request.pk} ")).click()
    evidence = approver.locator(".evidence")
    expect(evidence).to_contain_text("support-golden@1")
    expect(evidence).to_contain_text("passed")
    steps.shot(approver, "evidence")
    approver.get_by_placeholder("Comment (required to reject)").fill("Evidence is solid.")
    approver.get_by_role("button", name="Approve").click()
    expect(approver.locator(".flashes")).to_contain_text(f"You approved #{request.pk}.")
    expect(approver.locator("h1")).to_contain_text("Approved")
    steps.shot(approver, "approved")

    # The approver permission does not let anyone decide their own request: an admin (who holds
    # it) asks to loosen prod's policy and finds no Approve button on their own request.
    admin = production_page()
    log_in(admin, "admin")
    admin.goto(f"/apps/{APP}/releases/policy/prod/")
    admin.get_by_label("Max error rate (0–1)").fill("0.2")
    admin.get_by_label(re.compile("^Why")).fill("The simulator's fault runs need headroom")
    admin.get_by_role("button", name="Save").click()
    own = PromotionRequest.objects.get(application__key=APP, kind="policy", status="pending")
    admin.goto(f"/apps/{APP}/releases/{own.pk}/")
    decide = admin.locator(".decide")
    expect(decide).to_contain_text("You cannot decide on your own request")
    expect(decide.get_by_role("button", name="Approve")).to_have_count(0)
    steps.shot(admin, "own-request")
    # Nor does the server take a hand-made approval of it.
    token = admin.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    answer = admin.request.post(
        f"/apps/{APP}/releases/{own.pk}/act/",
        form={"action": "approve", "comment": "mine", "csrfmiddlewaretoken": token},
    )
    assert answer.ok, answer.status
    assert "You cannot approve or reject your own request." in answer.text()
    own.refresh_from_db()
    assert own.status == "pending" and not own.approvals.exists()

    # The approver sees it too, and is told who decides.
    approver.goto(f"/apps/{APP}/releases/{own.pk}/")
    expect(approver.locator(".decide")).to_contain_text("Only another admin decides")
    expect(approver.locator(".decide").get_by_role("button", name="Approve")).to_have_count(0)
    steps.shot(approver, "policy-request")
    request.refresh_from_db()
    assert request.status == "approved"
    assert approver.js_errors == [] and admin.js_errors == []


def test_curator_edits_adds_and_publishes_a_golden_set(production_page, artifacts):
    steps = Steps(artifacts, "curator")
    dataset = Dataset.objects.get(application__key=APP, key="support-golden")
    item = dataset.draft_items.get(item_id="refunds-002")
    page = production_page()
    log_in(page, "curator")
    page.get_by_role("link", name=re.compile("Support bot")).click()
    page.get_by_role("navigation", name="Application").get_by_role(
        "link", name="Golden sets"
    ).click()
    page.get_by_role("link", name="support-golden").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Support golden set")
    expect(page.locator("#hints")).to_contain_text("of 60")
    steps.shot(page, "editor", full_page=False)

    # Inline edit: click the cell, type, Enter saves through htmx.
    page.locator(f"#cell-{item.pk}-question").click()
    box = page.locator(f"#cell-{item.pk}-question textarea")
    expect(box).to_be_focused()
    box.fill("Can I still get a refund if I lost the receipt?")
    box.press("Enter")
    expect(page.locator(f"#cell-{item.pk}-question")).to_contain_text("lost the receipt")
    steps.shot(page, "edited-inline", full_page=False)

    # Add an item: it appears at the top of the table.
    page.get_by_label("New question").fill("Can I change the delivery address after ordering?")
    page.get_by_role("button", name="Add item").click()
    new_row = page.locator("#items-body tr").first
    expect(new_row).to_contain_text("Can I change the delivery address after ordering?")
    steps.shot(page, "added", full_page=False)
    assert dataset.draft_items.count() == 61

    # Publish v2: the preview lists what changed.
    page.goto(f"/apps/{APP}/datasets/support-golden/publish/")
    expect(page.locator(".plan-cell.added")).to_contain_text("1 added")
    expect(page.locator(".plan-cell.changed")).to_contain_text("1 changed")
    expect(page.locator(".item-change", has_text="refunds-002")).to_contain_text("lost the receipt")
    page.get_by_label("Message").fill("Clearer refund question, one address question")
    steps.shot(page, "publish-preview")
    page.get_by_role("button", name="Publish v2").click()
    expect(page.locator(".flash")).to_contain_text("Published support-golden v2")
    steps.shot(page, "published")
    dataset.refresh_from_db()
    assert dataset.latest_number == 2
    assert dataset.versions.get(number=2).items.count() == 61
    assert page.js_errors == []


def test_curator_reviews_an_answer_and_sees_how_far_the_judge_agrees(production_page, artifacts):
    steps = Steps(artifacts, "reviewer")
    reviewed = ResultReview.objects.select_related("result__run")
    run = reviewed.first().result.run  # the demo's reviewed run (answer-question v3)
    before = reviewed.count()
    page = production_page()
    log_in(page, "curator")
    page.goto(f"/apps/{APP}/evals/{run.pk}/")
    card = page.locator(".human-review")
    expect(card).to_contain_text(f"{before} of {run.done_items - run.error_items} answers")
    expect(card.get_by_role("columnheader", name="Cohen's κ")).to_be_visible()
    steps.shot(page, "run-with-reviews", full_page=False)

    # The queue: only answers nobody reviewed; mark the first one fail, with a note, in place.
    page.get_by_role("link", name="To review").click()
    expect(page.get_by_role("link", name="To review")).to_have_class(re.compile("active"))
    row = page.locator("table.results tbody tr").first
    item = row.locator("code").first.inner_text()
    row.get_by_label(f"Note on {item}").fill("Right answer, but it cites no source.")
    row.get_by_role("button", name="Fail").click()
    cell = row.locator("td.review")
    expect(cell.locator(".verdict")).to_have_text("fail")
    expect(cell).to_contain_text("by curator")
    expect(cell).to_contain_text("cites no source")
    steps.shot(page, "reviewed-in-place", full_page=False)
    review = ResultReview.objects.get(result__run=run, result__item_id=item)
    assert (review.verdict, review.reviewer.username) == ("fail", "curator")
    page.reload()
    expect(page.locator(".human-review")).to_contain_text(f"{before + 1} of")
    assert page.js_errors == []


def test_engineer_launches_an_eval_compares_and_kills_a_switch(
    demo_simulator,  # noqa: F811 - the fixture imported above
    worker,
    production_page,
    artifacts,
):
    steps = Steps(artifacts, "engineer")
    previous = (
        EvalRun.objects.filter(application__key=APP, dataset_version__head__key="support-golden")
        .order_by("-pk")
        .first()
    )
    page = production_page()
    log_in(page, "engineer")

    page.goto(f"/apps/{APP}/evals/")
    page.get_by_role("link", name="Launch eval").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Launch an eval")
    # On the golden set the previous run used (the curator may have published v2 since), so
    # the two runs compare item by item.
    page.get_by_label("Golden set version").select_option(str(previous.dataset_version_id))
    page.get_by_label("Concurrency").fill("8")
    steps.shot(page, "launch")
    page.get_by_role("button", name="Launch").click()
    expect(page).to_have_url(re.compile(rf"/apps/{APP}/evals/\d+/$"))
    run = wait_for(
        lambda: EvalRun.objects.filter(application__key=APP, pk__gt=previous.pk).first(),
        10,
        "the launched run",
    )
    expect(page.get_by_role("status")).to_contain_text(f"Launched run #{run.pk}.")
    steps.shot(page, "running", full_page=False)

    # The worker runs it; htmx polls, and the page reloads with the verdict.
    expect(page.get_by_role("heading", name="Verdict")).to_be_visible(timeout=90_000)
    expect(page.locator("h1 .verdict")).to_have_text("passed")
    expect(page.locator("#results")).to_contain_text("60 items")
    steps.shot(page, "results", full_page=False)
    run.refresh_from_db()
    assert (run.status, run.verdict) == ("completed", "passed")

    # Compare the previous run with the new one.
    page.get_by_role("navigation", name="Application").get_by_role("link", name="Evals").click()
    expect(page.get_by_label(f"Compare to run {run.pk}")).to_be_checked()
    page.get_by_label(f"Compare from run {previous.pk}").check()
    page.get_by_role("button", name="Compare A → B").click()
    expect(page.locator(".headline")).to_contain_text("Paired over 60 items")
    expect(page.locator("[data-chart] .plot-container").first).to_be_visible()
    steps.shot(page, "compare")

    # An incident: kill answers-enabled in prod, with a reason.
    page.get_by_role("navigation", name="Application").get_by_role("link", name="Flags").click()
    page.get_by_role("link", name="answers-enabled").click()
    prod = page.locator("#env-prod")
    prod.get_by_text("Kill switch…").click()
    prod.get_by_label(re.compile("Why kill it")).fill("Answers quote the old refund policy")
    steps.shot(page, "kill-confirm")
    prod.get_by_role("button", name="Kill answers-enabled in prod now").click()
    expect(page.locator(".flashes .flash")).to_contain_text("Killed answers-enabled in prod")
    expect(page.locator("#env-prod")).to_contain_text("Killed")
    steps.shot(page, "killed")
    state = FlagRules.objects.get(
        flag__application__key=APP, flag__key="answers-enabled", environment__key="prod"
    )
    assert state.killed
    assert page.js_errors == []


def test_admin_adds_a_member_creates_a_key_and_reads_the_audit_log(
    production_page, artifacts, newcomer
):
    steps = Steps(artifacts, "admin")
    page = production_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, "admin")
    page.get_by_role("link", name=re.compile("Support bot")).click()
    nav = page.get_by_role("navigation", name="Application")

    def admin_page(name: str) -> None:
        """Members, API keys and Webhooks sit in the menu's Admin group."""
        nav.locator("summary", has_text="Admin").click()
        nav.get_by_role("link", name=name).click()

    admin_page("Members")
    page.get_by_label("Username", exact=True).fill(newcomer)
    page.get_by_label("Role", exact=True).select_option("curator")
    steps.shot(page, "add-member")
    page.get_by_role("button", name="Grant role").click()
    expect(page.locator("tbody")).to_contain_text(newcomer)
    expect(page.get_by_label(f"Role of {newcomer}")).to_have_value("curator")
    steps.shot(page, "member-added")
    assert Membership.objects.get(user__username=newcomer, application__key=APP).role == "curator"

    admin_page("API keys")
    page.get_by_label("Name", exact=True).fill("support-web-staging")
    page.get_by_label("Environment").select_option("staging")
    page.get_by_label(re.compile("config:read")).check()
    steps.shot(page, "create-key")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("[data-new-key]")
    expect(secret).to_be_visible()
    shown = secret.inner_text()
    key = ApiKey.objects.get(name="support-web-staging")
    assert shown.startswith(key.prefix) and len(shown) > len(key.prefix)
    page.get_by_role("button", name="Copy the new key").click()
    assert page.evaluate("navigator.clipboard.readText()") == shown
    steps.shot(page, "key-shown-once")
    page.reload()  # a reload does not show it again
    expect(page.locator("body")).not_to_contain_text(shown)
    expect(page.locator("tbody")).to_contain_text("support-web-staging")
    steps.shot(page, "key-listed")

    nav.get_by_role("link", name="Audit").click()
    results = page.locator("#results")
    expect(results).to_contain_text("api_key.create")
    expect(results).to_contain_text(newcomer)
    steps.shot(page, "audit", full_page=False)
    assert page.js_errors == []
