"""Usage test helpers: events, prices, ingestion and rollups through the real services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from console.audit.services import SYSTEM
from console.usage import services

USAGE = "/api/v1/usage"


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def hour_ago(hours: float = 1, now: datetime | None = None) -> datetime:
    """A whole hour in the past (UTC), so events land in predictable rollup hours."""
    now = now or timezone.now()
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)


def event(event_id: str, at: datetime, **fields) -> dict:
    return {"event_id": event_id, "time": at.isoformat(), "model": "gpt-4o-mini", **fields}


def price(application, model: str, effective_from, i, c, o, tiers=None, actor=SYSTEM):
    return services.record_price(
        actor=actor,
        application=application,
        model=model,
        effective_from=effective_from,
        input_per_1m=i,
        cached_input_per_1m=c,
        output_per_1m=o,
        tiers=tiers,
    )


def ingest(application, env_key: str, events: list[dict]):
    return services.ingest(
        application=application,
        environment=application.environments.get(key=env_key),
        events=events,
    )


def rollup() -> dict:
    return services.rollup(settle=timedelta(0))
