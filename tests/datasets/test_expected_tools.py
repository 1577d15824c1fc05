"""Expected tool calls on golden-set items: cleaning, the one-call-per-line form, matching, and
the field's way through imports, exports, the editor and published versions — without changing
any hash or snapshot from before the field existed."""

from __future__ import annotations

import csv
import html
import io
import json

import pytest

from console.datasets import cells, selectors, services, tools
from console.datasets import io as dataset_io
from console.datasets.items import CONTENT_FIELDS, ItemError, clean_field, clean_item, item_hash
from console.datasets.models import DatasetItem, DatasetVersion, ItemSnapshot
from tests.datasets.helpers import HTMX, jsonl, rows, seed, state, url
from tests.datasets.test_cells import _upload
from tests.datasets.test_editor import hidden_base, item, open_cell, save_cell
from tests.datasets.test_io import csv_bytes, export_body

LOOKUP = {"name": "lookup_order", "args": {"order_id": "A-1042"}, "result": {"status": "shipped"}}
NEVER_REFUND = {"name": "issue_refund", "forbidden": True}

# ---------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([{"name": "look up"}], 'entry 1: "look up" is not a tool name'),
        ([{"args": {"a": 1}}], "entry 1: the tool's name is missing"),
        ([LOOKUP, {"name": "x", "arguments": {}}], 'entry 2: unknown key "arguments"'),
        (
            [{"name": "lookup_order", "args": {"order_id": {"regex": "A-("}}}],
            'entry 1 (lookup_order), argument order_id: regex "A-(" does not compile',
        ),
        (
            [{"name": "issue_refund", "forbidden": True, "args": {"amount": 5}}],
            "entry 1 (issue_refund): a forbidden tool takes no args or result",
        ),
        (
            [{"name": "issue_refund", "forbidden": True, "result": "ok"}],
            "entry 1 (issue_refund): a forbidden tool takes no args or result",
        ),
        ({"name": "lookup_order"}, "is not a list of tool calls"),
        ("lookup_order", '"lookup_order" is not a list of tool calls'),
        ([["lookup_order"]], "entry 1: "),
        ([{"name": "x", "args": {"a": {"type": "int"}}}], "argument a: type must be one of"),
        ([{"name": "x", "args": {"a": {"one_of": []}}}], "argument a: one_of must be a non-empty"),
        ([{"name": "x", "args": {"a": {"b": 1}}}], 'argument a: "{"b": 1}" is an object'),
        ([{"name": "x"}] * (tools.MAX_ENTRIES + 1), "an item may expect at most 50"),
    ],
)
def test_clean_refuses_bad_entries_naming_the_entry(value, message):
    with pytest.raises(ValueError) as caught:
        tools.clean(value)
    assert message in str(caught.value)
    with pytest.raises(ItemError) as as_field:
        clean_field("expected_tools", value)
    assert as_field.value.field == "expected_tools"
    assert message in as_field.value.message


def test_clean_keeps_the_stored_form():
    raw = [
        {"result": [1], "args": {}, "name": "a"},
        {"name": "b", "forbidden": False, "args": {"q": {"any": True}}},
        {"name": "c", "forbidden": True},
    ]
    assert tools.clean(raw) == [
        {"name": "a", "result": [1]},
        {"name": "b", "args": {"q": {"any": True}}},
        {"name": "c", "forbidden": True},
    ]
    assert tools.clean(None) == tools.clean("") == clean_field("expected_tools", None) == []


def test_non_finite_numbers_are_an_item_error_not_a_crash():
    with pytest.raises(ItemError) as caught:
        clean_field("expected_tools", [{"name": "x", "result": float("nan")}])
    assert caught.value.field == "expected_tools"


# ---------------------------------------------------------------- the line form

