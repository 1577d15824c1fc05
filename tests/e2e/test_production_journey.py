"""The console as `docker compose up` serves it: bin/web (gunicorn) with DEBUG=0, PostgreSQL and
Redis, its static files served by the web process itself. A person signs in, sees a styled
dashboard with htmx working, and the compare and costs pages draw their Plotly charts; plotly.js
is fetched compressed and only by those pages. Load times are written to test-artifacts/."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from console.evals.models import EvalRun
from console.ops.pageload import WATCH_CHARTS, timed_goto
from tests.deploy.test_processes import ROOT, production_environment
from tests.e2e.conftest import DEMO_PASSWORD, VIEWPORT
from tests.simulator_port import simulator_port

pytestmark = pytest.mark.e2e
APP = "support-bot"
# Cold: a fresh browser profile, nothing cached. Warm: the same page again, static files cached
# (the median of WARM_LOADS loads, so one stall of a shared machine does not decide it).
# These bounds only catch a page that hangs (a chart waiting on a timeout, plotly.js refetched
# on every load): this test runs beside the whole parallel suite on two cores, where a warm load
# has taken 1.5 s and a cold one 3.9 s. The aims (1 s cold, 300 ms warm) are measured on a quiet
# machine by `manage.py bench_pages`.
COLD_LIMIT_S = 15.0
WARM_LIMIT_S = 5.0
WARM_LOADS = 5
PLOTLY = re.compile(r"/static/vendor/plotly/plotly-airlock\.min\.[0-9a-f]{12}\.js$")


def test_a_person_uses_the_production_console(browser, production_web, production_db, artifacts):
    from playwright.sync_api import expect

    context = browser.new_context(base_url=production_web, viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    statics: dict[str, dict] = {}
    page.on(
        "response",
        lambda r: (
            statics.setdefault(r.url, {"status": r.status, **r.headers})
            if "/static/" in r.url
            else None
        ),
    )

    page.goto("/")
    page.get_by_label("Username").fill("engineer")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/accounts/login" not in url)

    # Dashboard: the stylesheet applies, htmx is loaded, plotly.js is not fetched.
    page.goto(f"/apps/{APP}/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(244, 245, 248)"
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).display") == "flex"
    assert page.evaluate("typeof window.htmx") == "object"
    assert not any("plotly" in url for url in statics), list(statics)
    bad = {url: h["status"] for url, h in statics.items() if h["status"] != 200}
    assert not bad, bad
    page.screenshot(path=artifacts / "production-dashboard.png", full_page=True)

    # An htmx exchange: unticking the judge scorers re-renders the cost estimate from the server.
    page.goto(f"/apps/{APP}/evals/new/")
    figure = page.locator("#estimate .estimate-figure")
    before = figure.inner_text()
    with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true") as hx:
        page.get_by_label("Faithfulness (LLM judge)").uncheck()
    assert hx.value.status == 200
    page.get_by_label("Answer relevance (LLM judge)").uncheck()
    expect(figure).not_to_have_text(before)
    page.screenshot(path=artifacts / "production-htmx-estimate.png", full_page=True)

    # The chart pages: Plotly draws, from a compressed, long-cached plotly.js.
    runs = list(EvalRun.objects.filter(application__key=APP).order_by("pk")[:2])
    compare = f"/apps/{APP}/evals/compare/?a={runs[0].pk}&b={runs[1].pk}"
    costs = f"/apps/{APP}/usage/"
    timings = {}
    for name, url in (("compare", compare), ("costs", costs)):
        cold_context = browser.new_context(base_url=production_web, viewport=VIEWPORT)
        cold_context.add_cookies(context.cookies())  # signed in, but nothing cached
        cold = cold_context.new_page()
        cold.add_init_script(WATCH_CHARTS)
        cold.on("pageerror", lambda exc: errors.append(str(exc)))
        seen: dict[str, dict] = {}
        cold.on("response", lambda r, seen=seen: seen.setdefault(r.url, r.headers))
        timings[f"{name}_cold_s"], timings[f"{name}_cold"] = timed_goto(cold, url)
        warm = sorted((timed_goto(cold, url) for _ in range(WARM_LOADS)), key=lambda t: t[0])
        timings[f"{name}_warm_s"], timings[f"{name}_warm"] = warm[WARM_LOADS // 2]
        timings[f"{name}_warm_all_s"] = [round(t[0], 3) for t in warm]
        # Text and tables never wait for the charts: they are painted, and DOMContentLoaded
        # comes, before any chart is drawn (one per frame afterwards, those in view first).
        for load in (timings[f"{name}_cold"], *[t[1] for t in warm]):
            assert load["dom_ready_ms"] <= load["first_chart_ms"], load
            assert 0 <= load["first_paint_ms"] < load["first_chart_ms"], load
        charts = cold.locator("[data-chart].js-plotly-plot")
        assert charts.count() >= 2, name
        expect(charts.first.locator(".main-svg").first).to_be_visible()
        plotly = [u for u in seen if PLOTLY.search(u)]
        assert plotly, list(seen)
        headers = seen[plotly[0]]
        assert headers.get("content-encoding") in {"br", "gzip"}, headers
        assert "immutable" in headers.get("cache-control", ""), headers
        cold.screenshot(path=artifacts / f"production-{name}.png", full_page=True)
        cold_context.close()
    context.close()
    (artifacts / "production-load-times.json").write_text(json.dumps(timings, indent=2))
    print("load times (s):", timings)
    assert not errors, errors
    for name in ("compare", "costs"):
        assert timings[f"{name}_cold_s"] < COLD_LIMIT_S, timings
        assert timings[f"{name}_warm_s"] < WARM_LIMIT_S, timings


def test_bench_pages_times_the_chart_pages_in_chromium(production_web, production_db, tmp_path):
    """`manage.py bench_pages`, run as a person runs it, starts its own bin/web on the demo this
    module seeded and prints one JSON line whose timings tell a consistent story for each page
    and kind of load."""
    env = production_environment(settings.CELERY_BROKER_URL, tmp_path)
    # seed_demo (idempotent: the demo is already here) may serve the simulator's port.
    with simulator_port():
        done = subprocess.run(
            [sys.executable, "manage.py", "bench_pages", "--cold", "1", "--warm", "2"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    out = io.StringIO(done.stdout)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    assert result["aims_ms"] == {"cold": 1000, "warm": 300}
    for name in ("compare", "costs"):
        for kind, loads in (("cold", 1), ("warm", 2)):
            figure = result[name][kind]
            assert figure["loads"] == loads
            chart = figure["first_chart_ms"]
            assert 0 < chart["min"] <= chart["median"] <= chart["max"], figure
            timings = figure["timings_ms"]
            assert 0 <= timings["first_paint_ms"] < timings["first_chart_ms"], timings
            assert timings["ttfb_ms"] <= timings["dom_ready_ms"] <= timings["first_chart_ms"]
            assert figure["harness_s"] * 1000 >= chart["min"]
            met = result["met"][f"{name}_{kind}"]
            assert met is (chart["median"] < result["aims_ms"][kind])
    # A chart page fetches plotly.js.
    assert result["costs"]["cold"]["timings_ms"]["plotly_fetched_ms"] > 0


def test_bench_pages_says_where_chromium_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRLOCK_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(CommandError, match=r"no-chromium.*AIRLOCK_CHROMIUM"):
        call_command("bench_pages", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--cold and --warm"):
        call_command("bench_pages", cold=0, stdout=io.StringIO())
