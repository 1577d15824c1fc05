"""The /audit/ page and its exports: filters, keyset pagination, htmx fragment, per-application
scoping, bounded queries, and streaming CSV/JSONL exports of every matching event."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext

from console.accounts.roles import Role
from console.audit.models import ActorType, AuditEvent
from console.audit.selectors import PAGE_SIZE
from console.audit.services import SYSTEM
from console.audit.views import EXPORT_FIELDS
from console.core.canonical import canonical_json
from console.registry.models import Application
from tests.audit.helpers import append_events, record_at
from tests.factories import make_application, make_member, make_user

START = datetime(2024, 3, 1, 0, 30, tzinfo=UTC)
ACTORS = ["alice", "bob", "alice2"]
ACTIONS = [
    "prompt.create", "prompt.version.create", "prompt.bind", "model_config.version.create",
    "model_config.bind", "promptx.create", "flag.kill",
]  # fmt: skip
N_EVENTS = 160  # > 3 pages


def _label(action: str, i: int) -> str:
    if action.startswith("prompt."):
        return f"answer@{i}" + (" → dev" if action.endswith("bind") else "")
    if action.startswith("model_config."):
        return f"main@{i}"
    return f"flag-{i}"


def add_events(n: int, apps: list[Application | None], offset: int = 0) -> None:
    """n events every 2 hours from START, cycling actors, actions and applications."""
    specs = []
    for j in range(n):
        i = offset + j
        action = ACTIONS[i % len(ACTIONS)]
        actor = ACTORS[i % len(ACTORS)]
        app = apps[i % len(apps)]
        specs.append(
            {
                "at": START + timedelta(hours=2 * i),
                "actor_type": ActorType.USER,
                "actor_id": 1000 + ACTORS.index(actor),
                "actor_label": actor,
                "action": action,
                "object_type": action.split(".")[0],
                "object_id": str(i),
                "object_label": _label(action, i),
                "application_id": app.pk if app else None,
                "before": {"n": i} if i % 2 else None,
                "after": {"n": i + 1, "note": 'ünïcode, "quoted"\nline'},
                "reason": f"because {i}",
                "request_id": f"req-{i:08d}",
                "ip": "192.0.2.7" if i % 3 else None,
            }
        )
    append_events(specs)


@dataclass
class World:
    mine: Application
    other: Application
    reader: object

    def visible(self, staff: bool = False) -> list[AuditEvent]:
        """What `reader` may see, newest first (computed here, not by the code under test)."""
        allowed = {self.mine.pk} | ({None} if staff else set())
        return [e for e in AuditEvent.objects.order_by("-seq") if e.application_id in allowed]


@pytest.fixture
def world(db) -> World:
    mine = make_application("mine")
    other = make_application("other")
    reader = make_member(mine, Role.VIEWER, "reader")
    make_member(other, Role.ENGINEER, "outsider")
    # 4 of 6 events land in `mine`, one in `other`, one system-wide (no application)
    add_events(N_EVENTS, [mine, mine, other, mine, None, mine])
    return World(mine, other, reader)


@pytest.fixture
def reader_client(client, world):
    client.force_login(world.reader)
    return client


def _day(e: AuditEvent) -> date:
    return e.at.astimezone(UTC).date()


Predicate = Callable[[AuditEvent, World], bool]
FILTERS: list[tuple[dict[str, str], Predicate]] = [
    ({}, lambda e, w: True),
    ({"actor": "alice"}, lambda e, w: e.actor_label == "alice"),
    ({"actor": "  bob "}, lambda e, w: e.actor_label == "bob"),
    ({"actor": "ali"}, lambda e, w: False),
    ({"action": "prompt.bind"}, lambda e, w: e.action == "prompt.bind"),
    ({"action": "prompt."}, lambda e, w: e.action.startswith("prompt.")),
    ({"action": "model_config."}, lambda e, w: e.action.startswith("model_config.")),
    ({"action": "prompt"}, lambda e, w: False),
    ({"application": "mine"}, lambda e, w: e.application_id == w.mine.pk),
    ({"application": "other"}, lambda e, w: False),
    ({"application": "nope"}, lambda e, w: False),
    ({"object": "answer@1"}, lambda e, w: e.object_label.startswith("answer@1")),
    ({"object": "main@"}, lambda e, w: e.object_label.startswith("main@")),
    ({"since": "2024-03-05"}, lambda e, w: _day(e) >= date(2024, 3, 5)),
    ({"until": "2024-03-05"}, lambda e, w: _day(e) <= date(2024, 3, 5)),
    (
        {"since": "2024-03-03", "until": "2024-03-04"},
        lambda e, w: date(2024, 3, 3) <= _day(e) <= date(2024, 3, 4),
    ),
    (
        {"actor": "bob", "action": "prompt.", "application": "mine", "since": "2024-03-02"},
        lambda e, w: (
            e.actor_label == "bob"
            and e.action.startswith("prompt.")
            and _day(e) >= date(2024, 3, 2)
        ),
    ),
]
FILTER_IDS = [urlencode(p) or "unfiltered" for p, _ in FILTERS]


def expected(world: World, predicate: Predicate, staff: bool = False) -> list[int]:
    return [e.seq for e in world.visible(staff) if predicate(e, world)]


_OLDER_LINK = re.compile(r'href="(\?[^"]*\bbefore=\d+[^"]*)"')


def walk(client, params: dict[str, str], **headers) -> list[list[int]]:
    """Follow the page's own "older" links from the first page to the last."""
    url = "/audit/?" + urlencode(params)
    pages: list[list[int]] = []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        assert not response.context["errors"]
        pages.append([e.seq for e in response.context["events"]])
        link = _OLDER_LINK.search(response.content.decode())
        assert bool(link) == (response.context["next_cursor"] is not None)
        url = "/audit/" + html.unescape(link.group(1)) if link else None
        assert len(pages) <= N_EVENTS // PAGE_SIZE + 3, "pagination does not terminate"
    return pages


