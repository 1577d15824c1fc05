"""The golden-set editor through the views: inline cells (htmx), conflicts, row actions, bulk
actions, filters, pagination and a bounded number of queries per page."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from console.core.canonical import canonical_json
from console.datasets import selectors, services
from console.datasets.models import DatasetItem
from tests.datasets.helpers import (
    HTMX,
    actions_since,
    events_since,
    generated,
    last_seq,
    seed,
    set_fields,
    state,
    url,
)


def item(dataset, item_id: str) -> DatasetItem:
    return DatasetItem.objects.get(dataset=dataset, item_id=item_id)


def hidden_base(response) -> str:
    """The `base` the edit cell carries, exactly as the browser would post it back."""
    match = re.search(r'name="base" value="([^"]*)"', response.content.decode())
    assert match, response.content.decode()
    return html.unescape(match.group(1))


def open_cell(client, dataset, item_id, field):
    response = client.get(
        url("cell", dataset, "edit=1", item_id=item_id, field=field), headers=HTMX
    )
    assert response.status_code == 200
    assert 'class="cell-form"' in response.content.decode()
    return hidden_base(response)


def save_cell(client, dataset, item_id, field, value, base):
    return client.post(
        url("cell", dataset, item_id=item_id, field=field),
        {"value": value, "base": base},
        headers=HTMX,
    )


# ---------------------------------------------------------------- inline cell edits


def test_edit_cell_saves_and_returns_the_display_cell(curator_client, filled, curator):
    before = item(filled, "refund-1")
    base = open_cell(curator_client, filled, "refund-1", "expected_contains")
    assert json.loads(base) == ["30 days"]
    seq = last_seq()

    response = save_cell(
        curator_client, filled, "refund-1", "expected_contains", "30 days\n receipt \n\n", base
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert 'class="cell-form"' not in body  # the display cell, not the editor
    assert f'id="cell-{before.pk}-expected_contains"' in body
    assert "<li>receipt</li>" in body
    assert response["HX-Trigger"] == "dataset-changed"
    after = item(filled, "refund-1")
    assert after.expected_contains == ["30 days", "receipt"]
    assert after.revision == before.revision + 1
    assert after.updated_by == curator
    assert after.content_hash != before.content_hash
    assert after.changed_since_published
    events = events_since(seq)
    assert [e.action for e in events] == ["dataset.item.update"]
    assert events[0].before == {"expected_contains": ["30 days"]}
    assert events[0].after == {"expected_contains": ["30 days", "receipt"]}
    assert events[0].object_label.endswith("golden#refund-1")
    assert events[0].actor_label == curator.username


@pytest.mark.parametrize(
    ("field", "value", "saved"),
    [
        ("question", "  How long is the return window?  ", "How long is the return window?"),
        ("variables", '{"tier": "silver", "n": 2}', {"tier": "silver", "n": 2}),
        ("tags", "Refunds\nreturns", ["refunds", "returns"]),
        ("unanswerable", "true", True),
        ("note", "check with legal", "check with legal"),
    ],
)
def test_each_kind_of_cell_is_parsed_from_its_edit_box(curator_client, filled, field, value, saved):
    base = open_cell(curator_client, filled, "refund-1", field)
    response = save_cell(curator_client, filled, "refund-1", field, value, base)
    assert response.status_code == 200
    assert getattr(item(filled, "refund-1"), field) == saved


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("variables", '{"tier": "gold",}', "malformed JSON"),
        ("variables", '["not", "an", "object"]', 'is not "name: value" — e.g. "customer: Ada"'),
        ("variables", '{"not": "closed"', "malformed JSON"),
        ("tags", "refunds\nNot A Tag!", "is not a tag"),
        ("question", "   ", "is required"),
    ],
)
def test_invalid_cell_returns_the_editor_with_the_error_and_changes_nothing(
    curator_client, filled, field, value, message
):
    base = open_cell(curator_client, filled, "refund-1", field)
    before = state(filled)

    response = save_cell(curator_client, filled, "refund-1", field, value, base)

    assert response.status_code == 200
    body = response.content.decode()
    assert 'class="cell-form"' in body
    assert 'class="cell-error"' in body
    assert message in html.unescape(body)
    assert f">{value}</textarea>" in html.unescape(body)  # what was typed is kept
    assert hidden_base(response) == base
    assert "HX-Trigger" not in response
    assert state(filled) == before


def test_non_finite_number_in_variables_is_a_cell_error(curator_client, filled):
    base = open_cell(curator_client, filled, "refund-1", "variables")
    before = state(filled)
    response = save_cell(curator_client, filled, "refund-1", "variables", '{"x": NaN}', base)
    assert response.status_code == 200
    assert 'class="cell-error"' in response.content.decode()
    assert state(filled) == before


def test_an_unknown_column_is_not_found(curator_client, filled):
    response = save_cell(curator_client, filled, "refund-1", "content_hash", "x", '""')
    assert response.status_code == 404


def test_a_deleted_item_is_not_found(curator_client, filled, curator):
    services.delete_items(actor=curator, dataset=filled, item_ids=["refund-1"])
    response = save_cell(curator_client, filled, "refund-1", "note", "x", '""')
    assert response.status_code == 404


def test_saving_the_value_already_stored_writes_nothing(curator_client, filled):
    base = open_cell(curator_client, filled, "ship-1", "question")
    before = state(filled)
    response = save_cell(
        curator_client, filled, "ship-1", "question", "How much is standard shipping?", base
    )
    assert response.status_code == 200
    assert state(filled) == before


# ---------------------------------------------------------------- concurrent edits


def test_second_save_from_the_same_start_is_refused_and_shows_the_first(
    curator_client, second_curator_client, filled, curator
):
    base_a = open_cell(curator_client, filled, "ship-1", "question")
    base_b = open_cell(second_curator_client, filled, "ship-1", "question")
    assert base_a == base_b == canonical_json("How much is standard shipping?")
    seq = last_seq()

    first = save_cell(curator_client, filled, "ship-1", "question", "Shipping cost (A)?", base_a)
    assert first.status_code == 200
    revision = item(filled, "ship-1").revision

    second = save_cell(
        second_curator_client, filled, "ship-1", "question", "Shipping price (B)?", base_b
    )

    assert second.status_code == 200
    body = html.unescape(second.content.decode())
    assert 'class="cell-conflict"' in body
    assert f"{curator.username} changed question of ship-1" in body
    assert "Their value:<pre>Shipping cost (A)?</pre>" in body
    assert "Shipping price (B)?" in body  # B's typing is kept in the box
    stored = item(filled, "ship-1")
    assert stored.question == "Shipping cost (A)?"
    assert stored.revision == revision
    assert actions_since(seq) == ["dataset.item.update"]

    # The refreshed base makes B's next save deliberate: it now replaces A's value.
    assert hidden_base(second) == canonical_json("Shipping cost (A)?")
    third = save_cell(
        second_curator_client, filled, "ship-1", "question", "Shipping price (B)?",
        hidden_base(second),
    )  # fmt: skip
    assert third.status_code == 200
    assert item(filled, "ship-1").question == "Shipping price (B)?"
    assert actions_since(seq) == ["dataset.item.update", "dataset.item.update"]


def test_editing_different_cells_of_one_item_both_succeed(
    curator_client, second_curator_client, filled
):
    base_q = open_cell(curator_client, filled, "acct-1", "question")
    base_n = open_cell(second_curator_client, filled, "acct-1", "note")
    revision = item(filled, "acct-1").revision
    seq = last_seq()

    a = save_cell(curator_client, filled, "acct-1", "question", "Forgot my password?", base_q)
    b = save_cell(second_curator_client, filled, "acct-1", "note", "asked weekly", base_n)

    assert 'class="cell-conflict"' not in a.content.decode() + b.content.decode()
    stored = item(filled, "acct-1")
    assert (stored.question, stored.note) == ("Forgot my password?", "asked weekly")
    assert stored.revision == revision + 2
    assert actions_since(seq) == ["dataset.item.update", "dataset.item.update"]


def test_service_refuses_a_stale_base(filled, curator):
    stale = item(filled, "refund-1")
    services.update_item_field(
        actor=curator, item=stale, field_name="tags", value=["returns"], base=["refunds"]
    )
    with pytest.raises(services.ItemConflict) as caught:
        services.update_item_field(
            actor=curator, item=stale, field_name="tags", value=["policy"], base=["refunds"]
        )
    assert caught.value.current == ["returns"]
    assert item(filled, "refund-1").tags == ["returns"]


# ---------------------------------------------------------------- add, duplicate, delete, bulk


def test_add_item_appends_a_row_and_one_audit_event(curator_client, filled):
    seq = last_seq()
    response = curator_client.post(
        url("item_add", filled), {"question": "  Do you ship to Mars? "}, headers=HTMX
    )
    assert response.status_code == 200
    added = filled.draft_items.get(question="Do you ship to Mars?")
    assert f'id="item-{added.item_id}"' in response.content.decode()
    assert added.position < min(
        filled.draft_items.exclude(pk=added.pk).values_list("position", flat=True)
    )  # first in the draft, as the editor shows it
    assert added.published_hash is None
    assert actions_since(seq) == ["dataset.item.create"]
    assert events_since(seq)[0].after["item_id"] == added.item_id


def test_add_item_without_a_question_shows_the_error_and_adds_nothing(curator_client, filled):
    before = state(filled)
    response = curator_client.post(url("item_add", filled), {"question": "  "}, headers=HTMX)
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#add-error"
    assert "question: is required" in response.content.decode()
    assert state(filled) == before


def test_duplicate_copies_the_content_under_a_new_id(curator_client, filled):
    seq = last_seq()
    response = curator_client.post(url("item_duplicate", filled, item_id="refund-1"), headers=HTMX)
    assert response.status_code == 200
    original = item(filled, "refund-1")
    copies = filled.draft_items.exclude(item_id="refund-1").filter(question=original.question)
    assert len(copies) == 1
    copy = copies[0]
    assert copy.item_id != original.item_id
    assert copy.content_hash == original.content_hash
    assert (copy.variables, copy.tags) == ({"tier": "gold"}, ["refunds"])
    assert actions_since(seq) == ["dataset.item.create"]


def bulk(client, dataset, action, ids, **extra):
    return client.post(url("bulk", dataset), {"action": action, "ids": ids, **extra})


def test_bulk_delete_removes_the_selection_as_one_event(curator_client, filled):
    seq = last_seq()
    response = bulk(curator_client, filled, "delete", ["refund-1", "ship-1", "nope"])
    assert response.status_code == 302
    assert list(filled.draft_items.values_list("item_id", flat=True)) == ["acct-1"]
    events = events_since(seq)
    assert [e.action for e in events] == ["dataset.item.delete"]
    assert events[0].before == {"item_ids": ["refund-1", "ship-1"]}


def test_bulk_tag_and_untag_are_one_event_each(curator_client, filled):
    seq = last_seq()
    response = bulk(curator_client, filled, "tag", ["refund-1", "ship-1"], tag="Policy")
    assert response.status_code == 302
    assert item(filled, "refund-1").tags == ["policy", "refunds"]
    assert item(filled, "ship-1").tags == ["policy", "shipping"]
    assert item(filled, "ship-1").tags_text == ",policy,shipping,"
    assert item(filled, "acct-1").tags == ["account", "shipping"]

    bulk(curator_client, filled, "untag", ["ship-1", "acct-1"], tag="shipping")
    assert item(filled, "ship-1").tags == ["policy"]
    assert item(filled, "acct-1").tags == ["account"]
    events = events_since(seq)
    assert [e.action for e in events] == ["dataset.items.tag", "dataset.items.untag"]
    assert events[0].after == {"tag": "policy", "item_ids": ["refund-1", "ship-1"]}
    assert sorted(events[1].after["item_ids"]) == ["acct-1", "ship-1"]

    # Tagging items that already carry the tag changes nothing and records nothing.
    before = state(filled)
    bulk(curator_client, filled, "tag", ["ship-1"], tag="policy")
    assert state(filled) == before


@pytest.mark.parametrize(
    ("action", "ids", "extra"),
    [
        ("tag", ["refund-1"], {"tag": "Not a tag!"}),
        ("tag", ["refund-1"], {"tag": "   "}),
        ("tag", [], {"tag": "policy"}),
        ("delete", [], {}),
        ("explode", ["refund-1"], {}),
    ],
)
def test_bulk_refusals_change_nothing(curator_client, filled, action, ids, extra):
    before = state(filled)
    response = bulk(curator_client, filled, action, ids, **extra)
    assert response.status_code == 302
    assert state(filled) == before


def test_service_refuses_a_blank_tag(filled, curator):
    before = state(filled)
    with pytest.raises(ValidationError):
        services.tag_items(actor=curator, dataset=filled, item_ids=["refund-1"], tag="   ")
    assert state(filled) == before


def test_bulk_returns_to_the_filtered_page(curator_client, filled):
    response = bulk(curator_client, filled, "tag", ["ship-1"], tag="x", return_query="tag=shipping")
    assert response["Location"] == url("editor", filled, "tag=shipping")


# ---------------------------------------------------------------- filters and pagination


def ids_on_page(response) -> list[str]:
    return [i.item_id for i in response.context["page"].object_list]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["refund-1", "ship-1", "acct-1"]),
        ("q=SHIPPING", ["ship-1"]),
        ("q=acct-1", ["acct-1"]),
        ("q=password", ["acct-1"]),
        ("tag=shipping", ["ship-1", "acct-1"]),
        ("tag=refunds", ["refund-1"]),
        ("tag=ship", []),  # a tag matches whole tags only
        ("q=password&tag=shipping", ["acct-1"]),
        ("q=password&tag=refunds", []),
        ("changed=1", []),
    ],
)
def test_filters(curator_client, filled, query, expected):
    response = curator_client.get(url("editor", filled, query))
    assert response.status_code == 200
    assert ids_on_page(response) == expected


def test_changed_since_published_filter(curator_client, filled, curator):
    set_fields(filled, "ship-1", note="n")
    services.add_item(actor=curator, dataset=filled, values={"id": "new-1", "question": "New?"})
    # Changed and changed back: equal to the published content again.
    set_fields(filled, "acct-1", note="x")
    set_fields(filled, "acct-1", note="")
    response = curator_client.get(url("editor", filled, "changed=1"))
    assert ids_on_page(response) == ["new-1", "ship-1"]  # added items go first
    assert "changed-dot" in response.content.decode()

    services.publish(actor=curator, dataset=filled, message="second")
    assert ids_on_page(curator_client.get(url("editor", filled, "changed=1"))) == []


def test_filtered_htmx_request_returns_only_the_items_partial(curator_client, filled):
    response = curator_client.get(
        url("editor", filled, "tag=refunds"), headers={**HTMX, "HX-Target": "items"}
    )
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="items"')
    assert "<html" not in body
    assert re.findall(r'<tr id="item-([^"]+)"', body) == ["refund-1"]


def test_pagination(curator_client, dataset):
    seed(dataset, generated(300))
    first = curator_client.get(url("editor", dataset))
    assert ids_on_page(first) == [f"item-{k:05d}" for k in range(1, 51)]
    assert "300 items · page 1 of 6" in first.content.decode()
    last = curator_client.get(url("editor", dataset, "page=6"))
    assert ids_on_page(last) == [f"item-{k:05d}" for k in range(251, 301)]
    # Out of range and junk page numbers land on a real page instead of failing.
    assert ids_on_page(curator_client.get(url("editor", dataset, "page=99"))) == ids_on_page(last)
    assert ids_on_page(curator_client.get(url("editor", dataset, "page=x"))) == ids_on_page(first)
    # Filters and pages combine: 60 items carry topic-1.
    tagged = curator_client.get(url("editor", dataset, "tag=topic-1&page=2"))
    expected = [f"item-{k:05d}" for k in range(1, 301) if k % 5 == 1][50:]
    assert len(expected) == 10
    assert ids_on_page(tagged) == expected
    body = tagged.content.decode()
    assert "60 items · page 2 of 2" in body
    assert 'href="?tag=topic-1&amp;page=1"' in body


def test_editor_query_count_does_not_grow_with_the_set(
    curator_client, curator, dataset, django_assert_max_num_queries
):
    counts = []
    for total in (50, 500):
        seed(
            dataset,
            generated(total - dataset.draft_items.count(), start=dataset.draft_items.count() + 1),
        )
        assert dataset.draft_items.count() == total
        services.publish(actor=curator, dataset=dataset, message=f"{total} items")
        with django_assert_max_num_queries(15), CaptureQueriesContext(connection) as queries:
            response = curator_client.get(url("editor", dataset, "page=2"))
        assert response.status_code == 200
        assert len(response.context["page"].object_list) == 50
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_hints_fragment_query_count_is_bounded(
    curator_client, dataset, django_assert_max_num_queries
):
    seed(dataset, generated(500))
    with django_assert_max_num_queries(10):
        response = curator_client.get(url("hints", dataset), headers=HTMX)
    assert response.status_code == 200
    assert "<strong>0</strong> unanswerable of 500" in response.content.decode()


# ---------------------------------------------------------------- read-only roles


def test_viewer_reads_but_sees_no_edit_controls(viewer_client, filled):
    response = viewer_client.get(url("editor", filled))
    assert response.status_code == 200
    body = response.content.decode()
    assert ids_on_page(response) == ["refund-1", "ship-1", "acct-1"]
    assert "cell-form" not in body and "?edit=1" not in body
    assert 'id="bulk-form"' not in body and "Publish…" not in body
    cell = viewer_client.get(url("cell", filled, item_id="refund-1", field="question"))
    assert cell.status_code == 200
    assert "How long do I have to return an item?" in cell.content.decode()
    for name in ("hints", "versions", "diff"):
        assert viewer_client.get(url(name, filled)).status_code == 200
    export = viewer_client.get(url("export", filled, "format=jsonl"))
    assert export.status_code == 200
    assert len(b"".join(export.streaming_content).splitlines()) == 3


def write_requests(dataset, job_pk):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("x.csv", b"question\nNew?\n", content_type="text/csv")
    return [
        ("get", url("cell", dataset, "edit=1", item_id="refund-1", field="question"), None),
        ("post", url("cell", dataset, item_id="refund-1", field="question"),
         {"value": "x", "base": canonical_json("How long do I have to return an item?")}),
        ("post", url("item_add", dataset), {"question": "Viewer question?"}),
        ("post", url("item_duplicate", dataset, item_id="refund-1"), {}),
        ("post", url("bulk", dataset), {"action": "delete", "ids": ["refund-1"]}),
        ("post", url("bulk", dataset), {"action": "tag", "ids": ["refund-1"], "tag": "x"}),
        ("get", url("import", dataset), None),
        ("post", url("import", dataset), {"file": upload, "mode": "merge"}),
        ("get", url("import_job", dataset, job=job_pk), None),
        ("post", url("import_job", dataset, job=job_pk), {}),
        ("get", url("publish", dataset), None),
        ("post", url("publish", dataset), {"message": "viewer publish"}),
        ("get", f"/apps/{dataset.application.key}/datasets/new/", None),
        ("post", f"/apps/{dataset.application.key}/datasets/new/",
         {"key": "other", "name": "Other"}),
    ]  # fmt: skip


@pytest.mark.parametrize("role", ["viewer", "approver"])
def test_read_only_roles_get_403_on_every_write_endpoint(client, member, filled, curator, role):
    set_fields(filled, "refund-1", note="draft")
    job = services.start_import_job(
        actor=curator, dataset=filled, data=b"question\nPending?\n", filename="p.csv", fmt=None,
        mode="merge",
    )  # fmt: skip
    client.force_login(member(role))
    before = state(filled)
    jobs_before = list(filled.import_jobs.values_list("pk", "status"))
    for method, target, data in write_requests(filled, job.pk):
        response = (
            getattr(client, method)(target, data)
            if data is not None
            else getattr(client, method)(target)
        )
        assert response.status_code == 403, f"{method.upper()} {target}: {response.status_code}"
    assert state(filled) == before
    assert list(filled.import_jobs.values_list("pk", "status")) == jobs_before
    assert filled.application.datasets.count() == 1


def test_selector_page_matches_the_view(filled):
    page = selectors.draft_page(filled, selectors.ItemFilters.from_query({"tag": "SHIPPING"}), 1)
    assert [i.item_id for i in page.object_list] == ["ship-1", "acct-1"]
    junk = selectors.ItemFilters.from_query({"tag": "no such tag!", "changed": "yes"})
    assert (junk.tag, junk.changed) == ("", False)
