"""The audit log page and its streaming exports."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from console.audit import selectors
from console.audit.models import AuditEvent
from console.core import csvcells
from console.core.canonical import canonical_json
from console.core.permissions import application_perms, user_applications

EXPORT_FIELDS = [
    "seq", "at", "actor_type", "actor_id", "actor_label", "action", "object_type", "object_id",
    "object_label", "application_id", "environment_id", "before", "after", "reason",
    "request_id", "ip", "prev_hash", "hash",
]  # fmt: skip


def _row(event: AuditEvent) -> dict:
    row = {name: getattr(event, name) for name in EXPORT_FIELDS}
    row["at"] = event.at.isoformat()
    return row


@login_required
@require_GET
def log(request: HttpRequest) -> HttpResponse:
    filters, errors = selectors.AuditFilters.from_query(request.GET)
    try:
        before = int(request.GET["before"]) if request.GET.get("before") else None
    except ValueError:
        before, errors["before"] = None, "before: page cursor must be a number"
    if filters.application:
        # Filtering to one application shows that application's menu, as its own pages do.
        scoped = user_applications(request.user).filter(key=filters.application).first()
        if scoped is not None:
            request.application = scoped
            request.app_perms = application_perms(request.user, scoped)
    names = selectors.actions()
    events, next_cursor = ([], None)
    if not errors:
        events, next_cursor = selectors.page(
            selectors.search(request.user, filters, action_names=names), before
        )
    for event in events:
        event.changes = selectors.changes(event.before, event.after)
        event.change_summary = selectors.change_summary(event.changes)
    choices = selectors.action_choices(names)
    template = "audit/log.html#results" if request.htmx else "audit/log.html"
    return render(
        request,
        template,
        {
            "events": events,
            "filters": filters,
            "errors": errors,
            "query": filters.as_query(),
            "next_cursor": next_cursor,
            "is_first_page": before is None,
            "applications": user_applications(request.user).only("key", "name"),
            "action_choices": choices,
            # An action from an old link that no event has (yet) stays selectable.
            "action_unlisted": filters.action
            and all(filters.action != value for _, options in choices for value, _ in options),
        },
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    writer = csvcells.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for event in events:
        row = _row(event)
        yield writer.writerow(
            [canonical_json(row[f]) if f in {"before", "after"} else row[f] for f in EXPORT_FIELDS]
        )


def _jsonl_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield json.dumps(_row(event), ensure_ascii=False) + "\n"


@login_required
@require_GET
def export(request: HttpRequest, fmt: str) -> HttpResponse:
    filters, errors = selectors.AuditFilters.from_query(request.GET)
    if errors:
        return HttpResponse("; ".join(errors.values()), status=400, content_type="text/plain")
    events = selectors.stream(selectors.search(request.user, filters))
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
    if fmt == "csv":
        response = StreamingHttpResponse(_csv_lines(events), content_type="text/csv")
    else:
        response = StreamingHttpResponse(_jsonl_lines(events), content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="airlock-audit-{stamp}.{fmt}"'
    return response