# --- filters and pagination ---------------------------------------------------------------------


@pytest.mark.parametrize(("params", "predicate"), FILTERS, ids=FILTER_IDS)
def test_filters_select_exactly_the_matching_events_across_pages(
    reader_client, world, params, predicate
):
    want = expected(world, predicate)
    pages = walk(reader_client, params)
    got = [seq for page in pages for seq in page]
    assert got == want, "pages concatenate to every match, newest first, no duplicates or gaps"
    assert all(len(page) == PAGE_SIZE for page in pages[:-1])
    assert len(pages[-1]) == (len(want) - 1) % PAGE_SIZE + 1 if want else pages == [[]]


def test_unfiltered_log_spans_several_full_pages(reader_client, world):
    pages = walk(reader_client, {})
    assert len(pages) >= 3 and len(pages[0]) == PAGE_SIZE
    # the older links keep the filters: walking a filtered log never leaves the filter
    response = reader_client.get("/audit/", {"application": "mine", "since": "2024-03-01"})
    link = html.unescape(_OLDER_LINK.search(response.content.decode()).group(1))
    assert "application=mine" in link and "since=2024-03-01" in link


def test_page_from_an_arbitrary_cursor(reader_client, world):
    visible = [e.seq for e in world.visible()]
    cursor = visible[70]
    response = reader_client.get("/audit/", {"before": cursor})
    assert [e.seq for e in response.context["events"]] == visible[71 : 71 + PAGE_SIZE]
    assert response.context["is_first_page"] is False


def test_rows_show_who_did_what_to_which_object(reader_client, world):
    event = world.visible()[0]
    body = reader_client.get("/audit/").content.decode()
    for text in (str(event.seq), event.actor_label, event.action, event.reason):
        assert html.escape(text) in body