ROUND_TRIPS = [
    [],
    [LOOKUP],
    [NEVER_REFUND],
    [LOOKUP, NEVER_REFUND, {"name": "ping"}],
    [{"name": "search", "args": {"q": "café 東京 😀", "lang": {"one_of": ["fr", "ja"]}}}],
    [{"name": "weather", "result": "sunny -> warm\nthen rain"}],
    [{"name": "n", "args": {"id": {"regex": "^A-\\d+$"}}, "result": None}],
    [{"name": "n", "result": [1, 2.5, True, {"nested": {"deep": "→"}}]}],
    [{"name": "create-ticket", "args": {"body": {"equals": {"a": "b"}}, "n": 3}, "result": ""}],
]


@pytest.mark.parametrize("entries", ROUND_TRIPS)
def test_the_line_form_reads_back_the_same_entries(entries):
    text = tools.to_text(entries)
    assert tools.from_text(text) == entries
    assert cells.from_text("expected_tools", cells.to_text("expected_tools", entries)) == entries


def test_the_line_form_is_one_call_per_line():
    text = tools.to_text([LOOKUP, NEVER_REFUND])
    assert text == 'lookup_order {"order_id": "A-1042"} -> {"status": "shipped"}\n!issue_refund'
    typed = (
        '\r\n  lookup_order{"order_id":"A-1042"}->{"status":"shipped"}  \r\n\r\n ! issue_refund\n'
    )
    assert tools.from_text(typed) == [LOOKUP, NEVER_REFUND]
    assert tools.from_text('[{"name": "ping"}]') == [{"name": "ping"}]
    assert tools.from_text("ping -> 3") == [{"name": "ping", "result": 3}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lookup_order order_id=1", 'line 1: "lookup_order order_id=1" is not `name {args}'),
        ('ping\nlookup {"a": }', "line 2: the args is not valid JSON"),
        ("\n\nping\nlook up", 'line 4: "look up" is not `name {args} -> result`'),
        ("ping -> {oops}", "line 1: the result is not valid JSON"),
        ('[{"name": "ping"},]', "text starting with [ is a JSON array of tool calls"),
        ('x {"a": {"regex": "("}}', 'line 1 (x), argument a: regex "(" does not compile'),
    ],
)
def test_line_errors_name_the_line(text, message):
    with pytest.raises(ValueError) as caught:
        tools.from_text(text)
    assert message in str(caught.value)
    with pytest.raises(ItemError) as as_cell:
        cells.from_text("expected_tools", text)
    assert as_cell.value.field == "expected_tools"


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    [
        ("A-1042", ["A-1042", " a-1042 ", "a-1042"], ["A-1043", 1042, None]),
        (3, [3, 3.0], ["3", True]),
        (True, [True], [1, "true", False]),
        (None, [None], ["", 0]),
        ({"regex": "^A-\\d+$"}, ["A-1", "A-1042"], ["a-1", "B-1", 7, None]),
        ({"contains": "Refund"}, ["full refund please", "REFUNDS"], ["return", 5]),
        ({"one_of": ["eu", 2]}, ["EU", " eu", 2], ["us", "2", None]),
        ({"type": "integer"}, [1, -5], [1.5, True, "1"]),
        ({"type": "number"}, [1, 1.5], [True, "1"]),
        ({"type": "string"}, ["", "x"], [1, None]),
        ({"type": "boolean"}, [False], [0]),
        ({"type": "array"}, [[]], [{}]),
        ({"type": "object"}, [{}], [[]]),
        ({"type": "null"}, [None], [""]),
        ({"any": True}, [None, 0, "", "x"], []),
        ({"equals": {"a": 1}}, [{"a": 1}], [{"a": 2}, {"a": 1, "b": 2}, "a"]),
    ],
)
def test_satisfies_each_operator(constraint, good, bad):
    assert tools.constraint_problem(constraint) is None
    for value in good:
        assert tools.satisfies(constraint, value), value
    for value in bad:
        assert not tools.satisfies(constraint, value), value
    assert not tools.satisfies(constraint, good[0] if good else None, present=False)


