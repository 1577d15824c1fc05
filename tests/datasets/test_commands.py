"""The golden-set commands for scripts and CI: dataset_import and dataset_export."""

from __future__ import annotations

import csv
import io
import json
from io import StringIO

import pytest
from django.core.management import base as management_base
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError

from console.audit.models import AuditEvent
from console.datasets import selectors, services
from console.datasets.models import DatasetVersion
from tests.datasets.helpers import actions_since, events_since, jsonl, last_seq, rows, state

GOOD_CSV = (
    "id,question,expected_contains,tags\n"
    'refund-1,How long do I have to return an item?,"[""30 days"", ""receipt""]","[""refunds""]"\n'
    ",Do you ship to Mars?,,\n"
)
BAD_CSV = (
    "id,question,tags\n"
    'ok-1,Fine?,"[""a""]"\n'
    ",,\n"  # blank rows are skipped
    'bad-1,,"[""a""]"\n'
    'bad-2,Broken?,"[""a"",\n'
)


@pytest.fixture
def write(tmp_path):
    def make(name: str, content: str | bytes):
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    return make


def run_import(*args, **kwargs):
    out, err = StringIO(), StringIO()
    call_command("dataset_import", *args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- dataset_import


def test_import_merges_the_file_and_reports_the_summary(filled, write):
    seq = last_seq()
    out, err = run_import(filled.application.key, "golden", write("more.csv", GOOD_CSV))
    assert out.strip() == "imported more.csv: 1 added, 1 changed, 0 unchanged, 0 removed"
    assert err == ""
    assert [r["id"] for r in rows(filled)][:3] == ["refund-1", "ship-1", "acct-1"]
    assert rows(filled)[0]["expected_contains"] == ["30 days", "receipt"]
    assert rows(filled)[3]["question"] == "Do you ship to Mars?"
    (event,) = events_since(seq)
    assert (event.action, event.actor_type, event.actor_label) == (
        "dataset.import",
        "system",
        "system",
    )


def test_any_bad_row_imports_nothing_and_lists_every_problem(filled, write):
    before = state(filled)
    with pytest.raises(CommandError, match=r"nothing imported: 2 problem\(s\)"):
        run_import(filled.application.key, "golden", write("bad.csv", BAD_CSV))
    assert state(filled) == before


def test_problems_go_to_stderr_by_line_and_field(filled, write):
    err = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "dataset_import", filled.application.key, "golden", write("bad.csv", BAD_CSV),
            stdout=StringIO(), stderr=err,
        )  # fmt: skip
    lines = err.getvalue().splitlines()
    assert lines[0] == "bad.csv: line 4, question: is required"
    assert lines[1].startswith("bad.csv: line 5, tags: malformed JSON")
    assert len(lines) == 2


def test_real_exit_status_is_1_with_problems_on_stderr(filled, write, capsys, monkeypatch):
    path = write("bad.jsonl", b'{"question": "Fine?"}\n[1, 2]\n')
    before = state(filled)
    # run_from_argv closes every connection when it ends, including the test's transaction.
    monkeypatch.setattr(management_base.connections, "close_all", lambda: None)
    with pytest.raises(SystemExit) as caught:
        execute_from_command_line(
            ["manage.py", "dataset_import", filled.application.key, "golden", path]
        )
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "bad.jsonl: line 2, (line): each line must be a JSON object" in err
    assert "CommandError: nothing imported: 1 problem(s)" in err
    assert state(filled) == before


def test_import_then_publish_with_a_message(filled, write, curator):
    seq = last_seq()
    out, _ = run_import(
        filled.application.key, "golden", write("more.csv", GOOD_CSV),
        "--publish", "-m", "add mars", "--as-user", curator.username,
    )  # fmt: skip
    assert out.splitlines()[-1] == f"published {filled.application.key}/golden v2"
    v2 = DatasetVersion.objects.get(head=filled, number=2)
    assert (v2.message, v2.author) == ("add mars", curator)
    assert [i["id"] for i in selectors.version_items(v2)] == [r["id"] for r in rows(filled)]
    assert actions_since(seq) == ["dataset.import", "dataset.publish"]
    assert {e.actor_label for e in events_since(seq)} == {curator.username}

    # The same file again: nothing to import, nothing to publish.
    out, _ = run_import(
        filled.application.key, "golden", write("more.csv", GOOD_CSV),
        "--publish", "-m", "again", "--as-user", curator.username,
    )  # fmt: skip
    assert "1 added" in out  # the id-less row is new every time
    assert DatasetVersion.objects.filter(head=filled).count() == 3


def test_publish_when_the_draft_equals_the_latest_version(filled, write, curator):
    data = jsonl(rows(filled))
    out, _ = run_import(
        filled.application.key, "golden", write("same.jsonl", data),
        "--publish", "-m", "noop", "--as-user", curator.username,
    )  # fmt: skip
    assert out.splitlines() == [
        "imported same.jsonl: 0 added, 0 changed, 3 unchanged, 0 removed",
        "nothing to publish: the draft equals the latest version",
    ]
    assert DatasetVersion.objects.filter(head=filled).count() == 1


