"""Sharded eval runs: a run with more concurrency than AIRLOCK_EVAL_SHARD_CONCURRENCY is split
into shards that separate Celery tasks (and so separate worker processes) evaluate, each under
its own lease, with the same results, metrics and exactly-once guarantees as one task."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from console.audit.models import AuditEvent
from console.evals import services
from console.evals.models import EvalResult, EvalRun, EvalShard
from console.evals.services import Part, shard_count
from console.evals.simulator import Faults
from tests.evals.helpers import build_demo, independent_summary, result_ids
from tests.evals.test_services import V3_METRICS
from tests.evals.workers import VISIBILITY_TIMEOUT_S, wait_finished, wait_for

pytestmark = pytest.mark.services


@pytest.mark.parametrize(
    ("per_task", "concurrency", "items", "expected"),
    [(100, 50, 1000, 1), (100, 100, 1000, 1), (100, 101, 1000, 2), (100, 200, 4000, 2),
     (100, 256, 4000, 3), (2, 8, 3, 3), (2, 8, 0, 1)],
)  # fmt: skip
def test_a_run_gets_one_shard_per_share_of_concurrency_and_never_more_than_its_items(
    settings, per_task, concurrency, items, expected
):
    settings.AIRLOCK_EVAL_SHARD_CONCURRENCY = per_task
    assert shard_count(concurrency, items) == expected


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_the_parts_of_a_run_cover_every_item_once_and_share_its_concurrency(count):
    parts = [Part(i, count) for i in range(count)]
    for position in range(1, 101):
        assert sum(part.holds(position) for part in parts) == 1
    assert sum(part.concurrency(20) for part in parts) == 20
    assert max(p.concurrency(20) for p in parts) - min(p.concurrency(20) for p in parts) <= 1


@pytest.fixture
def sharded(settings):
    """Two calls in flight per task: the demo's concurrency-4 runs have two shards."""
    settings.AIRLOCK_EVAL_SHARD_CONCURRENCY = 2
    return settings


def test_launching_past_the_per_task_concurrency_creates_the_shards(
    sharded, live_demo, quiet_broker
):
    run = services.launch_run(**live_demo.launch_kwargs(concurrency=5))
    assert run.shards == 3
    assert list(run.shard_set.values_list("index", "finished_at")) == [
        (0, None), (1, None), (2, None)
    ]  # fmt: skip
    assert services.unfinished_shards(run.pk) == [0, 1, 2]
    unsharded = services.launch_run(**live_demo.launch_kwargs(prompt=2, concurrency=2))
    assert unsharded.shards == 1 and not unsharded.shard_set.exists()
    assert services.unfinished_shards(unsharded.pk) == []


def test_a_sharded_run_in_one_process_gives_the_same_results_as_one_task(
    sharded, live_demo, quiet_broker
):
    run = services.launch_run(**live_demo.launch_kwargs(concurrency=4))
    assert run.shards == 2
    assert services.execute_run(run.pk).status == EvalRun.Status.COMPLETED
    run.refresh_from_db()
    ids = result_ids(run)
    assert len(ids) == len(set(ids)) == 60
    for key, value in V3_METRICS.items():
        assert run.metrics[key] == value, key
    assert (run.done_items, run.passed_items, run.error_items) == (60, 51, 0)
    assert run.spend == independent_summary(run)["cost_total"]
    assert run.lease_owner == "" and run.lease_until is None
    shards = list(run.shard_set.all())
    assert [s.done_items for s in shards] == [30, 30]
    assert all(s.finished_at and s.lease_until is None and s.stop_reason == "" for s in shards)
    # Each shard evaluated its own items: odd positions in shard 0, even ones in shard 1.
    assert live_demo.faults.stats["requests"] == 60
    completed = AuditEvent.objects.filter(action="eval.completed", object_id=str(run.pk))
    assert completed.count() == 1


def test_a_shard_held_by_a_live_worker_is_busy_and_a_finished_one_is_not_run_again(
    sharded, live_demo, quiet_broker
):
    run = services.launch_run(**live_demo.launch_kwargs(concurrency=4))
    EvalShard.objects.filter(run=run, index=0).update(
        lease_owner="w1@host:1:abc", lease_until=timezone.now() + timedelta(seconds=20)
    )
    busy = services.execute_run(run.pk, owner="w2@host:2:def", shard=0)
    assert busy.status == "busy" and 1 <= busy.retry_in <= 20
    assert not EvalResult.objects.filter(run=run).exists()

    assert services.execute_run(run.pk, shard=1).status == EvalRun.Status.RUNNING
    run.refresh_from_db()
    assert run.active and EvalResult.objects.filter(run=run).count() == 30
    # Shard 1 again (a redelivered message): finished, so nothing is asked twice.
    asked = live_demo.faults.stats["requests"]
    assert services.execute_run(run.pk, shard=1).status == EvalRun.Status.RUNNING
    assert live_demo.faults.stats["requests"] == asked

    # The holder of shard 0 died; once its lease runs out, shard 0 finishes the run.
    EvalShard.objects.filter(run=run, index=0).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert services.execute_run(run.pk, shard=0).status == EvalRun.Status.COMPLETED
    run.refresh_from_db()
    assert run.metrics["pass_rate"] == V3_METRICS["pass_rate"]
    assert len(set(result_ids(run))) == 60