def test_unmet_names_the_arguments_a_call_misses():
    entry = {
        "name": "lookup_order",
        "args": {
            "order_id": {"regex": "^A-"},
            "region": {"one_of": ["eu", "us"]},
            "x": {"any": True},
        },
    }
    assert tools.unmet(entry, {"order_id": "A-1", "region": "EU", "x": None, "extra": 1}) == []
    assert tools.unmet(entry, {"order_id": "B-1", "region": "eu"}) == ["order_id", "x"]
    assert tools.unmet(entry, "not an object") == ["order_id", "region", "x"]
    assert tools.unmet({"name": "ping"}, {"anything": 1}) == []


# ---------------------------------------------------------------- hashes and old snapshots

PINNED = {
    "id": "refund-1",
    "question": "How long do I have to return an item?",
    "expected_contains": ["30 days"],
    "expected_not_contains": ["lifetime"],
    "expected_sources": ["policies/returns.md"],
    "tags": ["refunds"],
    "variables": {"tier": "gold"},
    "reference_answer": "Within 30 days.",
    "note": "n",
    "unanswerable": False,
}
# Computed before expected_tools existed: an item without tool calls must keep it.
PINNED_HASH = "39001826e77856bfc6b91bb8a61a03c13261f5dc4405acf643581015a81c6ced"
MINIMAL_HASH = "a37c6c834c567f367c87a38381e2bafbeef15f4698c8d3f3131a31a578bb5d6f"


def _content(raw: dict) -> dict:
    content, errors = clean_item(raw)
    assert errors == []
    content.pop("id")
    return content


def test_an_item_without_tool_calls_keeps_the_hash_it_had_before():
    content = _content(PINNED)
    assert content["expected_tools"] == []
    assert item_hash(content) == PINNED_HASH
    assert item_hash({k: v for k, v in content.items() if k != "expected_tools"}) == PINNED_HASH
    assert item_hash(_content({"question": "Q?"})) == MINIMAL_HASH
    with_tools = _content({**PINNED, "expected_tools": [LOOKUP]})
    assert item_hash(with_tools) != PINNED_HASH
    assert item_hash(with_tools) != item_hash(
        _content({**PINNED, "expected_tools": [{"name": "x"}]})
    )


def test_stored_items_and_published_snapshots_keep_their_hash(dataset, curator):
    seed(dataset, [PINNED], actor=curator)
    assert item(dataset, "refund-1").content_hash == PINNED_HASH
    version = services.publish(actor=curator, dataset=dataset, message="v1")
    (snapshot,) = ItemSnapshot.objects.filter(content_hash=PINNED_HASH)
    assert version.items.get().snapshot_id == snapshot.pk


@pytest.fixture
def old_version(dataset, curator):
    """A set published from snapshots written before expected_tools existed (no such key)."""
    seed(dataset, [PINNED, {"id": "q-2", "question": "Q?"}], actor=curator)
    for item_row in dataset.draft_items.all():
        content = {k: getattr(item_row, k) for k in CONTENT_FIELDS if k != "expected_tools"}
        assert item_hash(content) == item_row.content_hash
        ItemSnapshot.objects.create(content_hash=item_row.content_hash, content=content)
    version = services.publish(actor=curator, dataset=dataset, message="old")
    assert all("expected_tools" not in p.snapshot.content for p in version.items.all())
    return version


def test_old_snapshots_read_with_no_tool_calls(curator_client, viewer_client, dataset, old_version):
    items = list(selectors.version_items(old_version))
    assert [i["expected_tools"] for i in items] == [[], []]
    page = viewer_client.get(url("version", dataset, number=1))
    assert page.status_code == 200
    assert '<th class="col-expected_tools">Tool calls</th>' in page.content.decode()
    body = export_body(curator_client, dataset, "format=jsonl&version=1")
    assert [json.loads(line)["expected_tools"] for line in body.splitlines()] == [[], []]


def test_an_unchanged_draft_over_old_snapshots_is_not_a_new_version(dataset, curator, old_version):
    assert services.publish(actor=curator, dataset=dataset, message="again") is None
    assert all(i.content_hash == i.published_hash for i in dataset.draft_items.all())
    assert dataset.draft_items.get(item_id="refund-1").content_hash == PINNED_HASH


