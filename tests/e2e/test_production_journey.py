"""The console as `docker compose up` serves it: bin/web (gunicorn) with DEBUG=0, PostgreSQL and
Redis, its static files served by the web process itself. A person signs in, sees a styled
dashboard with htmx working, and the compare and costs pages draw their Plotly charts; plotly.js
is fetched compressed and only by those pages. Load times are written to test-artifacts/."""

from __future__ import annotations

import json
import re
import time

import pytest

from console.evals.models import EvalRun
from tests.e2e.conftest import DEMO_PASSWORD, VIEWPORT

pytestmark = pytest.mark.e2e
APP = "support-bot"
# Cold: a fresh browser profile, nothing cached. Warm: the same page again, static files cached
# (the median of WARM_LOADS loads, so one stall of a shared machine does not decide it).
# The aim is 1 s cold and 300 ms warm; the bounds leave room for a busy shared 2-core machine,
# where plotly.js alone takes 1-2 s to compile and run on a cold load.
COLD_LIMIT_S = 5.0
WARM_LIMIT_S = 1.5
WARM_LOADS = 3
PLOTLY = re.compile(r"/static/vendor/plotly/plotly-airlock\.min\.[0-9a-f]{12}\.js$")


# Where a chart page's time goes, by the page's own clock (ms from navigation start): the HTML,
# the first and the largest contentful paint (the page's text and tables, which never wait for
# plotly.js), plotly.js fetched and then ready to use, DOMContentLoaded, the first and the last
# chart drawn.
WATCH_CHARTS = """(() => {
  let plotly;
  window.__timings = {};
  Object.defineProperty(window, "Plotly", {configurable: true, get() { return plotly; },
    set(value) {
      plotly = value;
      window.__timings.plotly_ready_ms = Math.round(performance.now());
    }});
  new MutationObserver(() => {
    const drawn = document.querySelectorAll("[data-chart] .main-svg").length;
    if (!drawn) return;
    const now = Math.round(performance.now());
    window.__timings.first_chart_ms = window.__timings.first_chart_ms || now;
    const charts = document.querySelectorAll("[data-chart]").length;
    if (document.querySelectorAll("[data-chart].js-plotly-plot").length === charts) {
      window.__timings.last_chart_ms = window.__timings.last_chart_ms || now;
    }
  }).observe(document, {childList: true, subtree: true});
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      window.__timings.largest_paint_ms = Math.round(entry.startTime);
    }
  }).observe({type: "largest-contentful-paint", buffered: true});
})()"""
NAVIGATION = """() => {
  const n = performance.getEntriesByType("navigation")[0];
  const plotly = performance.getEntriesByType("resource").find(e => e.name.includes("/plotly"));
  return {ttfb_ms: Math.round(n.responseStart),
          html_done_ms: Math.round(n.responseEnd),
          first_paint_ms: Math.round(
            performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? -1),
          plotly_fetched_ms: plotly ? Math.round(plotly.responseEnd) : null,
          dom_ready_ms: Math.round(n.domContentLoadedEventEnd),
          load_ms: Math.round(n.loadEventEnd),
          ...window.__timings};
}"""


def timed_goto(page, url: str) -> tuple[float, dict]:
    """Seconds from navigation to the first chart drawn, and the browser's own timings."""
    started = time.perf_counter()
    page.goto(url, wait_until="load")
    page.locator("[data-chart] .main-svg").first.wait_for()
    return time.perf_counter() - started, page.evaluate(NAVIGATION)


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
