"""The runtime API's fast path: its own short middleware stack, a 304 that does no work it does
not need, counters instead of a log line per call, rate limits counted in-process and synced
to the shared cache, and snapshots rebuilt by one thread at a time."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext

from console.api import auth, snapshot
from console.core import metrics
from tests.api.conftest import bearer

CONFIG = "/api/v1/config"
BULK = "/ofrep/v1/evaluate/flags"
CACHE_CALLS = ("get", "set", "add", "incr", "decr", "delete", "get_many", "set_many", "touch")


@pytest.fixture
def cache_calls(monkeypatch):
    """Every call this process makes to the shared cache (Redis in production), by name."""
    calls: list[str] = []
    backend = type(caches["default"])
    for name in CACHE_CALLS:
        original = getattr(backend, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(backend, name, spy)
    return calls


@pytest.fixture
def warm_for_a_minute(monkeypatch):
    """Key cache, snapshot and rate-limit sync stay fresh for the whole test, however slow the
    machine: what is measured is the steady state between two refreshes."""
    monkeypatch.setattr(snapshot, "MAX_AGE_SECONDS", 60.0)
    monkeypatch.setattr(auth, "KEY_CACHE_SECONDS", 60.0)
    monkeypatch.setattr(auth, "SYNC_SECONDS", 60.0)


def header_bytes(response) -> int:
    """The size of the headers Django hands the WSGI server (status line and the server's own
    Date/Server/Connection not included)."""
    return sum(len(f"{name}: {value}\r\n") for name, value in response.items())


# ------------------------------------------------------------------ 304: auth, then nothing else


def test_a_304_makes_no_query_and_no_cache_call_once_warm(
    client, live_app, issue, cache_calls, warm_for_a_minute
):
    _, secret = issue("prod")
    first = client.get(CONFIG, **bearer(secret))
    assert first.status_code == 200
    cache_calls.clear()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            polled = client.get(CONFIG, HTTP_IF_NONE_MATCH=first["ETag"], **bearer(secret))
            assert polled.status_code == 304 and polled.content == b""
    assert queries.captured_queries == [] and cache_calls == []


def test_a_304_still_needs_a_valid_key(client, live_app, issue):
    _, secret = issue("prod")
    etag = client.get(CONFIG, **bearer(secret))["ETag"]
    for headers in ({}, bearer("alk_wrong")):
        response = client.get(CONFIG, HTTP_IF_NONE_MATCH=etag, **headers)
        assert response.status_code == 401 and "ETag" not in response


def test_a_304_carries_only_its_etag_and_cache_control(client, live_app, issue):
    _, secret = issue("prod")
    etag = client.get(CONFIG, **bearer(secret))["ETag"]
    polled = client.get(CONFIG, HTTP_IF_NONE_MATCH=etag, **bearer(secret))
    assert polled.status_code == 304
    assert dict(polled.items()) == {"ETag": etag, "Cache-Control": "private, no-cache"}
    assert header_bytes(polled) < 100
    bulk = client.post(
        BULK,
        data={"context": {"targetingKey": "u1"}},
        content_type="application/json",
        **bearer(secret),
    )
    again = client.post(
        BULK,
        data={"context": {"targetingKey": "u1"}},
        content_type="application/json",
        HTTP_IF_NONE_MATCH=bulk["ETag"],
        **bearer(secret),
    )
    assert again.status_code == 304 and header_bytes(again) < 100


def test_runtime_answers_skip_browser_headers_but_keep_nosniff(client, live_app, issue, engineer):
    _, secret = issue("prod")
    response = client.get(CONFIG, **bearer(secret))
    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Length"] == str(len(response.content))
    for browser_only in (
        "Content-Security-Policy",
        "X-Frame-Options",
        "Referrer-Policy",
        "Cross-Origin-Opener-Policy",
        "Vary",
        "Set-Cookie",
        "X-Request-ID",
    ):
        assert browser_only not in response, browser_only
    assert header_bytes(response) < 200
    # The console keeps its full stack.
    client.force_login(engineer)
    page = client.get("/")
    assert "Content-Security-Policy" in page and page["X-Frame-Options"] == "DENY"
    assert "X-Request-ID" in page


def test_the_fast_path_keeps_the_host_check_and_the_https_redirect(
    client, live_app, issue, settings
):
    _, secret = issue("prod")
    settings.ALLOWED_HOSTS = ["airlock.example"]
    wrong_host = client.get(CONFIG, HTTP_HOST="evil.example", **bearer(secret))
    assert wrong_host.status_code == 400
    settings.SECURE_SSL_REDIRECT = True
    plain = client.__class__().get(CONFIG, HTTP_HOST="airlock.example", **bearer(secret))
    assert plain.status_code == 301 and plain["Location"].startswith("https://airlock.example/")


def test_paths_that_are_not_runtime_calls_take_the_full_stack(client, live_app):
    spec = client.get("/api/v1/openapi.json")
    assert spec.status_code == 200 and "X-Request-ID" in spec
    missing = client.get("/api/v1/nope")
    assert missing.status_code == 404


# ------------------------------------------------------------------ logs and counters


def test_request_ids_are_echoed_and_given_to_refusals(client, live_app, issue):
    _, secret = issue("prod")
    mine = client.get(CONFIG, HTTP_X_REQUEST_ID="trace-12345678", **bearer(secret))
    assert mine["X-Request-ID"] == "trace-12345678"
    refused = client.get(CONFIG, **bearer("alk_wrong"))
    assert refused.status_code == 401 and re.fullmatch(r"[0-9a-f]{32}", refused["X-Request-ID"])


def test_successful_calls_are_counted_not_logged_and_refusals_are_logged(
    client, live_app, issue, caplog
):
    _, secret = issue("prod")
    with caplog.at_level(logging.INFO, logger="airlock.access"):
        etag = client.get(CONFIG, **bearer(secret))["ETag"]
        for _ in range(3):
            client.get(CONFIG, HTTP_IF_NONE_MATCH=etag, **bearer(secret))
        refused = client.get(CONFIG, **bearer("alk_wrong"))
    lines = [r for r in caplog.records if r.name in ("airlock.access", "django.request")]
    assert len(lines) == 1 and lines[0].name == "airlock.access"  # not Django's warning too
    assert lines[0].fields["status"] == 401 and lines[0].fields["route"] == "api/v1/config"
    assert lines[0].request_id == refused["X-Request-ID"]


def _sample(body: str, name: str, **labels) -> float:
    for line in body.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_counters_per_route_and_status_appear_on_metrics(client, live_app, issue, settings):
    settings.METRICS_TOKEN = "metrics-token-for-tests"
    key, secret = issue("prod")
    scrape = {"HTTP_AUTHORIZATION": "Bearer metrics-token-for-tests"}
    before = client.get("/metrics", **scrape).content.decode()
    etag = client.get(CONFIG, **bearer(secret))["ETag"]
    for _ in range(4):
        client.get(CONFIG, HTTP_IF_NONE_MATCH=etag, **bearer(secret))
    client.get(CONFIG, **bearer("alk_wrong"))
    after = client.get("/metrics", **scrape).content.decode()

    def grew(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    calls = "airlock_runtime_api_requests_total"
    assert grew(calls, key=key.prefix, route="api/v1/config", status="200") == 1
    assert grew(calls, key=key.prefix, route="api/v1/config", status="304") == 4
    assert grew(calls, key="anonymous", route="api/v1/config", status="401") == 1
    latency = "airlock_http_request_duration_seconds_count"
    assert grew(latency, route="api/v1/config", method="GET", status="304") == 4
    bucket = "airlock_http_request_duration_seconds_bucket"
    assert grew(bucket, route="api/v1/config", method="GET", status="304", le="+Inf") == 4


def test_the_tally_publishes_at_most_a_second_late_without_a_scrape(monkeypatch):
    tally = metrics.RuntimeTally()
    labels = {"key": "alk_tally", "route": "api/v1/config", "status": "200"}
    before = metrics.RUNTIME_CALLS.labels(**labels)._value.get()
    tally.add("alk_tally", "api/v1/config", "GET", "200", 0.002)
    assert metrics.RUNTIME_CALLS.labels(**labels)._value.get() == before  # not yet
    tally._next_flush = time.monotonic() - 1  # a second has passed
    tally.add("alk_tally", "api/v1/config", "GET", "200", 0.003)
    assert metrics.RUNTIME_CALLS.labels(**labels)._value.get() == before + 2


# ------------------------------------------------------------------ rate limits


@pytest.fixture(autouse=True)
def mid_window(request):
    """Rate-limit tests count within one minute window: do not start one in its last seconds."""
    if "rate" in request.node.name:
        left = auth.RATE_WINDOW_SECONDS - time.time() % auth.RATE_WINDOW_SECONDS
        if left < 5:
            time.sleep(left + 0.1)


def _slot(key) -> str:
    return f"airlock:rate:{key.pk}:{int(time.time() // auth.RATE_WINDOW_SECONDS)}"


def test_rate_limit_syncs_every_hundredth_of_the_limit(
    client, live_app, issue, cache_calls, warm_for_a_minute
):
    key, secret = issue("prod", rate=1000)  # a sync every 10 calls let through
    client.get(CONFIG, **bearer(secret))  # warm: key and snapshot (first call syncs)
    cache_calls.clear()
    for _ in range(24):
        assert client.get(CONFIG, **bearer(secret)).status_code == 200
    # Calls 11 and 21 of the window synced (call 1 was the warm-up): two INCRBYs, no more.
    assert cache_calls.count("incr") == 2 and "add" not in cache_calls
    assert caches["default"].get(_slot(key)) == 21


def test_rate_limit_counts_other_processes_after_a_sync(client, live_app, issue, monkeypatch):
    """Another process's calls (seen only in the shared count) make this one refuse once it
    syncs; the overshoot stays within the documented bound."""
    key, secret = issue("prod", rate=1000)
    monkeypatch.setattr(auth, "SYNC_SECONDS", 60.0)
    assert client.get(CONFIG, **bearer(secret)).status_code == 200
    caches["default"].incr(_slot(key), 990)  # the other worker let 990 through
    admitted = 1
    while client.get(CONFIG, **bearer(secret)).status_code == 200:
        admitted += 1
        assert admitted < 100
    total = caches["default"].get(_slot(key))
    assert 1000 <= total <= 1000 + 2 * (1000 // auth.SYNC_SHARE)
    limited = client.get(CONFIG, **bearer(secret))
    assert limited.status_code == 429 and 1 <= int(limited["Retry-After"]) <= 60


def test_a_rate_limit_refusal_is_decided_in_process(client, live_app, issue, cache_calls):
    _, secret = issue("prod", rate=2)
    assert [client.get(CONFIG, **bearer(secret)).status_code for _ in range(2)] == [200, 200]
    cache_calls.clear()
    assert [client.get(CONFIG, **bearer(secret)).status_code for _ in range(5)] == [429] * 5
    assert cache_calls == []


def test_a_time_based_rate_sync_sees_other_processes_within_a_second(
    client, live_app, issue, monkeypatch
):
    key, secret = issue("prod", rate=100_000)  # a sync every 1,000 calls: time decides
    monkeypatch.setattr(auth, "SYNC_SECONDS", 60.0)
    assert client.get(CONFIG, **bearer(secret)).status_code == 200
    caches["default"].incr(_slot(key), 100_000)
    # Within the second since the last sync this process has not seen it yet.
    assert client.get(CONFIG, **bearer(secret)).status_code == 200
    auth._windows[key.pk].next_sync = 0.0  # the second is over
    assert client.get(CONFIG, **bearer(secret)).status_code == 200  # this call syncs...
    assert client.get(CONFIG, **bearer(secret)).status_code == 429  # ...and the next is refused


def test_concurrent_threads_never_exceed_the_rate_limit_in_one_process(live_app, issue):
    key, _ = issue("prod", rate=50)
    caller = auth.Caller(
        key_id=key.pk,
        application_key="a",
        environment_id=1,
        environment_key="prod",
        scopes=frozenset(),
        rate_limit_per_minute=50,
    )
    admitted: list[int] = []

    def hammer():
        for _ in range(40):
            try:
                auth._check_rate(caller)
                admitted.append(1)
            except auth.ApiError as exc:
                assert exc.status == 429

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 50
    # A refusal hands on what was let through but not yet synced: the shared count is exact.
    with pytest.raises(auth.ApiError):
        auth._check_rate(caller)
    assert caches["default"].get(_slot(key)) == 50


# ------------------------------------------------------------------ single-flight snapshots


def _fake_snapshot(environment_id: int, built_at: float, tag: str) -> snapshot.Snapshot:
    return snapshot.Snapshot(
        environment_id=environment_id,
        built_at=built_at,
        body=tag.encode(),
        etag=f'"{tag}"',
        flags={},
        fixed={},
    )


def test_one_thread_rebuilds_while_the_others_serve_the_current_bytes(monkeypatch):
    """The database is the boundary here: `build` is replaced by a stand-in that blocks until
    released, so the test can watch the other threads while one rebuild is under way."""
    release, started = threading.Event(), threading.Event()
    builds: list[int] = []

    def slow_build(environment_id):
        builds.append(environment_id)
        started.set()
        release.wait(10)
        return _fake_snapshot(environment_id, time.monotonic(), "new")

    monkeypatch.setattr(snapshot, "build", slow_build)
    monkeypatch.setattr(snapshot, "MAX_AGE_SECONDS", 1.0)
    # Old enough to be refreshed, young enough to be served meanwhile.
    snapshot._snapshots[7] = _fake_snapshot(7, time.monotonic() - 0.8, "old")
    results: dict[str, str] = {}
    builder = threading.Thread(target=lambda: results.update(a=snapshot.snapshot_for(7).etag))
    builder.start()
    assert started.wait(10)
    served = [snapshot.snapshot_for(7).etag for _ in range(5)]
    assert served == ['"old"'] * 5 and builds == [7]
    release.set()
    builder.join(10)
    assert results["a"] == '"new"' and snapshot.snapshot_for(7).etag == '"new"'
    assert builds == [7]


def test_past_the_age_bound_the_others_wait_for_the_rebuild(monkeypatch):
    release, started = threading.Event(), threading.Event()
    builds: list[int] = []

    def slow_build(environment_id):
        builds.append(environment_id)
        started.set()
        release.wait(10)
        return _fake_snapshot(environment_id, time.monotonic(), "new")

    monkeypatch.setattr(snapshot, "build", slow_build)
    monkeypatch.setattr(snapshot, "MAX_AGE_SECONDS", 1.0)
    snapshot._snapshots[8] = _fake_snapshot(8, time.monotonic() - 5, "too-old")
    seen: list[str] = []
    threads = [
        threading.Thread(target=lambda: seen.append(snapshot.snapshot_for(8).etag))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    assert started.wait(10)
    time.sleep(0.05)
    assert seen == []  # nobody is served the too-old bytes
    release.set()
    for thread in threads:
        thread.join(10)
    assert seen == ['"new"'] * 4 and builds == [8]


def test_a_rebuild_that_raced_a_flag_change_is_not_kept(monkeypatch):
    def build_then_change(environment_id):
        fresh = _fake_snapshot(environment_id, time.monotonic(), "before-change")
        snapshot._forget(None, environment_ids=[environment_id])  # a kill lands meanwhile
        return fresh

    monkeypatch.setattr(snapshot, "build", build_then_change)
    assert snapshot.snapshot_for(9).etag == '"before-change"'
    assert 9 not in snapshot._snapshots  # the next call reads the database again
