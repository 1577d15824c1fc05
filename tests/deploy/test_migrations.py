"""Migrations a running deployment can take: on the table the runtime API writes to all the
time (the usage events), an index added after the table was created is built concurrently, in a
migration outside a transaction, so ingestion goes on while it builds; on SQLite (the embedded
default) the same migration is a plain index."""

from __future__ import annotations

import copy
import io
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from django.core.management import call_command
from django.db import connection, models
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import (
    AddConstraint,
    AddField,
    AddIndex,
    AlterField,
    CreateModel,
    RunSQL,
)

from console.core.migration_ops import AddIndexConcurrently

ROOT = Path(__file__).resolve().parents[2]
HOT = {("usage", "usageevent")}  # (app, model): written on every runtime call
# Built before this guard, and applied on every deployment since: nothing left to wait on.
APPLIED_EVERYWHERE = {
    ("usage", "0002_alter_usageevent_application"),
    ("usage", "0005_usage_event_id_unique_per_environment"),
    ("usage", "0007_usage_fallback_from"),
}


def on_disk() -> dict:
    return MigrationLoader(None, ignore_no_migrations=True).disk_migrations


def blocking_operations(migrations: dict) -> list[str]:
    """Index and constraint builds on a hot table that would stop its writes while they run."""
    found = []
    for (app, name), migration in migrations.items():
        if (app, name) in APPLIED_EVERYWHERE:
            continue
        created = {
            (app, op.name_lower) for op in migration.operations if isinstance(op, CreateModel)
        }
        for op in migration.operations:
            if isinstance(op, RunSQL):
                sql = " ".join(map(str, op.sql if isinstance(op.sql, list | tuple) else [op.sql]))
                plain = re.search(r"CREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)", sql, re.I)
                if plain and any(f"{a}_{m}" in sql.lower() for a, m in HOT):
                    found.append(f"{app}.{name}: {sql[:80]}")
                continue
            if not isinstance(op, AddIndex | AddConstraint | AddField | AlterField):
                continue
            table = (app, op.model_name_lower)
            if table not in HOT or table in created:
                continue  # a new table is empty: nothing waits on its build
            if isinstance(op, AddField | AlterField):
                field = op.field
                if field.db_index or field.unique or field.is_relation:
                    found.append(f"{app}.{name}: {op.describe()} (an index with it)")
            elif not isinstance(op, AddIndexConcurrently) or migration.atomic:
                found.append(f"{app}.{name}: {op.describe()}")
    return found


def test_no_migration_locks_the_usage_events_while_it_builds_an_index():
    assert blocking_operations(on_disk()) == []


def test_the_guard_finds_a_plain_build_and_a_concurrent_one_in_a_transaction():
    migrations = on_disk()
    [(key, shadow)] = [(k, m) for k, m in migrations.items() if k[1] == "0010_shadow_index"]
    [concurrent] = shadow.operations
    plain = copy.copy(shadow)
    plain.operations = [AddIndex(concurrent.model_name, concurrent.index)]
    assert len(blocking_operations({**migrations, key: plain})) == 1
    atomic = copy.copy(shadow)
    atomic.atomic = True
    assert len(blocking_operations({**migrations, key: atomic})) == 1
    indexed = copy.copy(shadow)
    traced = models.CharField(max_length=9, db_index=True)
    indexed.operations = [AddField("usageevent", "trace", traced)]
    assert len(blocking_operations({**migrations, key: indexed})) == 1
    raw = copy.copy(shadow)
    raw.operations = [RunSQL("CREATE INDEX usage_x ON usage_usageevent (trace)")]
    assert len(blocking_operations({**migrations, key: raw})) == 1
    raw.operations = [RunSQL("CREATE INDEX CONCURRENTLY usage_x ON usage_usageevent (trace)")]
    assert blocking_operations({**migrations, key: raw}) == []


def test_postgres_builds_the_shadow_index_concurrently_and_it_is_valid(postgres_tx):
    out = io.StringIO()
    call_command("sqlmigrate", "usage", "0010", stdout=out)
    assert "CREATE INDEX CONCURRENTLY" in out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'usage_shadow_at'"
        )
        assert cursor.fetchall() == [(True,)]
    # And back: dropped concurrently, then built again.
    out = io.StringIO()
    call_command("sqlmigrate", "usage", "0010", backwards=True, stdout=out)
    assert "DROP INDEX CONCURRENTLY" in out.getvalue()
    with connection.cursor() as cursor:
        # A concurrent build waits for older transactions on the database; should one be left
        # open here, fail in two minutes rather than hang the run.
        cursor.execute("SET lock_timeout = '120s'")
    try:
        call_command("migrate", "usage", "0009", verbosity=0)
        assert "usage_shadow_at" not in indexes_of("usage_usageevent")
        call_command("migrate", "usage", verbosity=0)
        assert "usage_shadow_at" in indexes_of("usage_usageevent")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


def indexes_of(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


def test_sqlite_takes_the_same_migrations_with_a_plain_index(tmp_path):
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "DEBUG": "1",
        "AIRLOCK_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "usage", "--noinput"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [database] = tmp_path.rglob("*.sqlite3")

    def indexes() -> list:
        with sqlite3.connect(database) as db:
            return db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()

    assert ("usage_shadow_at",) in indexes()
    back = subprocess.run(
        [sys.executable, "manage.py", "migrate", "usage", "0009", "--noinput"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert back.returncode == 0, back.stdout + back.stderr
    assert ("usage_shadow_at",) not in indexes()
