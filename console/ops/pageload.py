"""How long a console page takes to load in Chromium, by the page's own clock: what
`manage.py bench_pages` reports and what the production browser journey checks.

A chart page is loaded when its first chart is drawn. Its text and tables come earlier (they
never wait for plotly.js), so each load also carries the browser's own timings, in ms from
navigation start: the HTML, the first and the largest contentful paint, plotly.js fetched and
then ready to use, DOMContentLoaded, the load event, the first and the last chart drawn.
"""

from __future__ import annotations

import os
import shutil
import time

# Launch flags for headless Chromium on a server: no sandbox (containers), no GPU, and nothing
# that reaches out on its own (updates, sync, background fetches).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 900}

# Installed before the page's own scripts (Page.add_init_script).
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
CHART_DRAWN = "[data-chart] .main-svg"


def chromium_path() -> str | None:
    """Chromium's executable: AIRLOCK_CHROMIUM (a path or a command name), else `chromium`."""
    configured = os.environ.get("AIRLOCK_CHROMIUM", "/usr/bin/chromium")
    if os.path.isfile(configured) and os.access(configured, os.X_OK):
        return configured
    return shutil.which(configured)


def timed_goto(page, url: str) -> tuple[float, dict]:
    """Seconds from navigation to the first chart drawn, and the browser's own timings. The page
    must have WATCH_CHARTS as an init script."""
    started = time.perf_counter()
    page.goto(url, wait_until="load")
    page.locator(CHART_DRAWN).first.wait_for()
    return time.perf_counter() - started, page.evaluate(NAVIGATION)
