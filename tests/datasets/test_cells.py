"""Cells for people who do not write JSON: lists one entry per line (`;` in CSV), variables as
`name: value`; errors that quote the value and show the accepted form; round trips that never
change the data."""

from __future__ import annotations

import html

import pytest

from console.datasets import cells, services
from console.datasets.items import ItemError
from tests.datasets.helpers import HTMX, rows, state, url
from tests.datasets.test_editor import hidden_base, item, open_cell, save_cell
from tests.datasets.test_io import csv_bytes

# ---------------------------------------------------------------- codecs

VARIABLES = [
    {},
    {"customer": "Ada Lovelace", "tier": "gold"},
    {"n": 2, "ratio": 0.5, "vip": True, "none": None, "ids": [1, "a"], "meta": {"a": 1}},
    # Text that would read back as something else is quoted.
    {"zip": "02139", "count": "2", "flag": "true", "quoted": '"hi"', "empty": ""},
    {"padded": " x ", "lines": "a\nb", "colon": "a: b", "semi": "a; b"},
    {"has:colon": "v", " spaced ": "v", '"quote': "v"},
    {"context": "[a] first line\n[b] second", "gap": "a\n\nb", "edge": "a\n b", "js": "[1,\n2]"},
]


@pytest.mark.parametrize("value", VARIABLES)
def test_variables_round_trip_through_the_edit_box(value):
    text = cells.variables_to_text(value)
    assert cells.variables_from_text("variables", text) == value


def test_variables_are_shown_as_name_value_lines():
    text = cells.variables_to_text({"customer": "Ada", "n": 2, "zip": "02139", "code": "7"})
    assert text == 'customer: Ada\nn: 2\nzip: 02139\ncode: "7"'


def test_a_value_of_several_lines_continues_on_indented_lines():
    value = {"context": "[refunds] 30 days.\n[shipping] Free over $50.", "tier": "gold"}
    text = cells.variables_to_text(value)
    assert text == "context: [refunds] 30 days.\n  [shipping] Free over $50.\ntier: gold"
    typed = "context: first\n    second\n\ttabbed\ntier: gold"
    assert cells.variables_from_text("variables", typed) == {
        "context": "first\nsecond\ntabbed",
        "tier": "gold",
    }


LISTS = [[], ["30 days", "receipt"], ["[draft] policy"], ['["x"]'], ["two\nlines"], ["a; b"]]


@pytest.mark.parametrize("value", LISTS)
def test_lists_round_trip_through_the_edit_box(value):
    text = cells.list_to_text(value)
    assert cells.list_from_text("expected_contains", text) == value


def test_lists_are_shown_one_per_line_and_read_from_lines_or_json():
    assert cells.list_to_text(["30 days", "receipt"]) == "30 days\nreceipt"
    assert cells.list_from_text("tags", " a \r\n\r\nb\n") == ["a", "b"]
    assert cells.list_from_text("tags", '["a", "b"]') == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo", 'variables: "foo" is not "name: value" — e.g. "customer: Ada"'),
        ("tier: gold\nfoo", 'variables: line 2: "foo" is not "name: value"'),
        (": gold", 'variables: ": gold" is not "name: value"'),
        ("a: 1\nb: 2\na: 3", 'variables: line 3: "a" is given twice (first on line 1)'),
        ('{"tier": "gold",}', "variables: malformed JSON"),
    ],
)
def test_variable_errors_quote_the_value_and_show_the_form(text, message):
    with pytest.raises(ItemError) as caught:
        cells.variables_from_text("variables", text)
    assert message in str(caught.value)


# ---------------------------------------------------------------- the editor


def test_variables_open_as_lines_and_save_from_lines(curator_client, filled):
    response = curator_client.get(
        url("cell", filled, "edit=1", item_id="refund-1", field="variables"), headers=HTMX
    )
    assert ">tier: gold</textarea>" in response.content.decode()
    base = hidden_base(response)

    saved = save_cell(
        curator_client, filled, "refund-1", "variables", "tier: silver\nregion: EU\nseats: 3", base
    )

    assert saved.status_code == 200
    assert 'class="cell-form"' not in saved.content.decode()
    assert item(filled, "refund-1").variables == {"tier": "silver", "region": "EU", "seats": 3}


