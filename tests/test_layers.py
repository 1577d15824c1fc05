"""The layers of docs/architecture.md hold: import-linter checks the contract in pyproject.toml
(the same check `make lint` runs), and the contract fails on an upward import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: install the dev extra (.[dev])"
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_every_app_imports_only_from_the_layers_below_it():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """A copy of the code in which core imports releases: the check names the offending line."""
    shutil.copytree(ROOT / "console", tmp_path / "console", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    diff = tmp_path / "console" / "core" / "diff.py"
    diff.write_text(diff.read_text() + "\nfrom console.releases import models  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Contracts: 0 kept, 1 broken." in result.stdout
    assert "console.core.diff -> console.releases.models" in result.stdout