def test_diff_with_an_old_snapshot_shows_only_real_changes(
    curator_client, dataset, curator, old_version
):
    services.update_item_field(
        actor=curator, item=item(dataset, "q-2"), field_name="note", value="new", base=""
    )
    _, changes = selectors.detailed_diff(dataset, old_version, None)
    assert [(c.item_id, [f.path for f in c.fields]) for c in changes] == [("q-2", ["note"])]
    services.update_item_field(
        actor=curator, item=item(dataset, "q-2"), field_name="expected_tools",
        value=[NEVER_REFUND], base=[],
    )  # fmt: skip
    _, changes = selectors.detailed_diff(dataset, old_version, None)
    assert sorted(f.path for f in changes[0].fields) == ["expected_tools", "note"]


# ---------------------------------------------------------------- import and export

TOOLED = [
    {
        "id": "t-1",
        "question": "Where is my order A-1042?",
        "expected_tools": [
            {
                "name": "lookup_order",
                "args": {"order_id": {"regex": "^A-\\d+$"}},
                "result": LOOKUP["result"],
            },
            NEVER_REFUND,
        ],
    },
    {
        "id": "t-2",
        "question": "Café in 東京?",
        "expected_tools": [{"name": "search", "args": {"q": "東京"}}],
    },
    {"id": "t-3", "question": "No tools?"},
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_carries_the_tool_calls(curator_client, curator, dataset, fresh, fmt):
    seed(dataset, TOOLED, actor=curator)
    body = export_body(curator_client, dataset, f"format={fmt}")
    target = fresh()
    summary = services.import_file(actor=curator, dataset=target, data=body, filename=f"x.{fmt}")
    assert summary["added"] == 3
    assert rows(target) == rows(dataset)
    assert [r["expected_tools"] for r in rows(target)] == [
        TOOLED[0]["expected_tools"], TOOLED[1]["expected_tools"], []
    ]  # fmt: skip
    hashes = dict(dataset.draft_items.values_list("item_id", "content_hash"))
    assert dict(target.draft_items.values_list("item_id", "content_hash")) == hashes
    again = services.import_file(actor=curator, dataset=target, data=body, filename=f"y.{fmt}")
    assert again == {"added": 0, "changed": 0, "unchanged": 3, "removed": 0}


def test_csv_export_writes_tool_calls_as_json_and_nothing_when_none(
    curator_client, curator, dataset
):
    seed(dataset, TOOLED, actor=curator)
    text = export_body(curator_client, dataset, "format=csv").decode()
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert json.loads(records[0]["expected_tools"]) == TOOLED[0]["expected_tools"]
    assert records[2]["expected_tools"] == ""


def test_csv_cells_take_lines_or_a_json_array(curator, dataset):
    data = csv_bytes(
        ["id", "question", "expected_tools"],
        [
            "a",
            "Lines?",
            'lookup_order {"order_id": "A-1042"} -> {"status": "shipped"}\n!issue_refund',
        ],
        ["b", "JSON?", json.dumps([NEVER_REFUND])],
        ["c", "Empty?", ""],
    )
    services.import_file(actor=curator, dataset=dataset, data=data, filename="x.csv")
    got = {r["id"]: r["expected_tools"] for r in rows(dataset)}
    assert got == {"a": [LOOKUP, NEVER_REFUND], "b": [NEVER_REFUND], "c": []}


def test_an_old_csv_without_the_column_imports_and_keeps_stored_tool_calls(curator, dataset):
    seed(dataset, TOOLED, actor=curator)
    data = csv_bytes(["id", "question", "note"], ["t-1", "Where is order A-1042?", "renamed"])
    summary = services.import_file(actor=curator, dataset=dataset, data=data, filename="old.csv")
    assert summary["changed"] == 1
    assert item(dataset, "t-1").expected_tools == TOOLED[0]["expected_tools"]
    assert item(dataset, "t-1").question == "Where is order A-1042?"


def test_a_bad_csv_cell_names_the_row_and_field_and_stores_nothing(curator_client, curator, filled):
    data = csv_bytes(
        ["id", "question", "expected_tools"],
        ["x1", "Fine?", "!issue_refund"],
        ["x2", "Bad?", 'ping\nlookup_order {"order_id": {"regex": "A-("}}'],
        ["x3", "Also bad?", '[{"name": "ping", "forbidden": true, "args": {"a": 1}}]'],
    )
    before = state(filled)
    with pytest.raises(services.ImportRejected) as caught:
        services.import_file(actor=curator, dataset=filled, data=data, filename="x.csv")
    problems = [(p.line, p.field) for p in caught.value.problems]
    # Rows are named by the file line they start on: x2's cell holds a line break.
    assert problems == [(3, "expected_tools"), (5, "expected_tools")]
    assert (
        'cell line 2 (lookup_order), argument order_id: regex "A-(" does not compile'
        in caught.value.problems[0].message
    )
    assert "entry 1 (ping): a forbidden tool takes no args" in caught.value.problems[1].message
    assert state(filled) == before

    response = curator_client.post(
        url("import", filled), {"file": _upload(data), "mode": "merge", "format": ""}, follow=True
    )
    body = html.unescape(response.content.decode())
    assert "Nothing was imported" in body
    assert "<tr><td>3</td><td><code>expected_tools</code></td>" in body
    assert state(filled) == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "Q?", "expected_tools": "lookup_order"}', "is not a list of tool calls"),
        ('{"question": "Q?", "expected_tools": [{"name": "x", "result": NaN}]}', "NaN"),
        ('{"question": "Q?", "expected_tools": [{"name": "x", "when": 1}]}', 'unknown key "when"'),
    ],
)
def test_bad_jsonl_tool_calls_name_the_line_and_field(curator, filled, line, message):
    before = state(filled)
    data = b'{"question": "fine"}\n' + line.encode() + b"\n"
    with pytest.raises(services.ImportRejected) as caught:
        services.import_file(actor=curator, dataset=filled, data=data, filename="x.jsonl")
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (2, "expected_tools")
    assert message in problem.message
    assert state(filled) == before


