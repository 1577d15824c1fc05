"""A brief database outage: the runtime API keeps answering from its last good snapshot (and
keys it saw recently) for a bounded time, /ready reports it, and then it answers 503."""

from __future__ import annotations

import socket

from django.db import OperationalError

from console.api import auth, snapshot
from tests.api.conftest import bearer

CONFIG = "/api/v1/config"


def database_down(*args, **kwargs):
    raise OperationalError("connection refused")


def test_config_is_served_from_the_last_good_snapshot_during_an_outage(
    client, live_app, issue, monkeypatch
):
    _, secret = issue("prod")
    monkeypatch.setitem(snapshot.degraded, "since", None)  # restored after the test
    monkeypatch.setitem(snapshot.degraded, "error", "")
    monkeypatch.setattr(auth, "KEY_CACHE_SECONDS", 0.0)  # every call would ask the database
    monkeypatch.setattr(snapshot, "MAX_AGE_SECONDS", 0.0)
    before = client.get(CONFIG, **bearer(secret))
    assert before.status_code == 200

    monkeypatch.setattr(auth, "_fetch", database_down)
    monkeypatch.setattr(snapshot, "build", database_down)
    during = client.get(CONFIG, **bearer(secret))
    assert during.status_code == 200
    assert during["ETag"] == before["ETag"] and during.content == before.content
    ready = client.get("/ready").json()
    assert "serving_last_good_snapshot_since" in ready["runtime_api"]
    assert "connection refused" in ready["runtime_api"]["error"]

    # Past the bound, stale config is worse than none: 503 with Retry-After.
    monkeypatch.setattr(snapshot, "STALE_LIMIT_SECONDS", -1.0)
    monkeypatch.setattr(auth, "STALE_KEY_SECONDS", -1.0)
    later = client.get(CONFIG, **bearer(secret))
    assert later.status_code == 503 and later["Retry-After"] == "5"
    assert later.json()["error"] == "unavailable"


def test_an_unknown_key_is_not_let_in_during_an_outage(client, live_app, monkeypatch):
    monkeypatch.setattr(auth, "_fetch", database_down)
    response = client.get(CONFIG, **bearer("alk_never-seen-before"))
    assert response.status_code == 503


def test_flags_are_still_served_when_the_shared_cache_is_down(
    client, live_app, issue, settings, caplog
):
    """Rate limits and last-used stamps live in Redis; with Redis unreachable the read goes on
    (fail open) and the outage is logged, rather than every application's flags failing."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    _, secret = issue("prod", rate=1)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed}/0",
        }
    }
    auth._last_used_noted.clear()
    auth._cache_warned.clear()
    responses = [client.get(CONFIG, **bearer(secret)) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]  # the limit of 1 is not enforced
    assert "shared cache unavailable (rate limit skipped)" in caplog.text
    assert caplog.text.count("shared cache unavailable") == 1  # logged once, not per request