# --- bad input is a message, not a 500 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2024-02-30"}, "since"),
        ({"since": "03/01/2024"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "2024-03-05", "until": "2024-03-01"}, "until"),
        ({"before": "abc"}, "before"),
    ],
    ids=["impossible-day", "us-format", "word", "until-before-since", "bad-cursor"],
)
def test_bad_input_shows_an_error_naming_the_field(reader_client, world, params, field):
    response = reader_client.get("/audit/", params)
    assert response.status_code == 200
    errors = response.context["errors"]
    assert set(errors) == {field}
    assert errors[field].startswith(f"{field}:")
    assert list(response.context["events"]) == []
    assert html.escape(errors[field]) in response.content.decode()
    # the htmx swap shows the same message inside the #results fragment
    fragment = reader_client.get("/audit/", params, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    body = fragment.content.decode()
    assert body.lstrip().startswith('<div id="results">') and "<html" not in body
    assert html.escape(errors[field]) in body


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_with_a_bad_date_is_a_400_naming_the_field(reader_client, world, fmt):
    response = reader_client.get(f"/audit/export.{fmt}", {"until": "2024-13-01"})
    assert response.status_code == 400
    assert response.content.decode().startswith("until:")


@pytest.mark.parametrize("url", ["/audit/", "/audit/export.csv"], ids=["page", "export"])
def test_latest_possible_until_date_is_not_a_server_error(reader_client, world, url):
    reader_client.raise_request_exception = False
    response = reader_client.get(url, {"until": "9999-12-31"})
    assert response.status_code in {200, 400}


# --- htmx ---------------------------------------------------------------------------------------


def test_htmx_request_gets_only_the_results_fragment(reader_client, world):
    full = reader_client.get("/audit/", {"action": "prompt."}).content.decode()
    fragment = reader_client.get(
        "/audit/", {"action": "prompt."}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "<html" in full and '<form class="card filters"' in full and 'id="results"' in full
    assert fragment.lstrip().startswith('<div id="results">')
    assert fragment.rstrip().endswith("</div>")
    assert "<html" not in fragment and "<form" not in fragment and "<header" not in fragment
    assert fragment.count('id="results"') == 1
    # the fragment is the same #results block the full page embeds
    assert fragment.strip() in full


# --- scoping ------------------------------------------------------------------------------------


def test_reader_never_sees_other_applications_events(reader_client, world):
    seen = {seq for page in walk(reader_client, {}) for seq in page}
    by_seq = {e.seq: e for e in AuditEvent.objects.all()}
    assert seen, "the reader sees their own application's events"
    assert {by_seq[s].application_id for s in seen} == {world.mine.pk}
    others = AuditEvent.objects.exclude(application_id=world.mine.pk).values_list("seq", flat=True)
    assert not seen & set(others)
    response = reader_client.get("/audit/")
    assert [a.key for a in response.context["applications"]] == ["mine"]


def test_staff_also_see_system_wide_events(client, world):
    world.reader.is_staff = True
    world.reader.save(update_fields=["is_staff"])
    client.force_login(world.reader)
    seen = [seq for page in walk(client, {}) for seq in page]
    assert seen == expected(world, lambda e, w: True, staff=True)
    assert any(AuditEvent.objects.get(seq=s).application_id is None for s in seen)


def test_user_without_memberships_sees_nothing(client, world):
    client.force_login(make_user("nobody"))
    assert walk(client, {}) == [[]]
    body = b"".join(client.get("/audit/export.jsonl").streaming_content)
    assert body == b""


@pytest.mark.parametrize("url", ["/audit/", "/audit/export.csv", "/audit/export.jsonl"])
def test_anonymous_is_sent_to_login(client, world, url):
    response = client.get(url)
    assert response.status_code == 302 and "login" in response["Location"]


# --- bounded queries ----------------------------------------------------------------------------

MAX_PAGE_QUERIES = 8
PAGE_VARIANTS = [
    {},
    {"action": "prompt."},
    {"application": "mine", "since": "2024-03-02", "until": "2024-03-09"},
    {"object": "answer@"},
]


def _query_counts(client, variants: list[dict], before: int | None) -> list[int]:
    counts = []
    for params in variants:
        extra = {"before": before} if before else {}
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/audit/", {**params, **extra})
        assert response.status_code == 200
        counts.append(len(queries))
    return counts


def test_page_query_count_is_bounded_regardless_of_event_count(
    db, client, django_assert_max_num_queries
):
    mine = make_application("mine")
    reader = make_member(mine, Role.VIEWER, "reader")
    client.force_login(reader)
    add_events(6, [mine])
    few = _query_counts(client, PAGE_VARIANTS, before=None)
    add_events(3 * PAGE_SIZE, [mine, None], offset=6)
    many = _query_counts(client, PAGE_VARIANTS, before=None)
    later = _query_counts(client, PAGE_VARIANTS, before=AuditEvent.objects.count() - 20)
    assert few == many == later, "queries do not grow with the number of events"
    for params in PAGE_VARIANTS:
        with django_assert_max_num_queries(MAX_PAGE_QUERIES):
            client.get("/audit/", params)
        with django_assert_max_num_queries(MAX_PAGE_QUERIES):
            client.get("/audit/", params, headers={"HX-Request": "true"})


def test_export_query_count_does_not_grow_with_event_count(reader_client, world):
    with CaptureQueriesContext(connection) as queries:
        response = reader_client.get("/audit/export.csv")
        rows = b"".join(response.streaming_content).count(b"\n")
    assert rows > 100
    assert len(queries) <= MAX_PAGE_QUERIES


# --- exports ------------------------------------------------------------------------------------


def csv_row(e: AuditEvent) -> list[str]:
    def text(value) -> str:
        return "" if value is None else str(value)

    return [
        str(e.seq), e.at.isoformat(), e.actor_type, text(e.actor_id), e.actor_label, e.action,
        e.object_type,
        e.object_id, e.object_label, text(e.application_id), text(e.environment_id),
        canonical_json(e.before), canonical_json(e.after), e.reason, e.request_id, text(e.ip),
        e.prev_hash, e.hash,
    ]  # fmt: skip


def json_row(e: AuditEvent) -> dict:
    return {
        "seq": e.seq, "at": e.at.isoformat(), "actor_type": e.actor_type,
        "actor_id": e.actor_id, "actor_label": e.actor_label, "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id, "object_label": e.object_label,
        "application_id": e.application_id, "environment_id": e.environment_id,
        "before": e.before, "after": e.after, "reason": e.reason, "request_id": e.request_id,
        "ip": e.ip, "prev_hash": e.prev_hash, "hash": e.hash,
    }  # fmt: skip


def export(client, fmt: str, params: dict) -> tuple[StreamingHttpResponse, str]:
    response = client.get(f"/audit/export.{fmt}", params)
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse) and response.streaming
    body = b"".join(response.streaming_content).decode()
    return response, body


def test_csv_export_streams_every_visible_event_with_the_right_columns(reader_client, world):
    response, body = export(reader_client, "csv", {})
    assert response["Content-Type"].startswith("text/csv")
    assert re.fullmatch(
        r'attachment; filename="airlock-audit-\d{8}T\d{6}\.csv"', response["Content-Disposition"]
    )
    header, *rows = list(csv.reader(io.StringIO(body, newline="")))
    assert header == EXPORT_FIELDS
    want = list(reversed(world.visible()))  # oldest first
    assert len(want) > PAGE_SIZE, "the export is not paginated"
    assert rows == [csv_row(e) for e in want]


def test_jsonl_export_streams_every_visible_event_with_the_right_fields(reader_client, world):
    response, body = export(reader_client, "jsonl", {})
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].endswith('.jsonl"')
    lines = body.splitlines()
    assert all(line.strip() for line in lines) and body.endswith("\n")
    rows = [json.loads(line) for line in lines]
    assert all(list(row) == EXPORT_FIELDS for row in rows)
    assert rows == [json_row(e) for e in reversed(world.visible())]


