"""Wrong JSON types and impossible times in a batch are errors by index and field, never a 500
(found by the schemathesis run against the OpenAPI document)."""

import pytest

from console.usage import services
from tests.usage.helpers import hour_ago


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("feedback", {"up": True}),
        ("feedback", ["up"]),
        ("status", {"ok": 1}),
        ("time", "2026-01-01T10:60:00Z"),
        ("time", 1700000000),
    ],
)
def test_wrong_types_are_reported_by_field(application, field, value):
    good = {"event_id": "e1", "time": hour_ago(2).isoformat(), "model": "gpt-4o-mini"}
    with pytest.raises(services.BatchRejected) as refused:
        services.ingest(
            application=application,
            environment=application.environments.get(key="prod"),
            events=[{**good, field: value}],
        )
    assert [(e["index"], e["field"]) for e in refused.value.errors] == [(0, field)]
