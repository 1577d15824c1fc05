"""Golden-set cells as people write them: lists one entry per line, variables as `name: value`.

Curators edit lists (expected facts, sources, tags) and variables without writing JSON:

- in the editor, a list is one entry per line, and variables are `name: value` lines
  (`customer: Ada`); a JSON array or object is still accepted;
- in a CSV cell, a list is `;`-separated (`30 days; receipt`) or a JSON array, and variables
  are `name: value` entries on separate lines or `;`-separated, or a JSON object.

A value after `name:` that reads as JSON keeps its type (`count: 3` is the number 3,
`vip: true` a boolean, `ids: [1, 2]` a list); anything else is text. `to_text` writes stored
values back in the same form (quoting, as JSON, only what would otherwise read back
differently), so opening a cell and saving it unchanged never changes the data.

Expected tool calls (`expected_tools`) are one call per line in both places,
`name {args} -> result` or `!name`, or a JSON array (console.datasets.tools).

Errors are ItemErrors naming the field; they quote the value that was refused and show an
example of the accepted form.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from console.core.jsoninput import JSONInputError, parse
from console.datasets import tools
from console.datasets.items import LIST_FIELDS, ItemError

VARIABLE_EXAMPLE = '"customer: Ada"'
LIST_EXAMPLES = {
    "expected_contains": '"30 days"',
    "expected_not_contains": '"lifetime warranty"',
    "expected_sources": '"policies/returns.md"',
    "tags": '"refunds"',
}
_QUOTE_LIMIT = 60
_decoder = json.JSONDecoder()


def quote(text: str) -> str:
    """A value as shown in an error message: in double quotes, on one line, shortened."""
    shown = " ↵ ".join(_lines(text))
    shown = shown if len(shown) <= _QUOTE_LIMIT else shown[: _QUOTE_LIMIT - 1] + "…"
    return f'"{shown}"'


def _json(text: str) -> tuple[bool, Any]:
    """(True, value) when the text is JSON content Airlock can store, else (False, None)."""
    try:
        value = parse(text)
    except JSONInputError:
        return False, None
    if isinstance(value, float) and not math.isfinite(value):  # 1e999 parses as infinity
        return False, None
    return True, value


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------- lists


def list_to_text(values: list | None) -> str:
    """A list as edit-box text: one entry per line; a JSON array only when lines would not
    read back as the same list (an entry holding a line break, or text that is itself an
    array)."""
    values = values or []
    text = "\n".join(values)
    if any("\n" in v or "\r" in v for v in values) or (
        text.lstrip().startswith("[") and _json(text.strip())[0]
    ):
        return _dump(values)
    return text


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def list_from_text(field: str, text: str) -> list:
    """Edit-box text to a list: a JSON array, else one entry per line (blank lines skipped)."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        ok, value = _json(stripped)
        if ok and isinstance(value, list):
            return value  # clean_field checks the entries are text
    return [line.strip() for line in _lines(text) if line.strip()]


def list_from_csv(field: str, cell: str) -> list | None:
    """A CSV cell to a list: a JSON array when it starts with `[`, else `;`-separated."""
    text = cell.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            return parse(text)  # clean_field checks it is a list of text
        except JSONInputError as exc:
            where = f" at column {exc.column}" if exc.column else ""
            example = LIST_EXAMPLES.get(field, '"30 days"').strip('"')
            raise ItemError(
                field,
                f"{exc.message}{where} in {quote(text)} — a cell starting "
                f'with [ is a JSON array, e.g. ["{example}", "…"]; or separate entries with '
                f'";", e.g. "{example}; …"',
            ) from None
    return [part.strip() for part in text.split(";") if part.strip()]


# ---------------------------------------------------------------- variables


def _plain_key(key: str) -> bool:
    return (
        bool(key)
        and key == key.strip()
        and ":" not in key
        and not key.startswith('"')
        and "\n" not in key
        and "\r" not in key
    )


def _plain_value(value: Any) -> bool:
    """Whether a text value reads back as itself when written unquoted: one line, or several
    written as indented continuation lines (none blank, none with edge spaces)."""
    if not isinstance(value, str) or value == "" or "\r" in value or _json(value)[0]:
        return False
    return all(line and line == line.strip() for line in value.split("\n"))


def variables_to_text(mapping: dict | None) -> str:
    """Variables as edit-box text: `name: value`, one per line; a value of several lines
    continues on lines indented by two spaces."""
    lines = []
    for key, value in (mapping or {}).items():
        name = key if _plain_key(key) else _dump(key)
        shown = value.replace("\n", "\n  ") if _plain_value(value) else _dump(value)
        lines.append(f"{name}: {shown}")
    return "\n".join(lines)