@pytest.mark.parametrize(("params", "predicate"), FILTERS, ids=FILTER_IDS)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_exports_respect_the_filters(reader_client, world, fmt, params, predicate):
    _, body = export(reader_client, fmt, params)
    if fmt == "csv":
        seqs = [int(row[0]) for row in list(csv.reader(io.StringIO(body, newline="")))[1:]]
    else:
        seqs = [json.loads(line)["seq"] for line in body.splitlines()]
    assert seqs == list(reversed(expected(world, predicate)))


def test_exports_ignore_the_page_cursor(reader_client, world):
    """The export links drop `before`: an export is the whole filtered log, not one page."""
    page = reader_client.get("/audit/", {"action": "prompt.", "before": 100})
    body = page.content.decode()
    link = html.unescape(re.search(r'href="(/audit/export\.csv[^"]*)"', body).group(1))
    assert "before" not in link and "action=prompt." in link
    _, exported = export(reader_client, "csv", {"action": "prompt.", "before": 100})
    rows = list(csv.reader(io.StringIO(exported, newline="")))[1:]
    assert len(rows) == len(expected(world, lambda e, w: e.action.startswith("prompt.")))


def test_export_includes_system_events_only_for_staff(client, world):
    client.force_login(world.reader)
    _, body = export(client, "jsonl", {})
    assert all(json.loads(line)["application_id"] == world.mine.pk for line in body.splitlines())
    world.reader.is_staff = True
    world.reader.save(update_fields=["is_staff"])
    _, body = export(client, "jsonl", {})
    ids = {json.loads(line)["application_id"] for line in body.splitlines()}
    assert ids == {world.mine.pk, None}


def test_system_actor_events_render(reader_client, world):
    record_at(
        START, actor=SYSTEM, action="application.archive", object_type="application",
        object_id=world.mine.pk, object_label="mine", application=world.mine,
    )  # fmt: skip
    response = reader_client.get("/audit/", {"actor": "system", "action": "application.archive"})
    [event] = response.context["events"]
    assert (event.actor_type, event.actor_label) == (ActorType.SYSTEM, "system")
    assert "application.archive" in response.content.decode()
