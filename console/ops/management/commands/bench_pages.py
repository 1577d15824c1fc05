"""Browser load times of the console's chart pages (run compare, costs) as production serves
them: `bin/web` (gunicorn, DEBUG=0, static files compressed and long-cached by WhiteNoise) on
this process's database with the demo seeded, loaded by headless Chromium driven by Playwright.
Prints ONE JSON line.

For each page, `--cold` loads each in a fresh browser context (signed in, nothing cached) and
`--warm` loads of the same page again in one context (static files cached). A load lasts from
navigation start to the first chart drawn, by the page's own clock (`first_chart_ms`); text and
tables are painted before it. Each figure is the median with the min and max, the browser's
other timings of the median load (first contentful paint, DOMContentLoaded, plotly.js ready,
the last chart in view, in ms from navigation start), the same loads' wall-clock seconds as the
harness saw them (`harness_s`: Playwright's round trips included), and whether the median meets
the aim: under 1 s cold, under 300 ms warm. Run it on a quiet machine: these are elapsed times.

Needs Chromium (AIRLOCK_CHROMIUM, default /usr/bin/chromium) and the dev extra (playwright).
Seeds the demo (idempotent) in the database it runs on, which should be PostgreSQL.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.urls import reverse

from console.config import SIMULATOR_ADDRESS
from console.evals.models import EvalRun
from console.ops.management.commands.seed_demo import DEMO_PASSWORD
from console.ops.pageload import CHROMIUM_ARGS, VIEWPORT, WATCH_CHARTS, chromium_path, timed_goto
from console.ops.processes import production_env, running_web

APP = "support-bot"
AIMS_MS = {"cold": 1000, "warm": 300}


def summarise(loads: list[tuple[float, dict]]) -> dict:
    """Median, min and max ms to the first chart of `loads` (by the page's clock), the median
    wall-clock seconds, and the browser's timings of the median load."""
    ranked = sorted(loads, key=lambda load: load[1]["first_chart_ms"])
    chart_ms = [timings["first_chart_ms"] for _, timings in ranked]
    return {
        "first_chart_ms": {
            "median": round(statistics.median(chart_ms)),
            "min": chart_ms[0],
            "max": chart_ms[-1],
        },
        "harness_s": round(statistics.median(seconds for seconds, _ in ranked), 3),
        "loads": len(ranked),
        "timings_ms": ranked[(len(ranked) - 1) // 2][1],
    }


class Command(BaseCommand):
    help = "Time the chart pages' cold and warm loads in Chromium against bin/web; one JSON line."

    def add_arguments(self, parser):
        parser.add_argument("--cold", type=int, default=5, help="cold loads per page")
        parser.add_argument("--warm", type=int, default=5, help="warm loads per page")
        parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")

    def handle(self, *args, cold: int, warm: int, workers: int, **options):
        if cold < 1 or warm < 1:
            raise CommandError("--cold and --warm must each be at least 1")
        chromium = chromium_path()
        if chromium is None:
            raise CommandError(
                f"Chromium not found at {os.environ.get('AIRLOCK_CHROMIUM', '/usr/bin/chromium')}:"
                " install it (apt-get install chromium) or set AIRLOCK_CHROMIUM to its path"
            )
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as exc:
            raise CommandError(
                "bench_pages drives Chromium with Playwright: pip install -e '.[dev]'"
            ) from exc
        if connection.vendor != "postgresql":
            self.stderr.write("bench_pages: not on PostgreSQL; production figures need it")

        # The demo's evals call the bundled simulator, which seed_demo serves while it seeds.
        if SIMULATOR_ADDRESS not in settings.AIRLOCK_EGRESS_ALLOW:
            settings.AIRLOCK_EGRESS_ALLOW = [*settings.AIRLOCK_EGRESS_ALLOW, SIMULATOR_ADDRESS]
        call_command("seed_demo", stdout=io.StringIO())
        runs = list(EvalRun.objects.filter(application__key=APP).order_by("pk")[:2])
        if len(runs) < 2:
            raise CommandError("the demo holds fewer than two eval runs to compare")
        pages = {
            "compare": f"{reverse('evals:compare', args=[APP])}?a={runs[0].pk}&b={runs[1].pk}",
            "costs": reverse("usage:dashboard", args=[APP]),
        }

        data_dir = Path(tempfile.mkdtemp(prefix="airlock-bench-pages-"))
        try:
            env = production_env(workers=workers, data_dir=data_dir)
            with running_web(env) as base, sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=chromium, headless=True, args=CHROMIUM_ARGS
                )
                try:
                    results = self._measure(browser, base, pages, cold, warm)
                finally:
                    browser.close()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

        line = {
            "server": f"bin/web: gunicorn, {workers} workers, DEBUG off, 127.0.0.1",
            "browser": f"{chromium} (headless)",
            "viewport": f"{VIEWPORT['width']}x{VIEWPORT['height']}",
            "measures": "ms from navigation start to the first chart drawn, by the page's clock",
            "aims_ms": AIMS_MS,
            **results,
            "met": {
                f"{name}_{kind}": results[name][kind]["first_chart_ms"]["median"] < AIMS_MS[kind]
                for name in pages
                for kind in ("cold", "warm")
            },
        }
        self.stdout.write(json.dumps(line))

    def _measure(self, browser, base: str, pages: dict[str, str], cold: int, warm: int) -> dict:
        signed_in = browser.new_context(base_url=base, viewport=VIEWPORT)
        page = signed_in.new_page()
        page.goto(reverse("accounts:login"))
        page.get_by_label("Username").fill("engineer")
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/accounts/login" not in url)
        cookies = signed_in.cookies()
        signed_in.close()

        errors: list[str] = []
        results: dict[str, dict] = {}
        for name, url in pages.items():
            cold_loads, warm_loads = [], []
            for number in range(cold):
                context = browser.new_context(base_url=base, viewport=VIEWPORT)
                context.add_cookies(cookies)  # signed in, but nothing cached
                context.set_default_timeout(30_000)
                tab = context.new_page()
                tab.add_init_script(WATCH_CHARTS)
                tab.on("pageerror", lambda exc: errors.append(str(exc)))
                cold_loads.append(timed_goto(tab, url))
                if number == cold - 1:  # the last fresh context goes on to the warm loads
                    warm_loads = [timed_goto(tab, url) for _ in range(warm)]
                context.close()
            results[name] = {
                "url": url,
                "cold": summarise(cold_loads),
                "warm": summarise(warm_loads),
            }
        if errors:
            raise CommandError(f"the pages raised JavaScript errors: {errors[:3]}")
        return results
