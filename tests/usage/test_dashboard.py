"""The cost dashboard and its CSV exports: totals from rollups, htmx filters, bad dates, a
bounded number of queries whatever the number of rollup rows, and anomaly detection."""

from __future__ import annotations

import csv
import io
import itertools
import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from console.accounts.roles import Role
from console.usage import selectors
from console.usage.models import LATENCY_BUCKETS_MS, UsageDaily, UsageHourly
from console.usage.services import anonymise, rebuild_daily
from tests.factories import make_application, make_member
from tests.usage.helpers import event, ingest, price, rollup

pytestmark = pytest.mark.django_db
M = 1_000_000
EXPORT_VIEWS = ["daily", "model", "prompt", "feature", "environment"]
MAX_DASHBOARD_QUERIES = 18  # 17, and one for the fallbacks fired


def day(n: int) -> datetime:
    return datetime.combine(timezone.now().date() - timedelta(days=n), time.min, UTC)


def url(application, name: str = "") -> str:
    return f"/apps/{application.key}/usage/{name}"


@pytest.fixture
def viewer_client(application, member):
    client = Client()
    client.force_login(member(Role.VIEWER, "reader"))
    return client


@pytest.fixture
def story(application, engineer):
    """Three days of known spend: prod $4 + $2 (two models), staging $1, an eval $0.50."""
    price(application, "gpt-4o-mini", day(30), "1", "0.5", "2")
    price(application, "gpt-4o", day(30), "2", "1", "4")
    ingest(
        application,
        "prod",
        [
            event("p1", day(2) + timedelta(hours=3), input_tokens=2 * M, feature="answer",
                  prompt_version="answer@2", latency_ms=90),
            event("p2", day(1) + timedelta(hours=3), input_tokens=2 * M, feature="answer",
                  prompt_version="answer@2", latency_ms=300, status="error"),
            event("p3", day(1) + timedelta(hours=4), model="gpt-4o", input_tokens=M,
                  cached_tokens=M, feature="escalate", latency_ms=1000, user_id="u-1"),
        ],
    )  # fmt: skip
    ingest(application, "staging", [event("s1", day(1) + timedelta(hours=5), input_tokens=M,
                                          feature="answer", user_id="u-1")])  # fmt: skip
    from console.usage import services

    services.ingest(
        application=application,
        environment=None,
        events=[event("e1", day(1) + timedelta(hours=6), input_tokens=M // 2, feature="eval")],
        source="eval",
    )
    rollup()
    return application


def rows_of(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_the_dashboard_shows_totals_from_rollups(story, viewer_client):
    params = {"since": day(3).date().isoformat(), "until": day(0).date().isoformat()}
    response = viewer_client.get(url(story), params)
    assert response.status_code == 200
    board = response.context["board"]
    assert board.totals["cost"] == Decimal("6.5")  # 2 + 2 + 1 (all cached) + 1 + 0.5 (eval)
    assert board.totals["requests"] == 5
    assert board.totals["errors"] == 1
    assert board.totals["eval_cost"] == Decimal("0.5")
    assert board.totals["savings"] == Decimal("1")  # gpt-4o cached: (2 − 1) × 1M / 1M
    assert [d["cost"] for d in board.days] == [0, Decimal(2), Decimal("4.5"), 0]
    by_env = {r["label"]: r["cost"] for r in board.breakdowns["environment"]}
    assert by_env == {"prod": Decimal(5), "staging": Decimal(1), "eval": Decimal("0.5")}
    by_model = {r["label"]: r["cost"] for r in board.breakdowns["model"]}
    assert by_model == {"gpt-4o-mini": Decimal("5.5"), "gpt-4o": Decimal(1)}
    assert board.features[0]["feature"] == "answer" and board.features[0]["cost"] == Decimal(5)
    assert board.latency["p50"] == 400.0  # 90, 300, 1000 → the 200–400 ms bucket's bound
    # u-1 spent $1 in prod and $1 in staging; only the anonymised id is shown.
    assert response.context["spenders"] == [{"user": anonymise("u-1")[:12], "cost": Decimal(2)}]
    html = response.content.decode()
    assert 'id="board"' in html and "<html" in html
    assert "$6.50" in html
    assert "/static/vendor/plotly/plotly-airlock.min.js" in html and "cdn" not in html.lower()


def test_the_vendored_plotly_bundle_is_the_plotly_js_the_python_package_targets():
    """Charts load Airlock's own plotly.js bundle (tools/plotly/build.sh: the core and the trace
    types the console draws, 1.2 MB against the full bundle's 4.8 MB): the same plotly.js version
    as the figures the plotly package builds are written for, and every trace type the console
    draws is registered in it."""
    from pathlib import Path

    import plotly

    full = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()[:200]
    root = Path(__file__).resolve().parents[2]
    vendored = (root / "static/vendor/plotly/plotly-airlock.min.js").read_text()
    wanted = re.search(r"plotly\.js v(\S+)", full)[1]
    assert (
        re.search(r"plotly\.js \(airlock: [a-z0-9,]+ - minified\) v(\S+)", vendored[:200])[1]
        == wanted
    )
    registered = set(re.findall(r'moduleType:"trace",name:"(\w+)"', vendored))
    drawn = set()
    for source in (root / "console").rglob("*.py"):
        drawn |= set(
            re.findall(
                r'"type": "(bar|box|histogram|pie|scatter\w*|\w+gl|\w*map\w*)"', source.read_text()
            )
        )
    assert drawn and drawn <= registered, (drawn, registered)
    assert len(vendored) < 1_300_000, "only the trace types the console draws"


def kpis(html: str) -> list[str]:
    return re.findall(r'<span class="kpi-value[^"]*">([^<]*)</span>', html)


def test_filters_swap_the_board_through_htmx(story, viewer_client):
    params = {
        "since": day(3).date().isoformat(),
        "until": day(0).date().isoformat(),
        "environment": "staging",
    }
    htmx = {"HX-Request": "true", "HX-Target": "board"}
    response = viewer_client.get(url(story), params, headers=htmx)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="board">')
    assert "<html" not in html and "<form" not in html
    # Spend, requests, cost per 1k, projection, cache savings, eval spend.
    assert kpis(html)[:3] == ["$1.00", "1", "$1000.00"]
    only_evals = viewer_client.get(
        url(story), {**params, "environment": "", "source": "eval"}, headers=htmx
    )
    assert kpis(only_evals.content.decode())[:2] == ["$0.50", "1"]
    assert kpis(only_evals.content.decode())[5] == "$0.50"
    by_model = viewer_client.get(url(story), {**params, "environment": "", "model": "gpt-4o"})
    assert by_model.context["board"].totals["requests"] == 1
    # Without the htmx target the whole page comes back, filters form included.
    full = viewer_client.get(url(story), params).content.decode()
    assert "<html" in full and 'hx-target="#board"' in full


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "2026-13-45"}, "since: '2026-13-45' is not a date (YYYY-MM-DD)"),
        ({"until": "soon"}, "until: 'soon' is not a date (YYYY-MM-DD)"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "since: must not be after until"),
        ({"since": "2020-01-01", "until": "2026-01-01"}, "since: at most 400 days at a time"),
    ],
)
def test_bad_dates_are_an_error_message_not_a_500(story, viewer_client, params, message):
    page = viewer_client.get(url(story), params)
    assert page.status_code == 200
    assert message.replace("'", "&#x27;") in page.content.decode()
    export = viewer_client.get(url(story, "export.csv"), {**params, "view": "daily"})
    assert export.status_code == 400
    assert message in export.content.decode()


