"""Large imports: queued to Celery after the request commits, progress written as rows are
checked, and a task delivered twice (Celery acks late) never imports twice."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from console.datasets import io as dataset_io
from console.datasets import services, tasks
from console.datasets.models import ImportJob
from tests.datasets.helpers import (
    HTMX,
    actions_since,
    generated,
    import_jobs,
    last_seq,
    rows,
    state,
    url,
)


def big_file(n: int = 3000) -> bytes:
    answer = "A reasonably long reference answer. " * 3
    items = [{**i, "reference_answer": answer} for i in generated(n, prefix="big")]
    data = "".join(dataset_io.jsonl_lines(items)).encode()
    assert len(data) > services.SYNC_IMPORT_BYTES
    return data


@pytest.fixture
def queued(monkeypatch):
    """Record Celery dispatches instead of sending them to a broker."""
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.run_import, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def progress_log(monkeypatch):
    """What a poller would see in the job row each time the parser reports progress."""
    seen: list[tuple[str, int, int]] = []
    original = dataset_io.parse

    def parse(data, fmt, progress=None):
        def report(done):
            progress(done)
            job = ImportJob.objects.order_by("-pk").first()
            seen.append((job.status, job.processed_rows, job.total_rows))

        return original(data, fmt, progress=report if progress else None)

    monkeypatch.setattr(dataset_io, "parse", parse)
    return seen


def upload(client, dataset, data, mode="merge"):
    file = SimpleUploadedFile("big.jsonl", data, content_type="application/x-ndjson")
    return client.post(url("import", dataset), {"file": file, "mode": mode})


def test_a_large_upload_is_queued_after_commit_and_nothing_runs_in_the_request(
    curator_client, filled, queued, django_capture_on_commit_callbacks
):
    before = state(filled)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(curator_client, filled, big_file())
    (job,) = import_jobs(filled)
    assert response.status_code == 302
    assert job.status == ImportJob.Status.PENDING
    assert queued == []  # not before the row is committed
    assert len(callbacks) == 1
    callbacks[0]()
    assert queued == [(job.pk, False)]
    assert state(filled) == before

    page = curator_client.get(response["Location"])
    body = page.content.decode()
    assert "Queued…" in body
    assert 'hx-trigger="every 1s"' in body
    fragment = curator_client.get(response["Location"], headers=HTMX).content.decode()
    assert fragment.lstrip().startswith('<div id="import-status"')


def test_task_validates_with_progress_then_applies_once_even_when_delivered_twice(
    curator_client, filled, curator, queued, progress_log, django_capture_on_commit_callbacks
):
    data = big_file(3000)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(curator_client, filled, data)
    (job,) = import_jobs(filled)
    before = state(filled)
    seq = last_seq()

    # Validation, delivered twice.
    assert tasks.run_import.apply(args=(job.pk, False)).get() == "validated"
    assert tasks.run_import.apply(args=(job.pk, False)).get() == "validated"
    assert progress_log == [
        ("validating", 1000, 3000),
        ("validating", 2000, 3000),
        ("validating", 3000, 3000),
    ]
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.percent) == ("validated", 3000, 100)
    assert job.report["plan"] == {"added": 3000, "changed": 0, "unchanged": 0, "removed": 0}
    assert "Preview: 3000 valid rows" in curator_client.get(response["Location"]).content.decode()
    assert state(filled) == before
    assert actions_since(seq) == []

    # The curator applies: queued again, still nothing changed until the worker runs.
    with django_capture_on_commit_callbacks(execute=True):
        curator_client.post(response["Location"])
    assert queued == [(job.pk, False), (job.pk, True)]
    assert state(filled) == before

    assert tasks.run_import.apply(args=(job.pk, True)).get() == "done"
    assert tasks.run_import.apply(args=(job.pk, True)).get() == "done"
    assert services.run_import_job(job.pk, apply=True).status == "done"
    assert filled.draft_items.count() == 3 + 3000
    assert filled.draft_items.filter(item_id__startswith="big-").count() == 3000
    assert actions_since(seq) == ["dataset.import"]
    job.refresh_from_db()
    assert job.report["applied"]["added"] == 3000
    assert bytes(job.data) == b""
    assert rows(filled)[3]["id"] == "big-00001"
    assert rows(filled)[-1]["id"] == "big-03000"


def test_a_large_bad_file_fails_with_the_report_and_changes_nothing(
    curator_client, filled, queued, django_capture_on_commit_callbacks
):
    data = big_file(3000).replace(b'"id": "big-02500"', b'"id": "big-00007"')
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(curator_client, filled, data)
    (job,) = import_jobs(filled)
    before = state(filled)
    assert tasks.run_import.apply(args=(job.pk, False)).get() == "failed"
    job.refresh_from_db()
    assert [(p["line"], p["field"]) for p in job.report["problems"]] == [(2500, "id")]
    assert "first on line 7" in job.report["problems"][0]["message"]
    body = curator_client.get(response["Location"]).content.decode()
    assert "<tr><td>2500</td><td><code>id</code></td>" in body
    # A late apply delivery for a failed job does nothing.
    assert services.run_import_job(job.pk, apply=True).status == "failed"
    assert state(filled) == before


def test_a_redelivery_after_a_worker_died_mid_apply_finishes_the_import(
    filled, curator, monkeypatch
):
    data = big_file(1500)
    job = ImportJob.objects.create(
        dataset=filled, created_by=curator, filename="big.jsonl", fmt="jsonl", data=data
    )
    assert services.run_import_job(job.pk, apply=False).status == "validated"
    real_apply = services.apply_import
    calls = {"n": 0}

    def dies_once(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemExit("worker lost")  # the transaction of apply_import rolls back
        return real_apply(**kwargs)

    monkeypatch.setattr(services, "apply_import", dies_once)
    with pytest.raises(SystemExit):
        services.run_import_job(job.pk, apply=True)
    assert filled.draft_items.count() == 3  # rolled back
    redelivered = services.run_import_job(job.pk, apply=True)
    assert redelivered.status == "done"
    assert filled.draft_items.count() == 3 + 1500


def test_start_import_job_rejects_an_unknown_mode(filled, curator):
    with pytest.raises(ValidationError):
        services.start_import_job(
            actor=curator, dataset=filled, data=b"question\nQ?\n", filename="x.csv", fmt=None,
            mode="upsert",
        )  # fmt: skip
    assert import_jobs(filled) == []


def test_concurrent_deliveries_import_once_on_postgresql(postgres_tx, application, member):
    """Two workers receive the same apply task at the same moment: one imports, one returns."""
    curator = member("curator", "cur-pg")
    dataset = services.create_dataset(
        actor=curator, application=application, key="race", name="Race"
    )
    job = ImportJob.objects.create(
        dataset=dataset, created_by=curator, filename="big.jsonl", fmt="jsonl",
        data=big_file(2000),
    )  # fmt: skip
    assert services.run_import_job(job.pk, apply=False).status == "validated"
    seq = last_seq()
    barrier = threading.Barrier(2)
    results: list = []

    def deliver():
        try:
            barrier.wait()
            results.append(services.run_import_job(job.pk, apply=True).status)
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and not any(isinstance(r, Exception) for r in results), results
    assert dataset.draft_items.count() == 2000
    assert actions_since(seq) == ["dataset.import"]
    job.refresh_from_db()
    assert job.status == "done"
