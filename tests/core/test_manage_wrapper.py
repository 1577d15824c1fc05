"""bin/manage runs one-off manage.py commands with the laptop defaults, where a bare
`python manage.py` (no DEBUG) stops at the production checks."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(command: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "PYTEST", "AIRLOCK_", "CELERY_", "CACHE_"))
        and k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL"}
    }
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["AIRLOCK_DATA_DIR"] = str(tmp_path)
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_bin_manage_runs_a_one_off_command_with_the_laptop_defaults(tmp_path):
    bare = run([sys.executable, str(ROOT / "manage.py"), "check"], tmp_path)
    assert bare.returncode != 0 and "SECRET_KEY is required" in bare.stderr
    wrapped = run([str(ROOT / "bin" / "manage"), "check"], tmp_path)
    assert wrapped.returncode == 0, wrapped.stderr
    assert "no issues" in wrapped.stdout