def _with_continuations(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, entry) per entry: an indented line continues the entry above it."""
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if entries and line[:1] in {" ", "\t"}:
            first, text = entries[-1]
            entries[-1] = (first, f"{text}\n{line.strip()}")
        else:
            entries.append((number, line))
    return entries


def _entry(field: str, entry: str, position: str) -> tuple[str, Any]:
    """One `name: value` entry; `position` ("line 2: ") prefixes errors when several."""
    text = entry.strip()
    if text.startswith('"'):
        try:
            key, end = _decoder.raw_decode(text)
        except ValueError:
            key, end = None, 0
        rest = text[end:].lstrip()
        if not isinstance(key, str) or not rest.startswith(":"):
            raise ItemError(
                field,
                f'{position}{quote(text)} is not "name: value" — e.g. {VARIABLE_EXAMPLE}',
            )
        value_text = rest[1:].strip()
    else:
        key, colon, value_text = text.partition(":")
        key, value_text = key.strip(), value_text.strip()
        if not colon or not key:
            raise ItemError(
                field,
                f'{position}{quote(text)} is not "name: value" — e.g. {VARIABLE_EXAMPLE}',
            )
    ok, value = _json(value_text)
    return key, value if ok else value_text


def _variables_from_entries(field: str, numbered: list[tuple[int, str]], unit: str) -> dict:
    several = len(numbered) > 1
    result: dict[str, Any] = {}
    first_seen: dict[str, int] = {}
    for number, entry in numbered:
        position = f"{unit} {number}: " if several else ""
        key, value = _entry(field, entry, position)
        if key in result:
            raise ItemError(
                field,
                f"{position}{quote(key)} is given twice (first on {unit} {first_seen[key]}) — "
                "give each name once",
            )
        result[key] = value
        first_seen[key] = number
    return result


def _variables_json(field: str, text: str) -> dict:
    try:
        value = parse(text)
    except JSONInputError as exc:
        where = f" at line {exc.line}, column {exc.column}" if exc.line else ""
        raise ItemError(
            field,
            f"{exc.message}{where} — text starting with {{ is a JSON object, "
            f'e.g. {{"customer": "Ada"}}; or write one "name: value" per line, e.g. '
            f"{VARIABLE_EXAMPLE}",
        ) from None
    if not isinstance(value, dict):
        raise ItemError(field, f'must be "name: value" lines, e.g. {VARIABLE_EXAMPLE}')
    return value


def variables_from_text(field: str, text: str) -> dict:
    """Edit-box text to variables: a JSON object, else `name: value` lines."""
    stripped = text.strip()
    if not stripped:
        return {}
    if stripped.startswith("{"):
        return _variables_json(field, stripped)
    return _variables_from_entries(field, _with_continuations(_lines(text)), "line")


def variables_from_csv(field: str, cell: str) -> dict | None:
    """A CSV cell to variables: a JSON object, else `name: value` entries on separate lines
    or separated by `;`."""
    stripped = cell.strip()
    if not stripped:
        return None
    if stripped.startswith("{"):
        return _variables_json(field, stripped)
    entries = [part for line in _lines(stripped) for part in line.split(";") if part.strip()]
    return _variables_from_entries(field, list(enumerate(entries, start=1)), "entry")


# ---------------------------------------------------------------- tool calls


def tools_from_text(field: str, text: str, unit: str) -> list:
    """Lines (or a JSON array) to cleaned tool call entries; `unit` names a line in errors."""
    try:
        return tools.from_text(text, unit)
    except ValueError as exc:
        raise ItemError(field, str(exc)) from None


@dataclass(frozen=True)
class ToolChip:
    """One expected tool call as the tables show it: `lookup_order(order_id="A-1042")`, or
    `never issue_refund`; the result (shortened) is shown muted, the whole line on hover."""

    name: str
    args: str  # `order_id="A-1042", n=2`: each constraint as JSON
    result: str  # "" when the entry gives none
    line: str  # the entry's edit-box line
    forbidden: bool = False

    @property
    def label(self) -> str:
        return f"never {self.name}" if self.forbidden else f"{self.name}({self.args})"


_RESULT_LIMIT = 24


def tool_chips(entries: list | None) -> list[ToolChip]:
    chips = []
    for entry in entries or []:
        if not isinstance(entry, dict) or not entry.get("name"):
            continue
        name = str(entry["name"])
        if entry.get("forbidden"):
            chips.append(ToolChip(name, "", "", f"!{name}", forbidden=True))
            continue
        args = entry.get("args") if isinstance(entry.get("args"), dict) else {}
        shown_args = ", ".join(f"{k}={_dump(v)}" for k, v in args.items())
        result = _dump(entry["result"]) if "result" in entry else ""
        if len(result) > _RESULT_LIMIT:
            result = result[: _RESULT_LIMIT - 1] + "…"
        chips.append(ToolChip(name, shown_args, result, tools.entry_to_line(entry)))
    return chips


# ---------------------------------------------------------------- CSV cells and edit boxes


def from_csv_cell(name: str, cell: str) -> Any:
    """Decode a CSV cell to the field's value for clean_field; ItemError names the field."""
    if name in LIST_FIELDS:
        return list_from_csv(name, cell)
    if name == "variables":
        return variables_from_csv(name, cell)
    if name == "expected_tools":
        return tools_from_text(name, cell, "cell line")
    return cell


def to_text(field: str, value: Any) -> str:
    """How a stored value appears in the editor's edit box."""
    if field in LIST_FIELDS:
        return list_to_text(value)
    if field == "variables":
        return variables_to_text(value)
    if field == "expected_tools":
        return tools.to_text(value)
    if field == "unanswerable":
        return "true" if value else "false"
    return value or ""


def from_text(field: str, text: str) -> Any:
    """An edit box back to a value for clean_field; ItemError names the field."""
    if field in LIST_FIELDS:
        return list_from_text(field, text)
    if field == "variables":
        return variables_from_text(field, text)
    if field == "expected_tools":
        return tools_from_text(field, text, "line")
    if field == "unanswerable":
        return text.strip().lower() in {"true", "on", "1", "yes"}
    return text