def test_csv_export_of_every_view(story, viewer_client):
    params = {"since": day(3).date().isoformat(), "until": day(0).date().isoformat()}
    daily = viewer_client.get(url(story, "export.csv"), {**params, "view": "daily"})
    assert daily.status_code == 200 and daily["Content-Type"] == "text/csv"
    assert f"usage-daily-{params['since']}-{params['until']}.csv" in daily["Content-Disposition"]
    rows = rows_of(daily)
    assert rows[0] == [
        "day", "cost_usd", "requests", "errors", "cost_per_request", "cache_savings", "eval_cost",
        "shadow_cost",
    ]  # fmt: skip
    assert [(r[0], Decimal(r[1]), int(r[2])) for r in rows[1:]] == [
        (day(3).date().isoformat(), 0, 0),
        (day(2).date().isoformat(), Decimal(2), 1),
        (day(1).date().isoformat(), Decimal("4.5"), 4),
        (day(0).date().isoformat(), 0, 0),
    ]
    expected = {
        "model": {"gpt-4o-mini": Decimal("5.5"), "gpt-4o": Decimal(1)},
        "prompt": {"answer@2": Decimal(4), "(none)": Decimal("2.5")},
        "feature": {"answer": Decimal(5), "escalate": Decimal(1), "eval": Decimal("0.5")},
        "environment": {"prod": Decimal(5), "staging": Decimal(1), "eval": Decimal("0.5")},
    }
    for view, totals in expected.items():
        response = viewer_client.get(url(story, "export.csv"), {**params, "view": view})
        rows = rows_of(response)
        assert rows[0] == [view, "cost_usd", "requests"]
        assert {r[0]: Decimal(r[1]) for r in rows[1:]} == totals, view
    assert viewer_client.get(url(story, "export.csv"), {"view": "nope"}).status_code == 400


def test_outsiders_do_not_see_the_dashboard(story):
    other = make_application("elsewhere")
    client = Client()
    client.force_login(make_member(other, Role.ADMIN, "stranger"))
    assert client.get(url(story)).status_code == 404
    assert client.get(url(story, "export.csv")).status_code == 404
    assert Client().get(url(story)).status_code == 302  # to the login page


