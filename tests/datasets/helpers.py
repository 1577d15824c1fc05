"""Golden-set test helpers: URLs, audit trail, exact-state fingerprints, generated items."""

from __future__ import annotations

import json

from django.urls import reverse

from console.audit.models import AuditEvent
from console.datasets import services
from console.datasets.models import Dataset, DatasetVersion, ImportJob, PublishedItem

HTMX = {"HX-Request": "true"}

# Marks every test that saves a cell through services.update_item_field.


def url(name: str, dataset: Dataset, query: str = "", **kwargs) -> str:
    path = reverse(
        f"datasets:{name}", kwargs={"app": dataset.application.key, "key": dataset.key, **kwargs}
    )
    return f"{path}?{query}" if query else path


def last_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def events_since(seq: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq"))


def actions_since(seq: int) -> list[str]:
    return [e.action for e in events_since(seq)]


def state(dataset: Dataset) -> dict:
    """Everything an import or edit could change, to assert "exactly unchanged"."""
    dataset = Dataset.objects.get(pk=dataset.pk)
    items = list(
        dataset.draft_items.order_by("position", "id").values_list(
            "item_id", "position", "question", "variables", "expected_contains",
            "expected_not_contains", "expected_sources", "expected_tools", "reference_answer",
            "unanswerable",
            "tags", "note", "content_hash", "published_hash", "revision", "updated_at",
        )
    )  # fmt: skip
    return {
        "items": items,
        "latest_number": dataset.latest_number,
        "versions": DatasetVersion.objects.filter(head=dataset).count(),
        "published": PublishedItem.objects.filter(version__head=dataset).count(),
        "audit": last_seq(),
    }


def rows(dataset: Dataset) -> list[dict]:
    """The draft as export-shaped dicts ({'id': ..., **content}), in order."""
    from console.datasets.selectors import draft_export_items

    return list(draft_export_items(dataset))


def jsonl(items: list[dict]) -> bytes:
    return "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items).encode()


def generated(n: int, start: int = 1, prefix: str = "item") -> list[dict]:
    return [
        {
            "id": f"{prefix}-{k:05d}",
            "question": f"Question number {k} about topic {k % 17}?",
            "expected_contains": [f"fact {k}"],
            "tags": [f"topic-{k % 5}"],
            "variables": {"n": k},
        }
        for k in range(start, start + n)
    ]


def seed(dataset: Dataset, items: list[dict], actor=None) -> None:
    from console.audit.services import SYSTEM

    services.import_file(
        actor=actor or SYSTEM, dataset=dataset, data=jsonl(items), filename="seed.jsonl"
    )


def import_jobs(dataset: Dataset) -> list[ImportJob]:
    return list(ImportJob.objects.filter(dataset=dataset).order_by("pk"))


def set_fields(dataset: Dataset, item_id: str, actor=None, **changes) -> None:
    """Change one item through a merge import (setup that does not depend on cell saves)."""
    from console.audit.services import SYSTEM

    current = next(r for r in rows(dataset) if r["id"] == item_id)
    services.import_file(
        actor=actor or SYSTEM, dataset=dataset, data=jsonl([{**current, **changes}]),
        filename="edit.jsonl",
    )  # fmt: skip
