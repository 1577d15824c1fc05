"""Batch inserts on PostgreSQL that skip rows already stored: the whole batch in one statement,
one array per column, unnested, with ON CONFLICT DO NOTHING on a unique constraint (so two
concurrent retries of the same batch cannot both count it). Returns how many rows were new.

No model instances: at hundreds of rows a batch, building and preparing them cost more than the
insert itself. Each column goes as ONE array literal built here, not as a list for the driver to
adapt element by element: that adaptation cost more than validating the batch."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from django.db import connection, models


def _quoted(values: list[str]) -> str:
    """Text values as the elements of an array literal: each one double-quoted, with backslash
    and double quote escaped (PostgreSQL's array syntax; a quoted element is taken verbatim, so
    commas, braces, spaces and the word NULL inside it are just text)."""
    if "\\" in (probe := "".join(values)) or '"' in probe:
        values = [value.replace("\\", "\\\\").replace('"', '\\"') for value in values]
    return '{"' + '","'.join(values) + '"}'


def _text_array(values: list) -> str:
    return _quoted(values)


def _json_array(values: list) -> str:
    return _quoted(
        [json.dumps(value, ensure_ascii=False, separators=(",", ":")) for value in values]
    )


def _datetime_array(values: list) -> str:
    first = values[0] if values else None
    if first is not None and all(value is first for value in values):  # received_at: one instant
        return _quoted([first.isoformat()] * len(values))
    return _quoted([value.isoformat() for value in values])


def _number_array(values: list) -> str:
    """ints, floats and Decimals (finite: validated) in their own spelling; None is NULL."""
    return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"


def _bool_array(values: list) -> str:
    return "{" + ",".join("t" if value else "f" for value in values) + "}"


def _array_literal(field: models.Field) -> Callable[[list], str]:
    """The function that writes one column of the batch as an array literal for `field`."""
    kind = field.get_internal_type()
    if kind in ("CharField", "TextField"):
        return _text_array
    if kind == "JSONField":
        return _json_array
    if kind == "DateTimeField":
        if field.null:
            raise ValueError(f"{field.name}: a nullable time cannot go in a quoted array")
        return _datetime_array
    if kind == "BooleanField":
        return _bool_array
    return _number_array  # integers, foreign keys, floats, decimals


@functools.cache
def _insert_sql(
    model: type[models.Model], conflict: str, skip: tuple[str, ...]
) -> tuple[str, tuple[tuple[str, Callable[[list], str]], ...]]:
    """The unnest INSERT (built once per process) and, for each of its array parameters in
    order, the attribute name and the function writing its array."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in skip]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT {conflict}"
    return sql, tuple((f.attname, _array_literal(f)) for f in fields)


def insert_new(
    model: type[models.Model], rows: Sequence[dict[str, Any]], conflict: str, skip: tuple = ()
) -> int:
    """Insert `rows` (column values by attribute name; every concrete field but the primary key
    and `skip`) into `model`'s table, skipping those the unique constraint `conflict` (its
    ON CONFLICT target and action, e.g. '("a", "b") DO NOTHING') says exist. Returns how many
    rows were new."""
    sql, columns = _insert_sql(model, conflict, tuple(skip))
    with connection.cursor() as cursor:
        cursor.execute(sql, [write(list(map(itemgetter(name), rows))) for name, write in columns])
        return cursor.rowcount
