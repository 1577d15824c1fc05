"""Reading and writing golden sets as CSV and JSONL.

Parsing never touches the database: it returns every row it could read and every problem it
found, each named by line and field, so an import is all-or-nothing and its report is complete.
Writing is a generator, so exports stream without holding the set in memory. CSV cells that a
spreadsheet would run as a formula are written with a leading ' and read back without it
(console.core.csvcells), so an export imported again is unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from console.core import csvcells, jsoninput
from console.datasets.cells import from_csv_cell
from console.datasets.items import (
    CONTENT_FIELDS,
    FIELDS,
    MAX_ITEM_BYTES,
    ItemError,
    clean_item,
    to_csv_cell,
)

FORMATS = ("csv", "jsonl")
MAX_PROBLEMS = 500


@dataclass(frozen=True)
class Problem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.field}: {self.message}"

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class Row:
    line: int
    item_id: str  # "" when the file gave none (a new item)
    content: dict
    # The content fields the file actually gave: a merge leaves the others as they are, so a
    # spreadsheet of just id,question never wipes expected facts or tags.
    provided: frozenset = frozenset(CONTENT_FIELDS)


@dataclass
class Parsed:
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.truncated = True


def detect_format(filename: str, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "csv"


def _decode(data: bytes, result: Parsed) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        result.add(
            Problem(
                line, "(file)", f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save as UTF-8"
            )
        )
        return None


def _accept(result: Parsed, seen: dict[str, int], line: int, raw: dict, size: int) -> None:
    if size > MAX_ITEM_BYTES:
        result.add(
            Problem(line, "(row)", f"row is {size:,} bytes, over the {MAX_ITEM_BYTES:,} limit")
        )
        return
    content, errors = clean_item(raw)
    for err in errors:
        result.add(Problem(line, err.field, err.message))
    item_id = content.pop("id", "") if not any(e.field == "id" for e in errors) else ""
    if item_id:
        if item_id in seen:
            result.add(
                Problem(line, "id", f"duplicate id {item_id!r} (first on line {seen[item_id]})")
            )
            return
        seen[item_id] = line
    if not errors:
        result.rows.append(Row(line, item_id, content, frozenset(raw) & frozenset(CONTENT_FIELDS)))


def parse(data: bytes, fmt: str, progress: Callable[[int], None] | None = None) -> Parsed:
    """Parse a whole file. `progress(rows_done)` is called every 1,000 rows."""
    result = Parsed()
    text = _decode(data, result)
    if text is None:
        return result
    parser = _parse_csv if fmt == "csv" else _parse_jsonl
    for count, _ in enumerate(parser(text, result), start=1):
        if progress and count % 1000 == 0:
            progress(count)
    return result


def _parse_csv(text: str, result: Parsed) -> Iterator[None]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        result.add(Problem(1, "(file)", "the file is empty"))
        return
    except csv.Error as exc:
        result.add(Problem(1, "(header)", f"unreadable CSV: {exc}"))
        return
    columns = [h.strip() for h in header]
    for name in columns:
        if name not in FIELDS:
            result.add(
                Problem(1, name or "(blank)", f"unknown column (expected: {', '.join(FIELDS)})")
            )
    if "question" not in columns:
        result.add(Problem(1, "question", "column is missing"))
    if result.problems:
        return
    seen: dict[str, int] = {}
    line = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.add(Problem(reader.line_num, "(row)", f"unreadable CSV: {exc}"))
            break
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            result.add(
                Problem(start, "(row)", f"has {len(cells)} cells, the header has {len(columns)}")
            )
            continue
        raw: dict = {}
        bad = False
        for name, cell in zip(columns, cells, strict=True):
            try:
                raw[name] = from_csv_cell(name, csvcells.restore(cell))
            except ItemError as err:
                result.add(Problem(start, err.field, err.message))
                bad = True
        if not bad:
            _accept(result, seen, start, raw, sum(len(c.encode()) for c in cells))
        yield None


def _parse_jsonl(text: str, result: Parsed) -> Iterator[None]:
    seen: dict[str, int] = {}
    # Only "\n" ends a record: JSON strings may hold U+2028 and friends, which splitlines() splits.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            raw = jsoninput.parse(
                line, constants=True
            )  # NaN/Infinity are reported per field by clean_item
        except jsoninput.JSONInputError as exc:
            where = f" at column {exc.column}" if exc.column else ""
            field_name = str(exc.path[0]) if exc.path else "(line)"
            result.add(Problem(number, field_name, f"malformed JSON ({exc.message}{where})"))
            continue
        if not isinstance(raw, dict):
            result.add(Problem(number, "(line)", "each line must be a JSON object"))
            continue
        _accept(result, seen, number, raw, len(line.encode()))
        yield None


def csv_lines(items: Iterable[dict]) -> Iterator[str]:
    """CSV text, one chunk per row; `items` are dicts with 'id' plus content fields."""
    buffer = io.StringIO()
    writer = csvcells.writer(buffer)
    writer.writerow(FIELDS)
    for item in items:
        writer.writerow([to_csv_cell(name, item.get(name)) for name in FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate(0)
    if buffer.getvalue():
        yield buffer.getvalue()


def jsonl_lines(items: Iterable[dict]) -> Iterator[str]:
    for item in items:
        yield json.dumps({name: item.get(name) for name in FIELDS}, ensure_ascii=False) + "\n"


def export_lines(items: Iterable[dict], fmt: str) -> Iterator[str]:
    return csv_lines(items) if fmt == "csv" else jsonl_lines(items)