def test_the_parser_reports_without_touching_the_database():
    parsed = dataset_io.parse(
        jsonl([{"question": "Q?", "expected_tools": [{"name": "a b"}]}]), "jsonl"
    )
    assert [(p.line, p.field) for p in parsed.problems] == [(1, "expected_tools")]


# ---------------------------------------------------------------- the editor


@pytest.fixture
def tooled(dataset, curator):
    seed(dataset, TOOLED, actor=curator)
    return dataset


def test_the_column_shows_calls_as_chips(curator_client, tooled):
    body = html.unescape(curator_client.get(url("editor", tooled)).content.decode())
    assert '<th class="col-expected_tools">Tool calls</th>' in body
    headers = body.split("<thead>")[1].split("</thead>")[0]
    assert headers.index("col-expected_sources") < headers.index("col-expected_tools")
    assert '<code>lookup_order(<wbr>order_id={"regex": "^A-\\\\d+$"})</code>' in body
    assert '<span class="res">→ {"status": "shipped"}</span>' in body
    assert '<li class="never" title="!issue_refund"><code>never issue_refund</code></li>' in body
    assert '<code>search(<wbr>q="東京")</code>' in body


def test_a_cell_opens_as_lines_and_saving_it_unchanged_changes_nothing(curator_client, tooled):
    for item_id in ["t-1", "t-2", "t-3"]:
        response = curator_client.get(
            url("cell", tooled, "edit=1", item_id=item_id, field="expected_tools"), headers=HTMX
        )
        body = response.content.decode()
        assert 'spellcheck="false"' in body
        assert "One call per line" in html.unescape(body)
        text = html.unescape(body.split("</textarea>")[0].rsplit(">", 1)[1])
        assert text == tools.to_text(item(tooled, item_id).expected_tools)
        before = state(tooled)
        saved = save_cell(
            curator_client, tooled, item_id, "expected_tools", text, hidden_base(response)
        )
        assert saved.status_code == 200 and 'class="cell-form"' not in saved.content.decode()
        assert state(tooled) == before, item_id