def test_finalising_twice_records_one_completion(sharded, live_demo, quiet_broker):
    run = services.launch_run(**live_demo.launch_kwargs(concurrency=4))
    services.execute_run(run.pk)
    assert services.finalize_sharded(run.pk) == EvalRun.Status.COMPLETED
    completed = AuditEvent.objects.filter(action="eval.completed", object_id=str(run.pk))
    assert completed.count() == 1


def test_a_sharded_run_under_a_cost_cap_stops_at_it(sharded, live_demo, quiet_broker):
    kwargs = live_demo.launch_kwargs(judged=True, cost_cap=0.02, concurrency=4)
    run = services.launch_run(**kwargs)
    assert services.execute_run(run.pk).status == EvalRun.Status.STOPPED
    run.refresh_from_db()
    stored = EvalResult.objects.filter(run=run).count()
    assert (run.status, run.verdict) == (EvalRun.Status.STOPPED, EvalRun.Verdict.ERRORED)
    assert run.spend <= 0.02
    assert 4 <= stored < 60
    assert run.verdict_detail["reason"] == f"stopped at the $0.02 cost cap after {stored} items"


# Real Celery workers ---------------------------------------------------------------------------


def test_two_worker_processes_share_a_sharded_run(sharded, live_demo, start_worker, monkeypatch):
    monkeypatch.setenv("AIRLOCK_EVAL_SHARD_CONCURRENCY", "2")
    live_demo.faults.latency_ms = 100
    # One task at a time per worker: each shard must go to a different process.
    first, second = start_worker("w1", concurrency=1), start_worker("w2", concurrency=1)
    run = services.launch_run(**live_demo.launch_kwargs(concurrency=4))
    wait_finished(run, timeout=60)

    assert run.status == EvalRun.Status.COMPLETED
    ids = result_ids(run)
    assert len(ids) == len(set(ids)) == 60
    for key, value in V3_METRICS.items():
        assert run.metrics[key] == value, key
    assert live_demo.faults.stats["requests"] == 60
    owners = {first.output().count("succeeded"), second.output().count("succeeded")}
    # launch_run published one message per shard; each worker took one.
    assert all(count >= 1 for count in owners), (first.output()[-2000:], second.output()[-2000:])
    assert AuditEvent.objects.filter(action="eval.completed", object_id=str(run.pk)).count() == 1


def test_a_shard_whose_worker_is_killed_resumes_on_another_exactly_once(
    sharded, application, engineer, start_simulator, start_worker, monkeypatch
):
    monkeypatch.setenv("AIRLOCK_EVAL_SHARD_CONCURRENCY", "2")
    _, base_url, faults = start_simulator(Faults(latency_ms=150))
    demo = build_demo(application, engineer, base_url)
    doomed = start_worker("doomed", concurrency=3)
    run = services.launch_run(**demo.launch_kwargs(concurrency=4))
    launched = time.monotonic()
    wait_for(lambda: EvalResult.objects.filter(run=run).count() >= 8, 30, "8 stored results")
    doomed.kill()
    stored_before = set(result_ids(run))
    assert 8 <= len(stored_before) < 60
    assert EvalShard.objects.filter(run=run, lease_owner__startswith="doomed@").count() == 2

    # The dead worker's leases would run out after services.LEASE; model that moment.
    gone = timezone.now() - timedelta(seconds=1)
    EvalShard.objects.filter(run=run).update(lease_until=gone)
    EvalRun.objects.filter(pk=run.pk).update(lease_until=gone)
    time.sleep(max(0.0, VISIBILITY_TIMEOUT_S + 1 - (time.monotonic() - launched)))
    start_worker("heir", concurrency=3)
    wait_finished(run, timeout=60)

    ids = result_ids(run)
    assert run.status == EvalRun.Status.COMPLETED
    assert len(ids) == len(set(ids)) == 60
    assert stored_before <= set(ids)
    for key, value in V3_METRICS.items():
        assert run.metrics[key] == value, key
    # In flight (2 per shard) or finished but not yet written (0.2 s batches) when killed.
    assert 60 <= faults.stats["requests"] <= 60 + 4 + 8


def test_cancelling_a_sharded_run_stops_every_shard(sharded, live_demo, start_worker, monkeypatch):
    monkeypatch.setenv("AIRLOCK_EVAL_SHARD_CONCURRENCY", "2")
    live_demo.faults.latency_ms = 300
    start_worker("w1", concurrency=3)
    run = services.launch_run(**live_demo.launch_kwargs(concurrency=4))
    wait_for(lambda: EvalResult.objects.filter(run=run).count() >= 4, 30, "4 stored results")
    services.cancel_run(actor=live_demo.engineer, run=run)
    wait_finished(run, timeout=10)
    assert run.status == EvalRun.Status.CANCELLED
    stored = EvalResult.objects.filter(run=run).count()
    assert 4 <= stored < 40
    assert run.done_items == run.metrics["items"] == stored
    assert set(run.shard_set.values_list("stop_reason", flat=True)) == {"cancelled"}
    time.sleep(1.0)
    assert EvalResult.objects.filter(run=run).count() == stored
