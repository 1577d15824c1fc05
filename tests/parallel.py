"""Each pytest-xdist worker gets services of its own, so tests running side by side never share
state: pytest-django already gives worker gwN its own test database (`test_<name>_gwN`); this
plugin, loaded with `-p tests.parallel` before Django's settings are read, gives it its own
Redis databases (cache, broker, the eval workers' broker) and its own collected-static folder.

Worker N uses Redis databases 15-3N (cache), 14-3N (broker) and 13-3N (eval workers), so
worker 0 keeps the databases a serial run uses and five workers fit in Redis's default 16.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
DATABASES_PER_WORKER = 3
MAX_WORKERS = 16 // DATABASES_PER_WORKER


def worker_index(name: str | None = None) -> int | None:
    """0 for gw0, 1 for gw1, … ; None outside xdist (a serial run)."""
    name = os.environ.get("PYTEST_XDIST_WORKER") if name is None else name
    if not name:
        return None
    if not name.startswith("gw") or not name[2:].isdigit():
        raise RuntimeError(f"PYTEST_XDIST_WORKER={name!r} is not gw<number>")
    return int(name[2:])


def with_database(url: str, db: int) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{db}"))


def worker_environment(index: int, env: dict[str, str]) -> dict[str, str]:
    """The variables worker `index` overrides: its Redis databases and its static folder."""
    if index >= MAX_WORKERS:
        raise RuntimeError(
            f"at most {MAX_WORKERS} xdist workers fit Redis's 16 databases (asked for gw{index})"
        )
    cache, broker, evals = (15 - DATABASES_PER_WORKER * index - k for k in range(3))
    changes = {
        "AIRLOCK_EVAL_WORKER_REDIS_DB": str(evals),
        "AIRLOCK_STATIC_ROOT": str(ROOT / "var" / f"staticfiles-gw{index}"),
    }
    for name, db in (("CACHE_URL", cache), ("CELERY_BROKER_URL", broker)):
        if env.get(name, "").startswith(("redis://", "rediss://")):
            changes[name] = with_database(env[name], db)
    return changes


# At import, not in a hook: pytest-django reads the settings in its own (tryfirst)
# pytest_load_initial_conftests, and `-p` plugins are imported before any hook runs.
if (_index := worker_index()) is not None:
    os.environ.update(worker_environment(_index, dict(os.environ)))
