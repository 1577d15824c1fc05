"""bench_runtime is a command, not a timed test: check only what it parses and refuses."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from console.ops.management.commands import bench_runtime
from tests.conftest import need

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8123/api/v1/config
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    21.05ms    9.10ms 131.15ms   80.11%
  Latency Distribution
     50%   19.42ms
     75%   24.01ms
     90%   30.55ms
     99%  812.00us
  12345 requests in 5.01s, 52.10MB read
  Non-2xx or 3xx responses: 7
Requests/sec:   2464.07
Transfer/sec:     10.40MB
"""


def test_parse_wrk_reads_counts_percentiles_and_errors():
    parsed = bench_runtime.parse_wrk(WRK_OUTPUT)
    assert parsed == {
        "requests": 12345,
        "seconds": 5.01,
        "p50_ms": 19.42,
        "p99_ms": 0.812,
        "non_2xx_3xx": 7,
    }
    combined = bench_runtime.combine([parsed, {**parsed, "p50_ms": 30.0, "p99_ms": 90.0}])
    assert combined["rps"] == round(24690 / 10.02, 1)
    assert combined["p99_ms"] == 90.0 and combined["non_2xx_3xx"] == 14


def test_missing_wrk_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(bench_runtime.shutil, "which", lambda name: None)
    with pytest.raises(CommandError, match="apt-get install wrk"):
        call_command("bench_runtime", stdout=io.StringIO())


def test_the_benchmarked_server_gets_a_production_configuration_that_loads(tmp_path, settings):
    """The child processes run with DEBUG off: every setting production requires is given, and
    they sign audit events with the keys this process verifies with."""
    from console import config

    env = bench_runtime.Command()._child_env(tmp_path)
    loaded = config.load(env)
    assert loaded.production
    assert dict(loaded.audit_keys) == dict(settings.AIRLOCK_AUDIT_KEYS)


def test_cpu_is_read_for_a_process_and_all_its_descendants(tmp_path):
    """/proc/<pid>/stat: utime and stime are fields 14 and 15; the command name may hold
    spaces and parentheses."""

    def stat(pid: int, ppid: int, utime: int, stime: int, name: str = "python") -> None:
        (tmp_path / str(pid)).mkdir()
        rest = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 30
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({name}) {' '.join(rest)}\n")

    ticks = bench_runtime._CLOCK_TICKS
    stat(100, 1, 10 * ticks, 2 * ticks, "gunicorn: master [x) y]")
    stat(101, 100, 3 * ticks, 1 * ticks)  # a worker
    stat(102, 101, 1 * ticks, 0)  # its child
    stat(200, 1, 50 * ticks, 50 * ticks)  # someone else's process
    assert bench_runtime.process_tree_cpu_seconds(100, tmp_path) == pytest.approx(17.0)
    assert bench_runtime.process_tree_cpu_seconds(101, tmp_path) == pytest.approx(5.0)


def test_ratios_compare_throughput_and_cpu_per_request_per_scenario():
    ours = {
        "config_200": {"rps": 3000.0, "cpu_ms_per_request": 0.5},
        "config_304": {"rps": 4000.0, "cpu_ms_per_request": 0.4},
    }
    theirs = {
        "config_200": {"rps": 2000.0, "cpu_ms_per_request": 1.0},
        "config_304": {"rps": 8000.0},
    }
    assert bench_runtime.ratios(ours, theirs) == {
        "config_200": {"throughput": 1.5, "cpu_per_request": 0.5},
        "config_304": {"throughput": 0.5},
    }
    rounds = [
        {**bench_runtime.parse_wrk(WRK_OUTPUT), "cpu_s": 2.0},
        {**bench_runtime.parse_wrk(WRK_OUTPUT), "cpu_s": 1.0},
    ]
    assert bench_runtime.combine(rounds)["cpu_ms_per_request"] == round(3000 / 24690, 4)


def test_the_unleash_peer_is_skipped_saying_why(monkeypatch, settings, tmp_path):
    command = bench_runtime.Command()
    options = {"peer_dir": ""}
    real_which = bench_runtime.shutil.which
    monkeypatch.setattr(
        bench_runtime.shutil, "which", lambda name: None if name == "npm" else real_which(name)
    )
    peer, target = command._start_unleash(tmp_path, options, "x", [], [])
    assert target is None and peer["skipped"].startswith("npm not found")
    monkeypatch.setattr(bench_runtime.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", "django.db.backends.sqlite3")
    peer, target = command._start_unleash(tmp_path, options, "x", [], [])
    assert target is None and "needs PostgreSQL" in peer["skipped"]


@pytest.mark.services
def test_bench_runtime_runs_bin_web_end_to_end_and_says_the_peer_was_skipped(monkeypatch):
    """A small run of the real thing: bin/web with DEBUG off on its own database, wrk on every
    scenario, CPU read from /proc — and `--peer unleash` on a machine without node/npm."""
    need(bench_runtime.shutil.which("wrk") is not None, "needs wrk (apt-get install wrk)")
    real_which = bench_runtime.shutil.which
    monkeypatch.setattr(
        bench_runtime.shutil,
        "which",
        lambda name: None if name in {"node", "npm"} else real_which(name),
    )
    out = io.StringIO()
    call_command(
        "bench_runtime",
        duration=1,
        rounds=1,
        connections=4,
        threads=1,
        workers=1,
        peer="unleash",
        stdout=out,
        stderr=io.StringIO(),
    )
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    assert result["server"].startswith("bin/web") and "DEBUG off" in result["server"]
    assert (
        result["peer"]["skipped"] == "node and npm not found on PATH: Unleash was not benchmarked"
    )
    assert "vs_peer" not in result
    for name in ("health", "config_200", "config_304", "ofrep_bulk"):
        figures = result[name]
        assert figures["rps"] > 0 and figures["p99_ms"] >= figures["p50_ms"] > 0, name
        assert figures["cpu_ms_per_request"] > 0, name
        assert "non_2xx_3xx" not in figures, name