def make_rollups(application, count: int) -> None:
    """`count` distinct rollup rows over the last 30 days, written directly."""
    envs = list(application.environments.all())
    combos = itertools.product(
        range(30 * 24), envs, ["gpt-4o-mini", "gpt-4o"], ["answer@1", "answer@2"], ["a", "b", "c"]
    )
    start = day(29)
    rows = []
    for hour, env, model, prompt, feature in itertools.islice(combos, count):
        rows.append(
            UsageHourly(
                application=application,
                environment=env,
                hour=start + timedelta(hours=hour % (30 * 24)),
                model=model,
                prompt_version=prompt,
                feature=feature,
                requests=10,
                errors=1,
                input_tokens=10_000,
                output_tokens=1_000,
                cost=Decimal("0.25"),
                cache_savings=Decimal("0.01"),
                latency_buckets=[1] * (len(LATENCY_BUCKETS_MS) + 1),
            )
        )
    UsageHourly.objects.bulk_create(rows, batch_size=1000)
    rebuild_daily(application.pk)


@pytest.mark.parametrize("rows", [100, 2000])
def test_dashboard_and_exports_run_a_bounded_number_of_queries(
    application, viewer_client, django_assert_max_num_queries, rows
):
    make_rollups(application, rows)
    assert UsageHourly.objects.count() == rows
    assert UsageDaily.objects.aggregate(n=Sum("requests"))["n"] == rows * 10
    with django_assert_max_num_queries(MAX_DASHBOARD_QUERIES):
        page = viewer_client.get(url(application))
    assert page.context["board"].totals["requests"] == rows * 10
    with django_assert_max_num_queries(MAX_DASHBOARD_QUERIES):
        viewer_client.get(url(application), headers={"HX-Request": "true", "HX-Target": "board"})
    for view in EXPORT_VIEWS:
        with django_assert_max_num_queries(MAX_DASHBOARD_QUERIES):
            response = viewer_client.get(url(application, "export.csv"), {"view": view})
        assert response.status_code == 200


def spiky(costs: list[float], requests: list[int] | None = None) -> list[dict]:
    requests = requests or [100] * len(costs)
    start = date(2026, 3, 1)
    return [
        {
            "day": start + timedelta(days=n),
            "cost": Decimal(str(c)),
            "requests": r,
            "cost_per_request": (Decimal(str(c)) / r) if r else None,
        }
        for n, (c, r) in enumerate(zip(costs, requests, strict=True))
    ]


def test_anomalies_flag_a_spike_above_the_recent_baseline():
    days = spiky([10, 11, 9, 10, 12, 10, 11, 45, 10, 11])
    found = selectors.anomalies(days)
    assert [(a["day"], a["kind"]) for a in found] == [(date(2026, 3, 8), "spend")]
    assert found[0]["factor"] == pytest.approx(4.5)
    # A cost-per-request spike with flat spend (fewer, pricier requests) is flagged too.
    per_request = spiky([10, 10, 10, 10, 10, 10], [100, 100, 100, 100, 20, 100])
    assert [(a["day"], a["kind"]) for a in selectors.anomalies(per_request)] == [
        (date(2026, 3, 5), "cost per request")
    ]
    # Ordinary weekly rhythm, tiny amounts and too little history are not anomalies.
    assert selectors.anomalies(spiky([10, 10, 4, 4, 10, 10, 10, 10, 10])) == []
    assert selectors.anomalies(spiky([0.01, 0.01, 0.01, 0.5], [1, 1, 1, 50])) == []
    assert selectors.anomalies(spiky([1, 50])) == []


def test_the_dashboard_marks_the_spike_day(application, viewer_client):
    price(application, "gpt-4o-mini", day(30), "1", "0.5", "2")
    events = []
    for n in range(10, 0, -1):
        dollars = 12 if n == 4 else 2
        events += [
            event(f"d{n}-{i}", day(n) + timedelta(hours=2, minutes=i), input_tokens=M)
            for i in range(dollars)
        ]
    ingest(application, "prod", events)
    rollup()
    response = viewer_client.get(url(application))
    anomalies = response.context["board"].anomalies
    assert [(a["day"], a["kind"]) for a in anomalies] == [(day(4).date(), "spend")]
    assert "Unusual spend:" in response.content.decode()
    spend = response.context["figures"]["spend"]
    assert spend["data"][-1]["name"] == "Anomaly"
    assert spend["data"][-1]["x"] == [day(4).date().isoformat()]


def test_shadow_calls_are_in_the_spend_and_shown_apart(story, viewer_client):
    params = {"since": day(3).date().isoformat(), "until": day(0).date().isoformat()}
    before = viewer_client.get(url(story), params)
    assert before.context["board"].totals["shadow_cost"] == 0
    assert "Shadow spend" not in before.content.decode()
    ingest(story, "prod", [event("s-p1", day(2) + timedelta(hours=3), input_tokens=M,
                                 prompt_version="answer@3", shadow_of="p1")])  # fmt: skip
    rollup()
    after = viewer_client.get(url(story), params)
    totals = after.context["board"].totals
    assert totals["shadow_cost"] == Decimal(1)  # 1M gpt-4o-mini input tokens
    assert totals["cost"] == Decimal("7.5")  # and in the spend: 6.5 + 1
    assert "Shadow spend" in after.content.decode()
    rows = rows_of(viewer_client.get(url(story, "export.csv"), {**params, "view": "daily"}))
    assert [Decimal(r[7]) for r in rows[1:]] == [0, Decimal(1), 0, 0]
