"""The promptfoo peer of `manage.py bench_evals --peer promptfoo`: the same items, prompt,
simulator and concurrency, evaluated by promptfoo instead of Airlock.

`bench_evals` installs promptfoo with npm into a temporary folder, writes the config below and
starts this module as a script (`python -m console.ops.promptfoo_peer SPEC.json`) inside a network
namespace of its own (`unshare -rn`): there is no route but loopback, so nothing promptfoo does
can reach past 127.0.0.1. Here the namespace's loopback is brought up, the simulator is started in
a process of its own (as for Airlock's run) and promptfoo is timed; one JSON line goes to stdout.

No Django: the simulator module is plain Python, and inside the namespace there is no database.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

VERSION = "0.121.20"
# Every switch promptfoo 0.121.20 has for calling home: telemetry, update checks, sharing,
# remote generation, the share e-mail request; plus npm's own update notifier. The namespace
# makes them moot; they keep promptfoo from waiting on connections that cannot succeed.
QUIET_ENV = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PROMPTFOO_DISABLE_UPDATE": "1",
    "PROMPTFOO_DISABLE_SHARING": "1",
    "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
    "PROMPTFOO_DISABLE_REDTEAM_REMOTE_GENERATION": "1",
    "PROMPTFOO_DISABLE_SHARE_EMAIL_REQUEST": "1",
    "PROMPTFOO_CACHE_ENABLED": "false",  # every item is a real call, as in Airlock's run
    "NO_UPDATE_NOTIFIER": "1",
    "npm_config_update_notifier": "false",
    "npm_config_audit": "false",
    "npm_config_fund": "false",
}


def promptfoo_config(
    *, port: int, prompt: dict, model: dict, items: list[dict], concurrency: int
) -> dict:
    """A promptfoo config equivalent to Airlock's bench run: the prompt's two messages, the
    model config's parameters, and per item the checks Airlock's default scorers make (every
    expected fact, case-insensitive; every expected source cited as [id])."""
    messages = [
        {"role": "system", "content": prompt["system"]},
        {"role": "user", "content": prompt["user"]},
    ]
    tests = []
    for item in items:
        asserts = [{"type": "icontains", "value": fact} for fact in item["expected_contains"]]
        asserts += [{"type": "contains", "value": f"[{s}]"} for s in item["expected_sources"]]
        tests.append(
            {
                "description": item["id"],
                "vars": {"question": item["question"], **item["variables"]},
                "assert": asserts,
            }
        )
    return {
        "description": "bench_evals peer",
        "prompts": [{"id": "bench-answer", "raw": json.dumps(messages)}],
        "providers": [
            {
                "id": f"openai:chat:{model['model']}",
                "config": {
                    "apiBaseUrl": f"http://127.0.0.1:{port}/v1",
                    "apiKey": "not-set",
                    "temperature": model["temperature"],
                    "max_tokens": model["max_tokens"],
                },
            }
        ],
        "tests": tests,
        "evaluateOptions": {
            "maxConcurrency": concurrency,
            "cache": False,
            "showProgressBar": False,
        },
    }


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"simulator exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"simulator did not listen on port {port}")


def _count(results: dict) -> tuple[int, int, int]:
    """(items, passed, errors) from promptfoo's --output JSON."""
    stats = (results.get("results") or {}).get("stats") or {}
    rows = (results.get("results") or {}).get("results") or []
    passed, failed, errors = (stats.get(k, 0) for k in ("successes", "failures", "errors"))
    return len(rows) or passed + failed + errors, passed, errors


def run(spec: dict) -> dict:
    """Bring up loopback, start the simulator, time promptfoo; the peer's figures."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    port, work = spec["port"], Path(spec["work"])
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from console.evals.simulator import Faults, make_server; "
            "make_server('127.0.0.1', int(sys.argv[1]), "
            "Faults(latency_ms=float(sys.argv[2]))).serve_forever()",
            str(port),
            str(spec["latency_ms"]),
        ],
        cwd=spec["base_dir"],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, simulator)
        output = work / "results.json"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "PROMPTFOO_CONFIG_DIR": str(work / "promptfoo-home"),
            **QUIET_ENV,
        }
        command = [
            spec["promptfoo"], "eval", "--config", str(work / "promptfooconfig.json"),
            "--max-concurrency", str(spec["concurrency"]), "--no-cache", "--no-table",
            "--no-progress-bar", "--output", str(output),
        ]  # fmt: skip
        with open(work / "promptfoo.log", "wb") as log:
            started = time.perf_counter()
            child = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=log)
            _pid, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
    finally:
        simulator.terminate()
        simulator.wait(10)
    items = passed = errors = 0
    eval_ms = None
    if output.exists():
        results = json.loads(output.read_text())
        items, passed, errors = _count(results)
        eval_ms = ((results.get("results") or {}).get("stats") or {}).get("evaluationDurationMs")
    tail = (work / "promptfoo.log").read_text(errors="replace")[-600:]
    return {
        "tool": f"promptfoo {VERSION}",
        # 0: every assertion passed; 100: some failed (still a complete run).
        "exit_code": child.returncode,
        "items": items,
        "passed": passed,
        "errors": errors,
        "wall_s": round(wall, 3),
        # promptfoo's own count, without starting node and loading its modules.
        "eval_s": round(eval_ms / 1000, 3) if isinstance(eval_ms, int | float) else None,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        **({"log_tail": tail} if child.returncode not in (0, 100) or not items else {}),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set, in MB (Linux reports KB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
