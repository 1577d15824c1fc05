"""tests/parallel.py: each xdist worker's Redis databases and static folder are its own."""

import os

import pytest
from django.conf import settings

from tests.parallel import MAX_WORKERS, worker_environment, worker_index

ENV = {"CACHE_URL": "redis://127.0.0.1:6379/15", "CELERY_BROKER_URL": "redis://h:6379/14"}


def test_no_two_workers_share_a_redis_database_or_a_static_folder():
    seen: set[int] = set()
    folders = set()
    for index in range(MAX_WORKERS):
        env = worker_environment(index, ENV)
        dbs = {
            int(env["CACHE_URL"].rsplit("/", 1)[1]),
            int(env["CELERY_BROKER_URL"].rsplit("/", 1)[1]),
            int(env["AIRLOCK_EVAL_WORKER_REDIS_DB"]),
        }
        assert len(dbs) == 3 and not dbs & seen and all(0 <= db <= 15 for db in dbs)
        seen |= dbs
        folders.add(env["AIRLOCK_STATIC_ROOT"])
    assert len(folders) == MAX_WORKERS
    # Worker 0 keeps what a serial run uses; the host and port stay as configured.
    first = worker_environment(0, ENV)
    assert first["CACHE_URL"] == ENV["CACHE_URL"]
    assert first["CELERY_BROKER_URL"] == "redis://h:6379/14"


def test_a_worker_past_what_redis_holds_is_refused_by_name():
    with pytest.raises(RuntimeError, match=f"at most {MAX_WORKERS} xdist workers"):
        worker_environment(MAX_WORKERS, ENV)
    with pytest.raises(RuntimeError, match="gw<number>"):
        worker_index("node7")


def test_a_broker_that_is_not_redis_is_left_alone():
    env = worker_environment(1, {"CELERY_BROKER_URL": "filesystem://localhost//"})
    assert "CELERY_BROKER_URL" not in env and "CACHE_URL" not in env


def test_this_process_uses_its_workers_databases():
    index = worker_index()
    if index is None or not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("a serial run, or no Redis broker: nothing is remapped")
    assert settings.CELERY_BROKER_URL.endswith(f"/{14 - 3 * index}")
    assert os.environ["AIRLOCK_EVAL_WORKER_REDIS_DB"] == str(13 - 3 * index)
