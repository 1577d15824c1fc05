"""bench_runtime is a command, not a timed test: check only what it parses and refuses."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from console.ops.management.commands import bench_runtime

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