def test_publish_without_as_user(filled, write):
    out, _ = run_import(
        filled.application.key, "golden", write("more.csv", GOOD_CSV), "--publish", "-m", "ci"
    )
    assert out.splitlines()[-1] == f"published {filled.application.key}/golden v2"


def test_publish_needs_a_message_and_imports_nothing_without_one(filled, write):
    before = state(filled)
    with pytest.raises(CommandError, match="--publish needs -m"):
        run_import(filled.application.key, "golden", write("more.csv", GOOD_CSV), "--publish")
    assert state(filled) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope-app", "golden"], "no golden set 'golden' in application 'nope-app'"),
        (["APP", "nope"], "no golden set 'nope'"),
        (["APP", "golden", "--as-user", "ghost"], "user 'ghost' does not exist"),
    ],
)
def test_import_refuses_unknown_targets(filled, write, args, message):
    args = [filled.application.key if a == "APP" else a for a in args]
    path = write("more.csv", GOOD_CSV)
    before = state(filled)
    with pytest.raises(CommandError, match=message):
        run_import(*args[:2], path, *args[2:])
    assert state(filled) == before


def test_import_refuses_a_missing_file(filled, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        run_import(filled.application.key, "golden", str(tmp_path / "missing.csv"))


def test_replace_mode_and_explicit_format(filled, write):
    path = write("list.txt", jsonl([{"id": "acct-1", "question": "How do I reset my password?"}]))
    out, _ = run_import(
        filled.application.key, "golden", path, "--format", "jsonl", "--mode", "replace"
    )
    assert out.strip() == "imported list.txt: 0 added, 1 changed, 0 unchanged, 2 removed"
    assert [r["id"] for r in rows(filled)] == ["acct-1"]


# ---------------------------------------------------------------- dataset_export


@pytest.fixture
def two_versions(filled, curator):
    services.import_file(
        actor=curator, dataset=filled, filename="v2.jsonl",
        data=jsonl([{"id": "new-1", "question": 'Line one\nline "two", three', "tags": ["x"]}]),
    )  # fmt: skip
    services.publish(actor=curator, dataset=filled, message="v2")
    services.delete_items(actor=curator, dataset=filled, item_ids=["refund-1"])  # draft only
    return filled


def export(capsys, *args) -> str:
    call_command("dataset_export", *args)
    return capsys.readouterr().out


@pytest.mark.parametrize("number", [1, 2])
def test_export_version_as_jsonl_equals_the_published_items(capsys, two_versions, number):
    version = DatasetVersion.objects.get(head=two_versions, number=number)
    out = export(
        capsys, two_versions.application.key, "golden", "--version", str(number),
        "--format", "jsonl",
    )  # fmt: skip
    assert [json.loads(line) for line in out.splitlines()] == list(selectors.version_items(version))


@pytest.mark.parametrize("number", [1, 2])
def test_export_version_as_csv_equals_the_published_items(capsys, two_versions, number, fresh):
    version = DatasetVersion.objects.get(head=two_versions, number=number)
    out = export(
        capsys, two_versions.application.key, "golden", "--version", str(number),
        "--format", "csv",
    )  # fmt: skip
    records = list(csv.DictReader(io.StringIO(out, newline="")))
    expected = list(selectors.version_items(version))
    assert [r["id"] for r in records] == [i["id"] for i in expected]
    # And it imports back to exactly those items.
    target = fresh()
    services.import_file(actor=None, dataset=target, data=out.encode(), filename="v.csv")
    assert rows(target) == expected


def test_export_defaults_to_the_draft_and_can_write_a_file(capsys, two_versions, tmp_path):
    out = export(capsys, two_versions.application.key, "golden")
    assert [r["id"] for r in csv.DictReader(io.StringIO(out, newline=""))] == [
        "ship-1",
        "acct-1",
        "new-1",
    ]
    target = tmp_path / "v1.jsonl"
    call_command(
        "dataset_export", two_versions.application.key, "golden", "--version", "1",
        "--format", "jsonl", "-o", str(target),
    )  # fmt: skip
    assert capsys.readouterr().out == ""
    assert [json.loads(x)["id"] for x in target.read_text().splitlines()] == [
        "refund-1",
        "ship-1",
        "acct-1",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["APP", "golden", "--version", "9"], "has no version 9"),
        (["APP", "nope"], "no golden set 'nope'"),
    ],
)
def test_export_refuses_unknown_targets(two_versions, args, message):
    args = [two_versions.application.key if a == "APP" else a for a in args]
    with pytest.raises(CommandError, match=message):
        call_command("dataset_export", *args)


def test_export_honours_the_stdout_given_to_call_command(two_versions):
    buffer = StringIO()
    call_command(
        "dataset_export", two_versions.application.key, "golden", "--format", "jsonl",
        stdout=buffer,
    )  # fmt: skip
    assert len(buffer.getvalue().splitlines()) == 3


def test_export_leaves_no_audit_trace(capsys, two_versions):
    seq = last_seq()
    export(capsys, two_versions.application.key, "golden", "--version", "2")
    assert not AuditEvent.objects.filter(seq__gt=seq).exists()
