"""Database-level immutability for append-only tables (PostgreSQL).

The ORM already refuses to update or delete versions and audit events; the trigger makes the
same promise to anyone holding a raw SQL connection. SQLite (the laptop default) relies on the
ORM guard alone. TRUNCATE is left alone: it is a schema-owner operation (test flushes use it).
"""

from django.db import migrations

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION airlock_forbid_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'airlock: % on % is forbidden: rows are immutable', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
"""


def forbid_update_delete(table: str) -> migrations.RunPython:
    """A migration operation installing the immutability trigger on `table` (PostgreSQL only)."""

    def forwards(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        schema_editor.execute(FUNCTION_SQL, params=None)
        schema_editor.execute(
            f'CREATE TRIGGER "{table}_immutable" BEFORE UPDATE OR DELETE ON "{table}" '
            "FOR EACH ROW EXECUTE FUNCTION airlock_forbid_change()"
        )

    def backwards(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        schema_editor.execute(f'DROP TRIGGER IF EXISTS "{table}_immutable" ON "{table}"')

    return migrations.RunPython(forwards, backwards, elidable=False)
