"""The audit log page for people: actions to pick from a list, a search box whose words match
as prefixes ("dataset" finds dataset.*), and before/after shown as a field-by-field diff with
multi-line text diffed line by line — not a Python dict repr. Pages stay bounded in queries."""

from __future__ import annotations

import html as htmllib
import re
from datetime import UTC, datetime, timedelta

import pytest

from console.accounts.roles import Role
from console.audit import selectors
from console.audit.models import ActorType, AuditEvent
from tests.audit.helpers import append_events
from tests.factories import make_application, make_member

pytestmark = pytest.mark.django_db
START = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
ACTIONS = [
    "dataset.create", "dataset.publish", "dataset.item.update", "datasetx.purge",
    "prompt.version.create", "prompt.bind", "eval.gates.change", "environment_policy.change",
]  # fmt: skip


def spec(n: int, action: str, app, actor: str = "alice", **fields) -> dict:
    return {
        "at": START + timedelta(minutes=n),
        "actor_type": ActorType.USER,
        "actor_id": 7,
        "actor_label": actor,
        "action": action,
        "object_type": action.split(".")[0],
        "object_id": str(n),
        "object_label": fields.pop("label", f"{action.split('.')[0]}-{n}"),
        "application_id": app.pk,
        **fields,
    }


@pytest.fixture
def mine(db):
    return make_application("mine")


@pytest.fixture
def reader(client, mine):
    client.force_login(make_member(mine, Role.VIEWER, "reader"))
    return client


@pytest.fixture
def events(mine):
    return append_events(
        [
            spec(n, action, mine, actor="alice" if n % 3 else "bob")
            for n, action in enumerate(ACTIONS * 3)
        ]
    )


def text(response) -> str:
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def shown(response) -> list[str]:
    return [e.action for e in response.context["events"]]


# --- action list --------------------------------------------------------------------------------


def test_actions_are_every_distinct_action_in_the_log(events):
    assert selectors.actions() == sorted(set(AuditEvent.objects.values_list("action", flat=True)))


def test_the_action_filter_is_a_list_of_the_actions_that_exist(reader, events):
    response = reader.get("/audit/")
    page = response.content.decode()
    select = re.search(r'<select name="action">(.*?)</select>', page, re.S).group(1)
    assert '<optgroup label="dataset">' in select
    assert '<option value="dataset.">dataset.* — every dataset action</option>' in select
    assert '<option value="dataset.publish">dataset.publish</option>' in select
    assert '<option value="eval.gates.change">eval.gates.change</option>' in select
    assert "flag.kill" not in select  # no such event: not offered

    picked = reader.get("/audit/", {"action": "dataset.publish"})
    assert set(shown(picked)) == {"dataset.publish"} and len(shown(picked)) == 3
    assert '<option value="dataset.publish" selected>' in picked.content.decode()
    group = reader.get("/audit/", {"action": "dataset."})
    assert set(shown(group)) == {"dataset.create", "dataset.publish", "dataset.item.update"}
    starred = reader.get("/audit/", {"action": "dataset.*"})
    assert shown(starred) == shown(group)


def test_an_action_from_an_old_link_stays_selected(reader, events):
    response = reader.get("/audit/", {"action": "flag.kill"})
    assert shown(response) == []
    assert '<option value="flag.kill" selected>flag.kill</option>' in response.content.decode()


# --- search box ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("dataset", {"dataset.create", "dataset.publish", "dataset.item.update", "datasetx.purge"}),
        ("dataset.", {"dataset.create", "dataset.publish", "dataset.item.update"}),
        ("publish", {"dataset.publish"}),
        ("Pub", {"dataset.publish"}),
        ("prompt.ver", {"prompt.version.create"}),
        ("gates", {"eval.gates.change"}),
        ("policy", {"environment_policy.change"}),
        ("item", {"dataset.item.update"}),
        ("purge", {"datasetx.purge"}),
        ("create", {"dataset.create", "prompt.version.create", "application.create"}),
        ("nothing-like-this", set()),
    ],
)
def test_search_words_match_action_words_as_prefixes(reader, events, q, expected):
    response = reader.get("/audit/", {"q": q})
    assert response.status_code == 200
    assert set(shown(response)) == expected


def test_every_search_word_must_match_actor_object_or_action(reader, events):
    both = reader.get("/audit/", {"q": "publish bob"})
    assert shown(both) and all(e.actor_label == "bob" for e in both.context["events"])
    assert set(shown(both)) == {"dataset.publish"}
    by_object = reader.get("/audit/", {"q": "prompt-5"})
    assert [e.object_label for e in by_object.context["events"]] == ["prompt-5"]
    assert 'value="publish bob"' in both.content.decode()


