"""Property-based proof of the runtime API against its own OpenAPI document (schemathesis):
for generated requests, no 5xx and every response matches the documented schema."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance  # noqa: E402

from console.api.openapi import document  # noqa: E402
from console.wsgi import application as wsgi_app  # noqa: E402

schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """Like Django's test Client: a request through the WSGI app must not close the test's
    database connection (on PostgreSQL that would end the test transaction)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def key(live_app, issue):
    _, secret = issue("prod", scopes=["config:read", "usage:write"])
    return secret


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_runtime_api_honours_its_schema(case, key):
    response = case.call(app=wsgi_app, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code < 500, response.text[:500]
    # We send a valid key on purpose; auth refusals are covered in test_keys.py and test_ofrep.py.
    excluded = [ignored_auth]
    if case.path == "/api/v1/usage":
        # Business rules a JSON schema cannot state (an event older than the retention period,
        # or in the future) are refused with 422 naming the field: see tests/usage.
        excluded.append(positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)