def test_a_cell_saves_lines_and_shows_chips(curator_client, tooled):
    base = open_cell(curator_client, tooled, "t-3", "expected_tools")
    typed = 'lookup_order {"order_id": "A-1042"} -> {"status": "shipped"}\r\n\r\n!issue_refund'
    saved = save_cell(curator_client, tooled, "t-3", "expected_tools", typed, base)
    body = html.unescape(saved.content.decode())
    assert saved["HX-Trigger"] == "dataset-changed"
    assert '<code>lookup_order(<wbr>order_id="A-1042")</code>' in body
    assert "never issue_refund" in body
    stored = item(tooled, "t-3")
    assert stored.expected_tools == [LOOKUP, NEVER_REFUND]
    assert stored.content_hash == item_hash(
        {**_content({"question": "No tools?"}), "expected_tools": [LOOKUP, NEVER_REFUND]}
    )
    reopened = curator_client.get(
        url("cell", tooled, "edit=1", item_id="t-3", field="expected_tools"), headers=HTMX
    )
    assert tools.to_text([LOOKUP, NEVER_REFUND]) in html.unescape(reopened.content.decode())


def test_a_bad_cell_names_the_field_and_line_and_keeps_what_was_typed(curator_client, tooled):
    base = open_cell(curator_client, tooled, "t-2", "expected_tools")
    before = state(tooled)
    typed = 'search {"q": "東京"}\nlookup_order order_id=7'
    response = save_cell(curator_client, tooled, "t-2", "expected_tools", typed, base)
    body = html.unescape(response.content.decode())
    assert 'class="cell-error"' in body
    assert (
        'expected_tools: line 2: "lookup_order order_id=7" is not `name {args} -> result`' in body
    )
    assert "e.g." in body
    assert typed in body
    assert state(tooled) == before


def test_a_viewer_sees_the_chips_but_cannot_edit(viewer_client, tooled, curator):
    services.publish(actor=curator, dataset=tooled, message="v1")
    body = html.unescape(viewer_client.get(url("version", tooled, number=1)).content.decode())
    assert "never issue_refund" in body and '<code>search(<wbr>q="東京")</code>' in body
    response = viewer_client.post(
        url("cell", tooled, item_id="t-3", field="expected_tools"), {"value": "!x", "base": "[]"}
    )
    assert response.status_code == 403
    assert item(tooled, "t-3").expected_tools == []


def test_a_version_keeps_its_tool_calls_when_the_draft_moves_on(curator, tooled):
    version = services.publish(actor=curator, dataset=tooled, message="v1")
    services.update_item_field(
        actor=curator, item=item(tooled, "t-1"), field_name="expected_tools", value=[],
        base=TOOLED[0]["expected_tools"],
    )  # fmt: skip
    assert item(tooled, "t-1").expected_tools == []
    published = {i["id"]: i["expected_tools"] for i in selectors.version_items(version)}
    assert published["t-1"] == TOOLED[0]["expected_tools"]
    assert DatasetVersion.objects.filter(head=tooled).count() == 1
    assert DatasetItem.objects.get(dataset=tooled, item_id="t-1").changed_since_published


def test_chips_write_calls_as_in_code_and_shorten_results():
    long_result = {"text": "x" * 100}
    chips = cells.tool_chips(
        [
            {**LOOKUP, "args": {"order_id": "A-1042", "n": 2, "q": {"contains": "é"}}},
            NEVER_REFUND,
            {"name": "ping"},
            {"name": "big", "result": long_result},
        ]
    )
    assert [c.label for c in chips] == [
        'lookup_order(order_id="A-1042", n=2, q={"contains": "é"})',
        "never issue_refund",
        "ping()",
        "big()",
    ]
    assert [c.forbidden for c in chips] == [False, True, False, False]
    assert chips[0].result == '{"status": "shipped"}'
    assert chips[3].result.endswith("…") and len(chips[3].result) == 24
    assert chips[3].line == tools.entry_to_line({"name": "big", "result": long_result})
