"""An engineer launches an eval in real Chromium, watches htmx progress reach 100% as a real
Celery worker runs it (PostgreSQL + Redis + the simulator on port 8100), reads the verdict and
opens the comparison with the previous run, Plotly charts included."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request

import pytest
from django.core.management import call_command

from console.evals.demo import _port_free
from console.evals.models import EvalResult, EvalRun
from console.evals.simulator import Faults, serve_in_thread
from tests.e2e.conftest import log_in
from tests.evals.workers import dedicated_broker_url, publishing_to, workers
from tests.simulator_port import simulator_port

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra is not installed
    if os.environ.get("AIRLOCK_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("needs the playwright package (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.services]

APP = "support-bot"
SIMULATOR_PORT = 8100  # the demo model configs call http://127.0.0.1:8100/v1


def is_airlock_simulator(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return {"status", "requests", "429"} <= set(json.loads(response.read()))
    except (OSError, ValueError):
        return False


@pytest.fixture
def demo_simulator():
    """The simulator on 8100 (ours when the port is free; a running `llm_simulator` — also
    deterministic — otherwise). Yields our Faults, or None when it is not ours."""
    with simulator_port():
        if not _port_free(SIMULATOR_PORT):
            assert is_airlock_simulator(SIMULATOR_PORT), "port 8100 is taken by something else"
            yield None
            return
        faults = Faults()
        server, _ = serve_in_thread(SIMULATOR_PORT, faults)
        try:
            yield faults
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def worker(postgres_tx, redis_url, tmp_path, live_server):
    broker = dedicated_broker_url(redis_url)
    with publishing_to(broker), workers(broker, tmp_path) as start:
        yield start("e2e")


def test_engineer_launches_an_eval_watches_it_and_compares(
    demo_simulator, worker, new_page, artifacts
):
    with simulator_port():  # seed_demo may serve 127.0.0.1:8100
        call_command("seed_demo", verbosity=0)
    previous = (
        EvalRun.objects.filter(application__key=APP, dataset_version__head__key="support-golden")
        .order_by("-created_at")
        .first()
    )
    # The demo evaluates on the model prod serves (gpt-main@1); the form defaults to the newest.
    assert previous.label == "answer-question@3 × gpt-main@1 on support-golden@1"
    assert previous.verdict == "passed"
    last_before = EvalRun.objects.filter(application__key=APP).order_by("-pk")[0].pk  # safety runs
    if demo_simulator is not None:
        demo_simulator.latency_ms = 40  # slow enough to watch the progress bar move

    page = new_page()
    log_in(page, "engineer")
    page.goto(f"/apps/{APP}/evals/")
    page.get_by_role("link", name="Launch eval").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Launch an eval")

    # Defaults: newest golden set, prompt and model; the judge model and prompts preselected.
    expect(page.get_by_label("Golden set version")).to_have_value(str(previous.dataset_version_id))
    expect(page.get_by_label("Prompt version")).to_have_value(str(previous.prompt_version_id))
    expect(page.get_by_label("Gates")).to_have_value(re.compile(r"faithfulness >= 0\.85"))
    estimate = page.locator("#estimate")
    expect(estimate).to_contain_text("60 items")
    # The gates judge faithfulness and relevance, so the LLM-as-judge scorers start ticked and
    # the estimate includes the judge's calls; unticking them (htmx, on change) drops it.
    expect(page.get_by_label("Faithfulness (LLM judge)")).to_be_checked()
    expect(page.get_by_label("Answer relevance (LLM judge)")).to_be_checked()
    expect(estimate.locator(".estimate-figure")).to_have_text("≈ $0.1909")
    page.get_by_label("Faithfulness (LLM judge)").uncheck()
    page.get_by_label("Answer relevance (LLM judge)").uncheck()
    expect(estimate.locator(".estimate-figure")).to_have_text("≈ $0.0057")
    page.get_by_label("Faithfulness (LLM judge)").check()
    page.get_by_label("Answer relevance (LLM judge)").check()
    expect(estimate.locator(".estimate-figure")).to_have_text("≈ $0.1909")
    page.get_by_label("Concurrency").fill("3")
    page.screenshot(path=artifacts / "eval-launch.png", full_page=True)

    page.get_by_role("button", name="Launch").click()
    expect(page).to_have_url(re.compile(rf"/apps/{APP}/evals/\d+/$"))
    run = EvalRun.objects.get(application__key=APP, pk__gt=last_before)
    expect(page.get_by_role("status")).to_contain_text(f"Launched run #{run.pk}.")
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Run #{run.pk}")

    # htmx polls #progress every second while the worker runs the items.
    progress = page.locator("#progress")
    seen: list[int] = []

    def look() -> None:
        try:
            text = progress.inner_text(timeout=2000)
        except PlaywrightError:  # the page is reloading (HX-Refresh) under us
            return
        match = re.search(r"\d+ of 60 items · (\d+)%", text)
        if match:
            seen.append(int(match.group(1)))

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not page.get_by_role("heading", name="Verdict").count():
        look()
        time.sleep(0.2)
    # When the run finishes the fragment answers HX-Refresh: the page reloads with the verdict.
    expect(progress).to_contain_text("60 of 60 items · 100%")
    expect(page.get_by_role("heading", name="Verdict")).to_be_visible()
    look()
    assert seen[-1] == 100
    assert seen == sorted(seen), seen  # never goes backwards
    if demo_simulator is not None:  # our simulator is slow enough to see it part-way
        assert any(0 < p < 100 for p in seen), seen
    expect(page.locator("h1 .verdict")).to_have_text("passed")
    expect(page.locator(".verdict-reason")).to_have_text("all gates met")
    expect(page.locator("table.gates tbody tr")).to_have_count(6)
    expect(page.locator("#results")).to_contain_text("60 items")
    # The results table makes the page ~12,000 px tall: keep the verdict, metrics and first rows.
    page.screenshot(
        path=artifacts / "eval-run.png",
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1366, "height": 1600},
    )

    run.refresh_from_db()
    assert (run.status, run.verdict, run.concurrency) == ("completed", "passed", 3)
    ids = list(EvalResult.objects.filter(run=run).values_list("item_id", flat=True))
    assert len(ids) == len(set(ids)) == 60
    for key in ("pass_rate", "faithfulness", "relevance", "recall_at_5", "cost_total"):
        assert run.metrics[key] == previous.metrics[key], key

    # Back to the list: A defaults to the previous run, B to the new one.
    page.get_by_role("link", name="Evals").first.click()
    expect(page.get_by_label(f"Compare from run {previous.pk}")).to_be_checked()
    expect(page.get_by_label(f"Compare to run {run.pk}")).to_be_checked()
    page.get_by_role("button", name="Compare A → B").click()
    expect(page).to_have_url(re.compile(r"/evals/compare/\?"))
    assert f"a={previous.pk}" in page.url and f"b={run.pk}" in page.url
    expect(page.locator(".headline")).to_contain_text("Paired over 60 items")
    pass_row = page.locator("table.deltas tbody tr", has_text="Pass rate")
    expect(pass_row).to_contain_text("no detectable difference")
    charts = page.locator("[data-chart] .plot-container")
    expect(charts).to_have_count(2)
    expect(page.locator("[data-chart=chart-scores] .plot-container svg").first).to_be_visible()
    page.screenshot(path=artifacts / "eval-compare.png", full_page=True)
    assert page.js_errors == []
