"""CSV and JSONL: lossless round trips, all-or-nothing imports whose report names the line and
field of every problem (through the service and through the upload page), and the
preview → apply flow."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from console.audit.services import SYSTEM
from console.datasets import io as dataset_io
from console.datasets import selectors, services
from console.datasets.items import FIELDS, MAX_ITEM_BYTES
from console.datasets.models import DatasetItem, DatasetVersion, ImportJob
from tests.datasets.helpers import (
    actions_since,
    events_since,
    import_jobs,
    jsonl,
    last_seq,
    rows,
    seed,
    set_fields,
    state,
    url,
)

RICH = [
    {
        "id": "r-1",
        "question": 'He said "refund, please" — café, naïve, 東京 😀',
        "variables": {"tier": "gold", "nested": {"list": [1, 2.5, None, True]}, "empty": ""},
        "expected_contains": ["30 days", 'a "quoted", comma', "line\u00a0nbsp"],
        "expected_not_contains": ["60 days"],
        "expected_sources": ["docs/refund-policy.md#window"],
        "expected_tools": [
            {
                "name": "lookup_order",
                "args": {"order_id": "A-1042", "city": "東京 café"},
                "result": {"status": "shipped", "eta": '2 days; "soon"'},
            },
            {"name": "issue_refund", "forbidden": True},
        ],
        "reference_answer": "  You have 30 days.\nBring the receipt.\r\nThanks!  ",
        "unanswerable": False,
        "tags": ["multi-part", "refunds"],
        "note": "multi\nline, with, commas",
    },
    {
        "id": "r.2:b_c-d",
        "question": "What will prices be next Black Friday?",
        "variables": {},
        "expected_contains": [],
        "expected_not_contains": [],
        "expected_sources": [],
        "expected_tools": [],
        "reference_answer": "",
        "unanswerable": True,
        "tags": ["unanswerable"],
        "note": "",
    },
    {
        "id": "007",
        "question": "=SUM(A1:A2) looks like a formula; true; 1",
        "variables": {"n": 0, "flag": False},
        "expected_contains": ["[not json]"],
        "expected_not_contains": ["{}"],
        "expected_sources": ["a", "b"],
        "expected_tools": [{"name": "search_docs", "args": {"query": {"regex": "^=refund"}}}],
        "reference_answer": "true",
        "unanswerable": False,
        "tags": [],
        "note": "0",
    },
]


@pytest.fixture
def rich(dataset, curator):
    seed(dataset, RICH, actor=curator)
    return dataset


def export_body(client, dataset, query: str) -> bytes:
    response = client.get(url("export", dataset, query))
    assert response.status_code == 200
    return b"".join(response.streaming_content)


# ---------------------------------------------------------------- round trips


def test_seeded_items_read_back_exactly(rich):
    assert rows(rich) == RICH


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_into_a_fresh_dataset_is_identical(
    curator_client, curator, rich, fresh, fmt
):
    body = export_body(curator_client, rich, f"format={fmt}")
    target = fresh()
    summary = services.import_file(
        actor=curator, dataset=target, data=body, filename=f"golden-draft.{fmt}"
    )
    assert summary == {"added": 3, "changed": 0, "unchanged": 0, "removed": 0}
    assert rows(target) == rows(rich) == RICH
    hashes = dict(rich.draft_items.values_list("item_id", "content_hash"))
    assert dict(target.draft_items.values_list("item_id", "content_hash")) == hashes
    # Importing the same file again changes nothing.
    again = services.import_file(actor=curator, dataset=target, data=body, filename=f"x.{fmt}")
    assert again == {"added": 0, "changed": 0, "unchanged": 3, "removed": 0}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip_of_a_published_version(curator_client, curator, rich, fresh, fmt):
    services.publish(actor=curator, dataset=rich, message="v1")
    v1_items = list(selectors.version_items(DatasetVersion.objects.get(head=rich, number=1)))
    # The draft moves on; the version export must not.
    services.delete_items(actor=curator, dataset=rich, item_ids=["007"])
    set_fields(rich, "r-1", tags=["x"])
    body = export_body(curator_client, rich, f"format={fmt}&version=1")
    target = fresh()
    services.import_file(actor=curator, dataset=target, data=body, filename=f"v1.{fmt}")
    assert rows(target) == v1_items == RICH


def test_csv_export_has_the_documented_header_and_cells(curator_client, rich):
    body = export_body(curator_client, rich, "format=csv").decode()
    parsed = list(csv.reader(io.StringIO(body, newline="")))
    assert parsed[0] == FIELDS
    second = dict(zip(FIELDS, parsed[2], strict=True))
    assert second["unanswerable"] == "true"
    assert second["variables"] == second["expected_contains"] == second["expected_tools"] == ""
    first = dict(zip(FIELDS, parsed[1], strict=True))
    assert json.loads(first["expected_tools"]) == RICH[0]["expected_tools"]
    assert json.loads(dict(zip(FIELDS, parsed[1], strict=True))["tags"]) == [
        "multi-part",
        "refunds",
    ]


def test_export_filename_and_bad_format(curator_client, rich, curator):
    response = curator_client.get(url("export", rich, "format=jsonl"))
    assert response["Content-Disposition"] == 'attachment; filename="golden-draft.jsonl"'
    assert curator_client.get(url("export", rich, "format=xml")).status_code == 400
    assert curator_client.get(url("export", rich, "format=csv&version=4")).status_code == 404


def test_jsonl_round_trip_with_unicode_line_separators(curator_client, curator, dataset, fresh):
    item = {"id": "ls-1", "question": "first\u2028second\u2029third\u0085end"}
    services.add_item(actor=curator, dataset=dataset, values=item)
    body = export_body(curator_client, dataset, "format=jsonl")
    target = fresh()
    services.import_file(actor=curator, dataset=target, data=body, filename="x.jsonl")
    assert rows(target)[0]["question"] == item["question"]


def test_csv_round_trip_with_unicode_line_separators(curator_client, curator, dataset, fresh):
    item = {"id": "ls-1", "question": "first\u2028second\u2029third\u0085end"}
    services.add_item(actor=curator, dataset=dataset, values=item)
    body = export_body(curator_client, dataset, "format=csv")
    target = fresh()
    services.import_file(actor=curator, dataset=target, data=body, filename="x.csv")
    assert rows(target)[0]["question"] == item["question"]


def test_csv_with_a_byte_order_mark_and_only_some_columns(curator, dataset):
    data = '\ufeffquestion,tags,unanswerable\nWhere is my parcel?,"[""Shipping""]",YES\n'
    services.import_file(actor=curator, dataset=dataset, data=data.encode(), filename="x.csv")
    (item,) = rows(dataset)
    assert re.fullmatch(r"[0-9a-f]{12}", item["id"])
    assert (item["question"], item["tags"], item["unanswerable"]) == (
        "Where is my parcel?",
        ["shipping"],
        True,
    )


# ---------------------------------------------------------------- malformed input


def csv_bytes(header: list[str], *records: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(records)
    return buffer.getvalue().encode()


BIG = "x" * (MAX_ITEM_BYTES + 1)

MALFORMED = [
    # (case id, filename, data, [(line, field)])
    (
        "csv-bad-encoding-line-3",
        "bad.csv",
        b"id,question\nq1,Hello?\nq2,caf\xe9?\nq3,Fine?\n",
        [(3, "(file)")],
    ),
    (
        "jsonl-bad-encoding-line-3",
        "bad.jsonl",
        b'{"question": "a"}\n{"question": "b"}\n{"question": "caf\xe9"}\n',
        [(3, "(file)")],
    ),
    (
        "csv-missing-question",
        "q.csv",
        csv_bytes(["id", "question", "tags"], ["q1", "Fine?", ""], ["q2", "  ", '["a"]']),
        [(3, "question")],
    ),
    (
        "csv-missing-question-column",
        "q.csv",
        csv_bytes(["id", "tags"], ["q1", ""]),
        [(1, "question")],
    ),
    (
        "jsonl-missing-question",
        "q.jsonl",
        b'{"id": "j1", "question": "Fine?"}\n{"id": "j2", "tags": ["a"]}\n',
        [(2, "question")],
    ),
    (
        "csv-malformed-json-cell",
        "j.csv",
        csv_bytes(
            ["id", "question", "tags", "variables"],
            ["q1", "Fine?", '["a"]', '{"tier": "gold"}'],
            ["q2", "Broken?", '["a",', "{}"],
        ),
        [(3, "tags")],
    ),
    (
        "csv-malformed-json-variables",
        "j.csv",
        csv_bytes(["question", "variables"], ["Fine?", "{'tier': 'gold'}"]),
        [(2, "variables")],
    ),
    (
        "csv-wrong-json-type",
        "j.csv",
        csv_bytes(
            ["question", "expected_contains", "unanswerable"], ["Fine?", '["30 days", 5]', "maybe"]
        ),
        [(2, "expected_contains"), (2, "unanswerable")],
    ),
    (
        "csv-unknown-column",
        "u.csv",
        csv_bytes(["id", "question", "colour"], ["q1", "Fine?", "red"]),
        [(1, "colour")],
    ),
    (
        "jsonl-unknown-field",
        "u.jsonl",
        b'{"question": "Fine?"}\n{"question": "Also?", "colour": "red"}\n',
        [(2, "colour")],
    ),
    (
        "csv-duplicate-id",
        "d.csv",
        csv_bytes(["id", "question"], ["q1", "One?"], ["q2", "Two?"], ["q1", "Three?"]),
        [(4, "id")],
    ),
    (
        "jsonl-duplicate-id",
        "d.jsonl",
        b'{"id": "q1", "question": "One?"}\n\n{"id": "q1", "question": "Again?"}\n',
        [(3, "id")],
    ),
    (
        "csv-row-over-32k",
        "big.csv",
        csv_bytes(["id", "question"], ["q1", "Fine?"], ["q2", BIG]),
        [(3, "(row)")],
    ),
    (
        "jsonl-row-over-32k",
        "big.jsonl",
        jsonl([{"question": "Fine?"}, {"question": BIG}]),
        [(2, "(row)")],
    ),
    (
        "csv-wrong-cell-count",
        "n.csv",
        b"id,question\nq1,Fine?\nq2,Two?,extra\nq3\n",
        [(3, "(row)"), (4, "(row)")],
    ),
    (
        "csv-multiline-cell-then-bad-row",
        "n.csv",
        b'id,question\nq1,"Line one\nline two"\nq2,Two?,extra\n',
        [(4, "(row)")],
    ),
    (
        "jsonl-not-an-object",
        "o.jsonl",
        b'{"question": "Fine?"}\n["question", "Nope"]\n"just text"\n',
        [(2, "(line)"), (3, "(line)")],
    ),
    (
        "jsonl-malformed-line",
        "m.jsonl",
        b'{"question": "Fine?"}\n{"question": "Oops"\n',
        [(2, "(line)")],
    ),
    ("csv-bad-id", "i.csv", csv_bytes(["id", "question"], ["has space", "Fine?"]), [(2, "id")]),
    (
        "csv-bad-tag",
        "t.csv",
        csv_bytes(["question", "tags"], ["Fine?", '["Not A Tag"]']),
        [(2, "tags")],
    ),
    ("empty-file", "e.csv", b"", [(1, "(file)")]),
    ("header-only", "h.csv", b"id,question\n", [(1, "(file)")]),
]


def _malformed():
    for case_id, filename, data, expected in MALFORMED:
        yield pytest.param(filename, data, expected, id=case_id)


@pytest.mark.parametrize(("filename", "data", "expected"), list(_malformed()))
def test_malformed_file_is_rejected_by_the_service_and_changes_nothing(
    filled, curator, filename, data, expected
):
    before = state(filled)
    with pytest.raises(services.ImportRejected) as caught:
        services.import_file(actor=curator, dataset=filled, data=data, filename=filename)
    assert [(p.line, p.field) for p in caught.value.problems] == expected
    assert all(p.message for p in caught.value.problems)
    assert state(filled) == before


def upload(client, dataset, filename, data, mode="merge", fmt=""):
    file = SimpleUploadedFile(filename, data, content_type="application/octet-stream")
    return client.post(url("import", dataset), {"file": file, "mode": mode, "format": fmt})


@pytest.mark.parametrize(("filename", "data", "expected"), list(_malformed()))
def test_malformed_upload_shows_the_report_and_changes_nothing(
    curator_client, filled, filename, data, expected
):
    before = state(filled)
    response = upload(curator_client, filled, filename, data)
    if not data:  # an empty upload is refused by the form itself
        assert response.status_code == 200
        assert response.context["form"].errors["file"]
        assert state(filled) == before
        return
    (job,) = import_jobs(filled)
    assert response.status_code == 302
    assert response["Location"] == url("import_job", filled, job=job.pk)
    assert job.status == ImportJob.Status.FAILED
    assert [(p["line"], p["field"]) for p in job.report["problems"]] == expected
    assert bytes(job.data) == b""  # the rejected file is not kept

    page = curator_client.get(response["Location"])
    assert page.status_code == 200
    body = page.content.decode()
    assert "Nothing was imported" in body
    assert "The golden set is exactly as it was." in body
    for line, field in expected:
        assert f"<tr><td>{line}</td><td><code>{field}</code></td>" in body
    assert state(filled) == before
    # Applying a failed job is refused too.
    curator_client.post(response["Location"])
    assert state(filled) == before


@pytest.mark.parametrize(
    ("filename", "data", "line", "field"),
    [
        (
            "nan.jsonl",
            b'{"question": "ok"}\n{"question": "q", "variables": {"x": NaN}}\n',
            2,
            "variables",
        ),
        ("inf.csv", csv_bytes(["question", "variables"], ["q", '{"x": Infinity}']), 2, "variables"),
    ],
)
def test_non_finite_numbers_are_reported_not_a_crash(filled, curator, filename, data, line, field):
    before = state(filled)
    with pytest.raises(services.ImportRejected) as caught:
        services.import_file(actor=curator, dataset=filled, data=data, filename=filename)
    assert [(p.line, p.field) for p in caught.value.problems] == [(line, field)]
    assert state(filled) == before


def test_deeply_nested_json_is_reported_not_a_crash(filled, curator):
    nested = "[" * 5000 + "]" * 5000
    data = csv_bytes(["question", "expected_contains"], ["q", nested])
    before = state(filled)
    with pytest.raises(services.ImportRejected) as caught:
        services.import_file(actor=curator, dataset=filled, data=data, filename="deep.csv")
    assert [(p.line, p.field) for p in caught.value.problems] == [(2, "expected_contains")]
    assert state(filled) == before


def test_every_problem_is_reported_not_just_the_first(filled, curator):
    records = [[f"q{n}", "" if n % 2 else f"Question {n}?"] for n in range(1, 11)]
    with pytest.raises(services.ImportRejected) as caught:
        services.import_file(
            actor=curator, dataset=filled, data=csv_bytes(["id", "question"], *records),
            filename="x.csv",
        )  # fmt: skip
    assert [p.line for p in caught.value.problems] == [2, 4, 6, 8, 10]


def test_the_report_is_capped(filled, curator):
    records = [["", "a note"] for _ in range(dataset_io.MAX_PROBLEMS + 20)]
    data = csv_bytes(["question", "note"], *records)
    with pytest.raises(services.ImportRejected) as caught:
        services.import_file(actor=curator, dataset=filled, data=data, filename="x.csv")
    assert len(caught.value.problems) == dataset_io.MAX_PROBLEMS
    assert caught.value.truncated


# ---------------------------------------------------------------- preview → apply


def test_upload_previews_then_applies(curator_client, filled, curator):
    data = csv_bytes(
        ["id", "question", "expected_contains", "tags"],
        [
            "refund-1",
            "How long do I have to return an item?",
            '["30 days", "receipt"]',
            '["refunds"]',
        ],
        ["acct-1", "How do I reset my password?", '["Forgot password"]', '["account", "shipping"]'],
        ["", "Do you ship to Mars?", "", ""],
    )
    before = state(filled)
    seq = last_seq()

    response = upload(curator_client, filled, "edits.csv", data)
    (job,) = import_jobs(filled)
    assert job.status == ImportJob.Status.VALIDATED
    assert job.report["plan"] == {"added": 1, "changed": 1, "unchanged": 1, "removed": 0}
    assert job.report["sample_added"] == ["Do you ship to Mars?"]
    assert job.report["sample_changed"] == ["refund-1"]
    page = curator_client.get(response["Location"])
    body = page.content.decode()
    assert "Preview: 3 valid rows" in body
    assert '<div class="plan-cell added"><strong>1</strong> to add</div>' in body
    assert '<div class="plan-cell changed"><strong>1</strong> to change</div>' in body
    assert state(filled) == before  # a preview changes nothing
    assert actions_since(seq) == []

    applied = curator_client.post(response["Location"])
    assert applied.status_code == 302
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE
    assert job.report["applied"] == {"added": 1, "changed": 1, "unchanged": 1, "removed": 0}
    assert [i["id"] for i in rows(filled)[:3]] == ["refund-1", "ship-1", "acct-1"]
    assert rows(filled)[0]["expected_contains"] == ["30 days", "receipt"]
    assert rows(filled)[3]["question"] == "Do you ship to Mars?"
    events = events_since(seq)
    assert [e.action for e in events] == ["dataset.import"]
    assert events[0].after == {
        "file": "edits.csv", "mode": "merge", "added": 1, "changed": 1, "unchanged": 1,
        "removed": 0,
    }  # fmt: skip
    assert events[0].actor_label == curator.username
    done = curator_client.get(response["Location"]).content.decode()
    assert "1 added, 1 changed, 0 removed, 1 unchanged." in done

    # Applying the same job again does nothing.
    after = state(filled)
    again = curator_client.post(response["Location"], follow=True)
    assert "not ready to apply" in again.content.decode()
    assert state(filled) == after


def test_replace_mode_removes_items_missing_from_the_file(curator_client, filled):
    data = jsonl([{"id": "acct-1", "question": "How do I reset my password?"}])
    response = upload(curator_client, filled, "only.jsonl", data, mode="replace")
    (job,) = import_jobs(filled)
    assert job.report["plan"] == {"added": 0, "changed": 1, "unchanged": 0, "removed": 2}
    assert job.report["sample_removed"] == ["refund-1", "ship-1"]
    assert (
        "Removed ids, e.g.:</strong> refund-1, ship-1"
        in curator_client.get(response["Location"]).content.decode()
    )
    curator_client.post(response["Location"])
    assert [i["id"] for i in rows(filled)] == ["acct-1"]
    assert rows(filled)[0]["expected_contains"] == []


def test_format_can_be_given_explicitly(curator_client, dataset):
    upload(curator_client, dataset, "export.txt", jsonl([{"question": "Q?"}]), fmt="jsonl")
    (job,) = import_jobs(dataset)
    assert (job.fmt, job.status) == ("jsonl", ImportJob.Status.VALIDATED)


def test_preview_is_recomputed_when_applied(curator_client, filled, curator):
    """The draft may change between preview and apply; the apply reflects the draft then."""
    data = jsonl([{"id": "ship-1", "question": "Shipping price?"}])
    response = upload(curator_client, filled, "x.jsonl", data)
    services.delete_items(actor=curator, dataset=filled, item_ids=["ship-1"])
    curator_client.post(response["Location"])
    (job,) = import_jobs(filled)
    assert job.report["applied"]["added"] == 1
    assert rows(filled)[-1] == {
        **dict.fromkeys(FIELDS), "id": "ship-1", "question": "Shipping price?", "variables": {},
        "expected_contains": [], "expected_not_contains": [], "expected_sources": [],
        "expected_tools": [], "reference_answer": "", "unanswerable": False, "tags": [],
        "note": "",
    }  # fmt: skip


def test_merge_with_some_columns_leaves_the_other_fields_alone(filled, curator):
    data = csv_bytes(["id", "question"], ["refund-1", "How long is the return window?"])
    services.import_file(actor=curator, dataset=filled, data=data, filename="typos.csv")
    item = DatasetItem.objects.get(dataset=filled, item_id="refund-1")
    assert item.question == "How long is the return window?"
    assert (item.expected_contains, item.tags, item.variables) == (
        ["30 days"],
        ["refunds"],
        {"tier": "gold"},
    )


def test_import_and_audit_are_one_transaction(filled, curator, monkeypatch):
    before = state(filled)

    def boom(*args, **kwargs):
        raise RuntimeError("audit down")

    monkeypatch.setattr(services.audit, "record", boom)
    with pytest.raises(RuntimeError):
        services.import_file(
            actor=SYSTEM, dataset=filled, data=jsonl([{"question": "New?"}]), filename="x.jsonl"
        )
    assert state(filled) == before


def test_the_import_is_audited_as_the_curator_who_applied_it(
    curator_client, second_curator_client, filled
):
    response = upload(curator_client, filled, "x.jsonl", jsonl([{"question": "New?"}]))
    seq = last_seq()
    second_curator_client.post(response["Location"])
    (event,) = events_since(seq)
    assert event.action == "dataset.import"
    assert event.actor_label == "cur2"
