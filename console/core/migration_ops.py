"""Migration operations for tables production writes to all the time.

`AddIndexConcurrently` builds an index with PostgreSQL's CREATE INDEX CONCURRENTLY: a plain
CREATE INDEX holds a lock that stops every insert for as long as the build scans the table (on
the usage events, minutes of refused runtime traffic on a big deployment); the concurrent build
lets writes go on. The migration holding it must say `atomic = False`. On SQLite (the embedded
default, one process) it is a plain AddIndex."""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently as PostgresConcurrently
from django.db.migrations.operations import AddIndex


class AddIndexConcurrently(PostgresConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
