"""Reading the audit log: filtered, keyset-paginated (no OFFSET, no COUNT), scoped to the
applications the reader belongs to, so pages stay fast at millions of events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from console.audit.models import AuditEvent
from console.core.diff import FieldDiff, diff_contents
from console.core.permissions import user_applications

PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    action: str = ""
    q: str = ""
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
            q=" ".join((params.get("q") or "").split())[:200],
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


MAX_ACTIONS = 500


def actions() -> list[str]:
    """Every action name in the log, sorted. Action names come from Airlock's code, not from
    anyone's data, so the list is the same for every reader. On PostgreSQL a skip scan over
    the action index: one index probe per distinct action, however many events there are."""
    if connection.vendor != "postgresql":
        return list(
            AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct()
        )[:MAX_ACTIONS]
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    sql = (
        f"WITH RECURSIVE t(action) AS ("
        f" (SELECT action FROM {table} ORDER BY action LIMIT 1)"
        f" UNION ALL"
        f" SELECT (SELECT a.action FROM {table} a WHERE a.action > t.action"
        f" ORDER BY a.action LIMIT 1) FROM t WHERE t.action IS NOT NULL"
        f") SELECT action FROM t WHERE action IS NOT NULL LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [MAX_ACTIONS])
        return [row[0] for row in cursor.fetchall()]


def action_choices(names: list[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """<select> groups: per first word, "every dataset.* action" (value `dataset.`) and then
    each action of that group."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    return [
        (word, [(f"{word}.", f"{word}.* — every {word} action"), *((n, n) for n in members)])
        for word, members in groups.items()
    ]


def word_matches(word: str, names: list[str]) -> list[str]:
    """Actions one search word finds: a word (or dotted words) of the action starts with it,
    so "dataset" finds dataset.*, "pub" dataset.publish, "prompt.ver" prompt.version.* and
    "policy" environment_policy.change."""
    word = word.lower()
    found = []
    for name in names:
        # Word starts: the name's start and every character after a "." or "_".
        starts = [0, *(n + 1 for n, ch in enumerate(name) if ch in "._")]
        if any(name.startswith(word, start) for start in starts):
            found.append(name)
    return found


def _search_words(qs: QuerySet, text: str, names: list[str]) -> QuerySet:
    """Each word must match (words combine with AND): as a word prefix of the action, as the
    start of the object label, or as the actor's name. Every branch is an indexed lookup."""
    for word in text.split():
        condition = Q(object_label__startswith=word) | Q(actor_label=word)
        matching = word_matches(word, names)
        if matching:
            condition |= Q(action__in=matching)
        qs = qs.filter(condition)
    return qs


def search(user, filters: AuditFilters, action_names: list[str] | None = None) -> QuerySet:
    qs = visible_events(user)
    if filters.actor:
        qs = qs.filter(actor_label=filters.actor)
    if filters.action:
        prefix = filters.action.removesuffix("*")
        qs = (
            qs.filter(action__startswith=prefix)
            if prefix.endswith(".")
            else qs.filter(action=filters.action)
        )
    if filters.q:
        qs = _search_words(qs, filters.q, actions() if action_names is None else action_names)
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


# --- before / after as a readable change list ---------------------------------------------------


@dataclass
class Change:
    """One field of an event's before/after: `old → new`, or line rows for multi-line text."""

    path: str
    status: str  # added | removed | changed
    old: str
    new: str
    rows: list = field(default_factory=list)


def readable(value: Any) -> str:
    """A stored JSON value as a person reads it: text as is, lists one item per line, objects
    as `key: value` pairs, nothing as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value if value.strip() else '""'
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, dict):
        if not value:
            return "(empty)"
        return ", ".join(f"{k}: {_inline(v)}" for k, v in value.items())
    if isinstance(value, list):
        if not value:
            return "(none)"
        if all(not isinstance(v, dict | list) for v in value):
            return ", ".join(_inline(v) for v in value)
        return "\n".join(f"• {readable(v)}" for v in value)
    return str(value)


def _inline(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return readable(value)


def _as_fields(value: Any) -> dict:
    if value is None:
        return {}
    return value if isinstance(value, dict) else {"(value)": value}


def changes(before: Any, after: Any) -> list[Change]:
    """What an event changed, field by field (nested objects by dotted path), leaving out the
    fields that stayed the same; console/core/diff.py pairs the lines of multi-line text."""
    diffs = diff_contents(_as_fields(before), _as_fields(after))
    paths = [d.path for d in diffs]
    out = []
    for d in diffs:
        if d.status == "same" or (d.path == "(value)" and not d.before and not d.after):
            continue  # unchanged, or the placeholder an empty object flattens to
        emptied = d.status in {"added", "removed"} and (d.before == {} or d.after == {})
        if emptied and any(p.startswith(f"{d.path}.") for p in paths):
            continue  # an empty object that gained (or lost) fields: they are listed
        out.append(_change(d))
    return out


def _change(d: FieldDiff) -> Change:
    return Change(
        path=d.path,
        status=d.status,
        old="" if d.status == "added" else readable(d.before),
        new="" if d.status == "removed" else readable(d.after),
        rows=around_changes(d.rows),
    )


@dataclass(frozen=True)
class Skipped:
    """Unchanged lines left out of a line diff."""

    count: int
    tag: str = "skip"


def around_changes(rows: list, context: int = 2) -> list:
    """Line rows with long unchanged stretches folded to a `Skipped` marker, so a one-line edit
    of a long template shows that line and `context` lines either side."""
    changed = [n for n, r in enumerate(rows) if r.tag != "equal"]
    keep = {n for c in changed for n in range(max(0, c - context), min(len(rows), c + context + 1))}
    out: list = []
    skipped = 0
    for n, row in enumerate(rows):
        if n in keep:
            if skipped:
                out.append(Skipped(skipped))
                skipped = 0
            out.append(row)
        else:
            skipped += 1
    if skipped:
        out.append(Skipped(skipped))
    return out


def change_summary(items: list[Change]) -> str:
    n = len(items)
    fields = f"{n} field{'s' if n != 1 else ''}"
    if all(c.status == "added" for c in items):
        return f"{fields} set"
    if all(c.status == "removed" for c in items):
        return f"{fields} removed"
    return f"{fields} changed"
