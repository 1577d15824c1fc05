"""The bench commands at a small scale: each runs end to end and prints one JSON line whose
figures add up (the real sizes are for `manage.py bench_*` by hand; these keep them working)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from tests.deploy.test_processes import free_port

pytestmark = pytest.mark.services


def run(name: str, **options) -> dict:
    out = io.StringIO()
    call_command(name, stdout=out, stderr=io.StringIO(), **options)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_bench_console_times_every_page_with_a_200(postgres_tx):
    result = run("bench_console", items=40, flags=5, audit_events=200, usage_events=20_000, runs=1)
    assert result["db"] == "postgresql"
    assert result["sizes"]["dataset_items"] == 40
    assert result["sizes"]["usage_events_in_rollups"] >= 18_000
    assert len(result["pages"]) >= 36 and "webhooks" in result["pages"]
    assert {"quality", "experiment report", "shadow comparison"} <= set(result["pages"])
    assert all(page["ms"] > 0 and page["queries"] > 0 for page in result["pages"].values())
    assert result["slowest"]["ms"] == max(p["ms"] for p in result["pages"].values())


@pytest.mark.parametrize("external", [False, True])
def test_bench_evals_runs_a_real_eval_against_the_simulator(postgres_tx, external):
    result = run(
        "bench_evals",
        items=12,
        latency_ms=20,
        concurrency=4,
        port=free_port(),
        external_simulator=external,
    )
    assert (result["items"], result["errors"]) == (12, 0)
    assert result["simulator"] == ("own process" if external else "in process")
    assert result["ideal_s"] == pytest.approx(12 * 0.020 / 4)
    assert result["ratio"] == pytest.approx(result["wall_s"] / result["ideal_s"], rel=0.01)
    assert result["ratio"] >= 1  # nothing beats the simulator's own latency


def test_bench_evals_shards_a_run_across_worker_processes(postgres_tx, redis_url, settings):
    settings.AIRLOCK_EVAL_SHARD_CONCURRENCY = 2  # concurrency 4: two shards, one per worker
    result = run("bench_evals", items=16, latency_ms=20, concurrency=4, port=free_port(), workers=2)
    assert (result["items"], result["errors"], result["shards"]) == (16, 0, 2)
    assert result["workers"] == 2 and result["workers_cpu_s"] > 0
    assert result["ratio"] >= 1

    from console.evals.models import EvalRun

    run_ = EvalRun.objects.get(pk=result["run"])
    assert run_.status == EvalRun.Status.COMPLETED
    shards = list(run_.shard_set.values_list("done_items", "stop_reason"))
    assert shards == [(8, ""), (8, "")]


def test_bench_evals_refuses_workers_with_a_profile(postgres_tx):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--workers"):
        run("bench_evals", items=4, workers=2, profile=True, port=free_port())


def test_bench_usage_dashboard_reads_the_rollups_it_wrote(postgres_tx):
    result = run("bench_usage", dashboard_events=500_000, runs=1, skip=["ingest", "rollup"])
    board = result["dashboard"]
    assert board["events_represented"] == pytest.approx(500_000, rel=0.05)
    assert board["all_60_days"]["queries"] > 0


def test_bench_evals_skips_the_promptfoo_peer_without_node_and_says_why(postgres_tx, monkeypatch):
    from console.ops.management.commands import bench_evals

    real_which = bench_evals.shutil.which
    monkeypatch.setattr(
        bench_evals.shutil, "which", lambda name: None if name == "node" else real_which(name)
    )
    installs = []
    monkeypatch.setattr(bench_evals.subprocess, "run", lambda *a, **k: installs.append(a))
    result = run(
        "bench_evals", items=6, latency_ms=10, concurrency=3, port=free_port(), peer="promptfoo"
    )
    assert (result["items"], result["errors"]) == (6, 0)
    assert result["peer"]["tool"] == "promptfoo"
    assert "node" in result["peer"]["skipped"]
    assert result["airlock_vs_peer"] is None
    assert installs == []  # nothing installed, nothing started
    assert result["peak_rss_mb"] > 0


def test_the_promptfoo_peer_checks_what_airlocks_default_scorers_check():
    from console.ops import promptfoo_peer
    from console.ops.management.commands.bench_evals import (
        PROMPT_CONTENT,
        bench_item,
        model_content,
    )

    items = [bench_item(n) for n in (1, 2)]
    config = promptfoo_peer.promptfoo_config(
        port=8123, prompt=PROMPT_CONTENT, model=model_content(8123, 7), items=items, concurrency=7
    )
    provider = config["providers"][0]
    assert provider["id"] == "openai:chat:sim-small"
    assert provider["config"]["apiBaseUrl"] == "http://127.0.0.1:8123/v1"
    assert config["evaluateOptions"]["maxConcurrency"] == 7
    assert json.loads(config["prompts"][0]["raw"]) == [
        {"role": "system", "content": PROMPT_CONTENT["system"]},
        {"role": "user", "content": "{{ question }}"},
    ]
    first = config["tests"][0]
    assert first["vars"] == {"question": items[0]["question"], **items[0]["variables"]}
    assert first["assert"] == [
        {"type": "icontains", "value": "11 days"},
        {"type": "contains", "value": "[shipping-policy]"},
    ]
    assert promptfoo_peer.QUIET_ENV["PROMPTFOO_DISABLE_TELEMETRY"] == "1"
    assert promptfoo_peer.QUIET_ENV["PROMPTFOO_DISABLE_UPDATE"] == "1"