def test_search_stays_inside_the_readers_applications(reader, events):
    other = make_application("other")
    append_events([spec(100, "dataset.publish", other, label="secret-set")])
    labels = [e.object_label for e in reader.get("/audit/", {"q": "dataset"}).context["events"]]
    assert "secret-set" not in labels and labels


# --- before / after -----------------------------------------------------------------------------

TEMPLATE_V1 = "\n".join(f"Line {n} of the answer template." for n in range(1, 21))
TEMPLATE_V2 = TEMPLATE_V1.replace("Line 10 of", "Line ten of")


@pytest.fixture
def changed(mine):
    return append_events(
        [
            spec(
                1, "eval.gates.change", mine,
                before={"gates": [{"metric": "pass_rate", "op": ">=", "threshold": 0.8}],
                        "max_error_rate": 0.1},
                after={"gates": [{"metric": "pass_rate", "op": ">=", "threshold": 0.9}],
                       "max_error_rate": 0.05},
            ),
            spec(
                2, "prompt.version.create", mine,
                before={"content": {"template": TEMPLATE_V1, "model": "gpt-4o-mini"},
                        "tags": ["faq"], "params": {}},
                after={"content": {"template": TEMPLATE_V2, "model": "gpt-4o"},
                       "tags": ["faq", "v2"], "reviewed": True, "params": {"top_k": 5}},
            ),
            spec(3, "dataset.create", mine, before=None,
                 after={"key": "golden", "name": "Golden set", "items": 0}),
        ]
    )  # fmt: skip


def test_before_and_after_read_as_field_changes_not_a_dict_repr(reader, changed):
    response = reader.get("/audit/")
    raw = response.content.decode()
    page = text(response)
    assert "{'" not in htmllib.unescape(raw) and "'gates'" not in htmllib.unescape(raw)
    # Scalars: field: old → new.
    assert "max_error_rate 0.1 → 0.05" in page
    # A list of objects reads one `key: value` line per object.
    assert re.search(r"gates • [^→]*threshold: 0\.8 → • [^→]*threshold: 0\.9 max_error_rate", page)
    # Nested objects by dotted path; lists of words as a list; an added field on its own.
    assert "content.model gpt-4o-mini → gpt-4o" in page
    assert "tags faq → faq, v2" in page
    assert "reviewed yes" in page
    # An empty object that gained a field shows the field, not "(empty) → (removed)".
    assert "params.top_k 5" in page and "(removed)" not in page
    # A created object lists what it was created with, not "None → {...}".
    assert "3 fields set" in page and "key golden" in page and "name Golden set" in page


def test_long_text_is_diffed_line_by_line_around_the_change(reader, changed):
    response = reader.get("/audit/")
    [event] = [e for e in response.context["events"] if e.action == "prompt.version.create"]
    [template] = [c for c in event.changes if c.path == "content.template"]
    tags = [r.tag for r in template.rows]
    assert tags == ["skip", "equal", "equal", "replace", "equal", "equal", "skip"]
    assert (template.rows[0].count, template.rows[-1].count) == (7, 8)
    page = text(response)
    assert "content.template ⋯ 7 unchanged lines" in page
    assert "− Line 10 of the answer template. + Line ten of the answer template." in page
    assert "Line 1 of the answer template." not in page  # far from the change: folded


def test_readable_values():
    assert selectors.readable(None) == "—"
    assert selectors.readable([]) == "(none)" and selectors.readable({}) == "(empty)"
    assert selectors.readable({"a": 1, "b": {"c": [1, 2]}}) == 'a: 1, b: {"c": [1, 2]}'
    assert selectors.readable(0.25) == "0.25" and selectors.readable(False) == "no"
    assert selectors.readable("  ") == '""'


# --- bounded and fast ---------------------------------------------------------------------------


def test_the_page_stays_bounded_with_many_events(client, mine, django_assert_max_num_queries):
    client.force_login(make_member(mine, Role.VIEWER, "reader"))
    big = {"template": TEMPLATE_V1, "gates": [{"metric": "pass_rate", "threshold": 0.8}]}
    append_events(
        [
            spec(n, ACTIONS[n % len(ACTIONS)], mine, actor=f"user{n % 9}",
                 before=big, after={**big, "template": TEMPLATE_V2})
            for n in range(600)
        ]
    )  # fmt: skip
    for params in ({}, {"q": "dataset"}, {"q": "publish user3"}, {"action": "prompt."}):
        with django_assert_max_num_queries(8):
            response = client.get("/audit/", params)
        assert response.status_code == 200
        assert len(response.context["events"]) <= selectors.PAGE_SIZE
    with django_assert_max_num_queries(8):
        client.get("/audit/", {"q": "dataset"}, headers={"HX-Request": "true"})