def test_saving_an_opened_cell_unchanged_changes_nothing(curator_client, filled, curator):
    services.update_item_field(
        actor=curator, item=item(filled, "refund-1"), field_name="variables",
        value={"tier": "gold", "zip": "02139", "n": "7", "meta": {"a": [1]}, "note": "a\nb"},
        base={"tier": "gold"},
    )  # fmt: skip
    for field in ["variables", "expected_contains", "tags", "question"]:
        response = curator_client.get(
            url("cell", filled, "edit=1", item_id="refund-1", field=field), headers=HTMX
        )
        body = response.content.decode()
        text = html.unescape(body.split("</textarea>")[0].rsplit(">", 1)[1])
        before = state(filled)
        save_cell(curator_client, filled, "refund-1", field, text, hidden_base(response))
        assert state(filled) == before, field


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("variables", "tier: gold\nfoo", 'variables: line 2: "foo" is not "name: value"'),
        ("tags", "refunds\nNot A Tag!", 'tags: "Not A Tag!" is not a tag'),
    ],
)
def test_editor_errors_name_the_field_and_quote_the_value(
    curator_client, filled, field, value, message
):
    base = open_cell(curator_client, filled, "refund-1", field)
    before = state(filled)
    response = save_cell(curator_client, filled, "refund-1", field, value, base)
    body = html.unescape(response.content.decode())
    assert 'class="cell-error"' in body
    assert message in body
    assert "e.g." in body  # an example of the accepted form
    assert state(filled) == before


def test_list_cells_take_one_entry_per_line(curator_client, filled):
    base = open_cell(curator_client, filled, "ship-1", "expected_sources")
    save_cell(curator_client, filled, "ship-1", "expected_sources", "policies/ship.md\nfaq", base)
    assert item(filled, "ship-1").expected_sources == ["policies/ship.md", "faq"]


# ---------------------------------------------------------------- CSV import


def test_csv_lists_take_semicolons_or_json_and_variables_take_name_value(curator, dataset):
    data = csv_bytes(
        ["id", "question", "expected_contains", "tags", "variables"],
        ["a", "Semicolons?", "30 days; receipt ;", "Refunds; multi-part", "tier: gold; seats: 3"],
        ["b", "JSON?", '["30 days", "a; b"]', '["shipping"]', '{"tier": "silver"}'],
        ["c", "Lines?", "one", "", "customer: Ada\nregion: eu"],
    )
    services.import_file(actor=curator, dataset=dataset, data=data, filename="x.csv")
    got = {r["id"]: r for r in rows(dataset)}
    assert got["a"]["expected_contains"] == ["30 days", "receipt"]
    assert got["a"]["tags"] == ["multi-part", "refunds"]
    assert got["a"]["variables"] == {"tier": "gold", "seats": 3}
    assert got["b"]["expected_contains"] == ["30 days", "a; b"]
    assert got["b"]["variables"] == {"tier": "silver"}
    assert got["c"]["expected_contains"] == ["one"]
    assert got["c"]["variables"] == {"customer": "Ada", "region": "eu"}


def test_csv_errors_name_the_row_and_field_and_quote_the_value(curator_client, filled):
    data = csv_bytes(
        ["id", "question", "variables", "expected_contains"],
        ["x1", "Fine?", "tier: gold", "a; b"],
        ["x2", "Bad variables?", "tier: gold; premium", "a"],
        ["x3", "Bad list?", "", "[broken"],
    )
    before = state(filled)
    response = curator_client.post(
        url("import", filled), {"file": _upload(data), "mode": "merge", "format": ""}, follow=True
    )
    body = html.unescape(response.content.decode())
    assert "Nothing was imported" in body
    assert 'entry 2: "premium" is not "name: value" — e.g. "customer: Ada"' in body
    assert '"[broken"' in body and 'separate entries with ";"' in body
    job_report = response.context["job"].report["problems"]
    assert {(p["line"], p["field"]) for p in job_report} == {
        (3, "variables"),
        (4, "expected_contains"),
    }
    assert state(filled) == before


def _upload(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("items.csv", data, content_type="text/csv")


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"question": "Q?", "variables": "tier: gold"}', "variables", "is not an object"),
        ('{"question": "Q?", "tags": "refunds"}', "tags", '"refunds" is not a list of text'),
        ('{"question": "Q?", "expected_contains": [7]}', "expected_contains", "7 is not text"),
        ('{"question": "Q?", "unanswerable": "maybe"}', "unanswerable", '"maybe" is not true'),
    ],
)
def test_jsonl_errors_quote_the_value_with_an_example(curator, filled, line, field, message):
    from console.datasets.services import ImportRejected

    before = state(filled)
    with pytest.raises(ImportRejected) as caught:
        services.import_file(
            actor=curator, dataset=filled, data=(line + "\n").encode(), filename="x.jsonl"
        )
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (1, field)
    assert message in problem.message and "e.g." in problem.message
    assert state(filled) == before
