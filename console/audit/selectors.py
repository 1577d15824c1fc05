"""Reading the audit log: filtered, keyset-paginated (no OFFSET, no COUNT), scoped to the
applications the reader belongs to, so pages stay fast at millions of events."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from console.audit.models import AuditEvent
from console.core.permissions import user_applications

PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    action: str = ""
    application: str = ""
    object: str = ""
    since: date | None = None
    until: date | None = None

    @classmethod
    def from_query(cls, params) -> tuple[AuditFilters, dict[str, str]]:
        """Parse GET params; return the filters and an error message per bad field."""
        errors: dict[str, str] = {}

        def day(name: str) -> date | None:
            raw = (params.get(name) or "").strip()
            if not raw:
                return None
            try:
                return date.fromisoformat(raw)
            except ValueError:
                errors[name] = f"{name}: {raw!r} is not a date (YYYY-MM-DD)"
                return None

        filters = cls(
            actor=(params.get("actor") or "").strip(),
            action=(params.get("action") or "").strip(),
            application=(params.get("application") or "").strip(),
            object=(params.get("object") or "").strip(),
            since=day("since"),
            until=day("until"),
        )
        if filters.since and filters.until and filters.since > filters.until:
            errors["until"] = "until: must not be before since"
        return filters, errors

    def as_query(self) -> dict[str, str]:
        out = {k: v for k, v in self.__dict__.items() if v and k not in {"since", "until"}}
        if self.since:
            out["since"] = self.since.isoformat()
        if self.until:
            out["until"] = self.until.isoformat()
        return out


def visible_events(user) -> QuerySet:
    """Events of applications the user belongs to (and, for staff, system-wide events)."""
    # Ids first (one small query): with a subquery the planner cannot tell how few events a
    # small application has and scans the log instead of using the application index.
    scope = Q(application_id__in=list(user_applications(user).values_list("pk", flat=True)))
    if user.is_staff:
        scope |= Q(application__isnull=True)
    return AuditEvent.objects.filter(scope)


def _start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def search(user, filters: AuditFilters) -> QuerySet:
    qs = visible_events(user)
    if filters.actor:
        qs = qs.filter(actor_label=filters.actor)
    if filters.action:
        qs = (
            qs.filter(action__startswith=filters.action)
            if filters.action.endswith(".")
            else qs.filter(action=filters.action)
        )
    if filters.application:
        qs = qs.filter(application__key=filters.application)
    if filters.object:
        qs = qs.filter(object_label__startswith=filters.object)
    if filters.since:
        qs = qs.filter(at__gte=_start(filters.since))
    if filters.until and filters.until < date.max:
        qs = qs.filter(at__lt=_start(filters.until + timedelta(days=1)))
    return qs.order_by("-seq")


def page(
    qs: QuerySet, before: int | None, size: int = PAGE_SIZE
) -> tuple[list[AuditEvent], int | None]:
    """One page of newest-first events and the cursor for the next (older) page."""
    if before is not None:
        qs = qs.filter(seq__lt=before)
    rows = list(qs[: size + 1])
    next_cursor = rows[size - 1].seq if len(rows) > size else None
    return rows[:size], next_cursor


def events_for_object(
    *, object_type: str | None = None, object_id=None, application=None, limit: int = 20
) -> list[AuditEvent]:
    """The history panel on an object page (or an application's recent activity)."""
    qs = AuditEvent.objects.all()
    if object_type is not None:
        qs = qs.filter(object_type=object_type, object_id=str(object_id))
    if application is not None:
        qs = qs.filter(application=application)
    return list(qs.order_by("-seq")[:limit])


def stream(qs: QuerySet, chunk_size: int = 2000) -> Iterator[AuditEvent]:
    """Every matching event, oldest first, without holding them all in memory."""
    return qs.order_by("seq").iterator(chunk_size=chunk_size)
