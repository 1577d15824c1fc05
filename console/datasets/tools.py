"""Expected tool calls: what an agent item says the agent must (or must not) call.

An item's `expected_tools` is a list of entries, stored as JSON:

    {"name": "lookup_order", "args": {"order_id": "A-1042"}, "result": {"status": "shipped"}}
    {"name": "issue_refund", "forbidden": true}

- `name` (required): the tool, as the agent names it (letters, digits, `_` and `-`, up to 64).
- `args`: constraints on the call's arguments, by argument name. An argument not named is not
  checked. A constraint is a JSON value the argument must equal (text compared case-insensitively
  and trimmed), or one operator:
  `{"regex": "^A-\\d+$"}`, `{"contains": "refund"}`, `{"one_of": ["eu", "us"]}`,
  `{"type": "integer"}` (string, number, integer, boolean, array, object, null),
  `{"any": true}` (present, any value), `{"equals": {...}}` (a literal object).
- `result`: what the tool answers when a model under evaluation calls it (Airlock plays the
  tool); a call to a tool with no result gets an error saying so.
- `forbidden: true`: the agent must not call this tool at all (no args or result then).

In the editor and in CSV cells an entry is one line: the name, then optionally the args object,
then optionally `->` and the result; `!name` is a forbidden tool:

    lookup_order {"order_id": "A-1042"} -> {"status": "shipped"}
    !issue_refund

A JSON array is accepted too. Errors are ValueErrors whose message names the entry at fault.
"""

from __future__ import annotations

import json
import re
from typing import Any

from console.core.jsoninput import JSONInputError, parse

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
OPERATORS = ("regex", "contains", "one_of", "type", "any", "equals")
ENTRY_KEYS = ("name", "args", "result", "forbidden")
MAX_ENTRIES = 50
EXAMPLE = 'lookup_order {"order_id": "A-1042"}'
_decoder = json.JSONDecoder()


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f'"{text}"' if len(text) <= 60 else f'"{text[:59]}…"'


def _operator(constraint: Any) -> str | None:
    """The operator a constraint uses, or None when it is a value to equal."""
    if isinstance(constraint, dict) and len(constraint) == 1:
        (key,) = constraint
        if key in OPERATORS:
            return key
    return None


def constraint_problem(constraint: Any) -> str | None:
    """What is wrong with one argument constraint, or None."""
    op = _operator(constraint)
    if op is None:
        if isinstance(constraint, dict):
            return (
                f"{_shown(constraint)} is an object: use one operator "
                f'({", ".join(OPERATORS)}), or {{"equals": {{…}}}} for a literal object'
            )
        return None
    value = constraint[op]
    if op == "regex":
        if not isinstance(value, str):
            return "regex must be text"
        try:
            re.compile(value)
        except re.error as exc:
            return f"regex {_shown(value)} does not compile: {exc}"
    elif op == "contains" and not isinstance(value, str):
        return "contains must be text"
    elif op == "one_of" and not (isinstance(value, list) and value):
        return "one_of must be a non-empty list of values"
    elif op == "type" and value not in TYPES:
        return f"type must be one of {', '.join(TYPES)}"
    elif op == "any" and value is not True:
        return "any must be true"
    return None


def clean_entry(raw: Any, where: str) -> dict:
    """One entry in its stored form (keys in order, empty parts left out); ValueError says
    `where` ("entry 2") and what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: {_shown(raw)} is not a tool call — e.g. {EXAMPLE}")
    unknown = [k for k in raw if k not in ENTRY_KEYS]
    if unknown:
        raise ValueError(
            f"{where}: unknown key {_shown(unknown[0])} (expected {', '.join(ENTRY_KEYS)})"
        )
    name = raw.get("name")
    if not name:
        raise ValueError(f"{where}: the tool's name is missing — e.g. {EXAMPLE}")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(
            f"{where}: {_shown(name)} is not a tool name (letters, digits, _ and -, up to 64)"
        )
    forbidden = raw.get("forbidden", False)
    if not isinstance(forbidden, bool):
        raise ValueError(f"{where} ({name}): forbidden must be true or false")
    args = {} if raw.get("args") is None else raw["args"]
    if not isinstance(args, dict):
        raise ValueError(f"{where} ({name}): args must be an object of argument constraints")
    if forbidden and (args or "result" in raw):
        raise ValueError(f"{where} ({name}): a forbidden tool takes no args or result")
    for arg, constraint in args.items():
        problem = constraint_problem(constraint)
        if problem:
            raise ValueError(f"{where} ({name}), argument {arg}: {problem}")
    entry: dict[str, Any] = {"name": name}
    if args:
        entry["args"] = args
    if "result" in raw:
        entry["result"] = raw["result"]
    if forbidden:
        entry["forbidden"] = True
    return entry


def clean(value: Any) -> list[dict]:
    """The stored form of an item's expected tool calls; ValueError names the entry."""
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise ValueError(f"{_shown(value)} is not a list of tool calls — e.g. [{{...}}]")
    if len(value) > MAX_ENTRIES:
        raise ValueError(f"{len(value)} tool calls; an item may expect at most {MAX_ENTRIES}")
    entries = [clean_entry(raw, f"entry {n}") for n, raw in enumerate(value, start=1)]
    expected = {e["name"] for e in entries if not e.get("forbidden")}
    both = [e["name"] for e in entries if e.get("forbidden") and e["name"] in expected]
    if both:
        raise ValueError(
            f"{both[0]} is both expected and never to be called (!{both[0]}): keep one"
        )
    return entries


# ---------------------------------------------------------------- the line form


def entry_to_line(entry: dict) -> str:
    if entry.get("forbidden"):
        return f"!{entry['name']}"
    line = entry["name"]
    if entry.get("args"):
        line += " " + json.dumps(entry["args"], ensure_ascii=False)
    if "result" in entry:
        line += " -> " + json.dumps(entry["result"], ensure_ascii=False)
    return line


def to_text(entries: list[dict] | None) -> str:
    """Entries as edit-box text, one per line (reads back unchanged through from_text)."""
    return "\n".join(entry_to_line(e) for e in entries or [])


def _json_at(text: str, where: str, what: str) -> tuple[Any, str]:
    try:
        value, end = _decoder.raw_decode(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {what} is not valid JSON ({exc.msg})") from None
    try:  # the same depth and encoding limits as every other JSON Airlock reads
        parse(text[:end])
    except JSONInputError as exc:
        raise ValueError(f"{where}: {what}: {exc.message}") from None
    return value, text[end:].strip()


def line_to_entry(line: str, where: str) -> dict:
    """`name {args} -> result`, or `!name`, to an entry (cleaned)."""
    text = line.strip()
    if text.startswith("!"):
        return clean_entry({"name": text[1:].strip(), "forbidden": True}, where)
    match = re.match(r"[^\s{]*", text)
    name, rest = match.group(), text[match.end() :].strip()
    raw: dict[str, Any] = {"name": name}
    if rest.startswith("{"):
        raw["args"], rest = _json_at(rest, where, "the args")
    if rest.startswith("->"):
        raw["result"], rest = _json_at(rest[2:].strip(), where, "the result")
    if rest:
        raise ValueError(
            f"{where}: {_shown(text)} is not `name {{args}} -> result` — e.g. {EXAMPLE}"
        )
    return clean_entry(raw, where)


def from_text(text: str, unit: str = "line") -> list[dict]:
    """Edit-box (or CSV cell) text to entries: a JSON array, else one entry per line."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            value = parse(stripped)
        except JSONInputError as exc:
            raise ValueError(
                f"{exc} — text starting with [ is a JSON array of tool calls; or write one "
                f"per line, e.g. {EXAMPLE}"
            ) from None
        return clean(value)
    # Numbered as the curator sees the box: blank lines, leading ones too, count.
    lines = list(enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1))
    entries = [line_to_entry(line, f"{unit} {n}") for n, line in lines if line.strip()]
    return clean(entries)


# ---------------------------------------------------------------- matching calls


def satisfies(constraint: Any, value: Any, present: bool = True) -> bool:
    """Whether an argument value meets a constraint (`present` False: the argument is absent)."""
    if not present:
        return False
    op = _operator(constraint)
    if op is None:
        return _equal(constraint, value)
    expected = constraint[op]
    if op == "regex":
        return isinstance(value, str) and re.search(expected, value) is not None
    if op == "contains":
        return isinstance(value, str) and expected.lower() in value.lower()
    if op == "one_of":
        return any(_equal(option, value) for option in expected)
    if op == "type":
        return TYPES[expected](value)
    if op == "equals":
        return value == expected
    return True  # any


def _equal(expected: Any, value: Any) -> bool:
    if isinstance(expected, str) and isinstance(value, str):
        return " ".join(expected.lower().split()) == " ".join(value.lower().split())
    if isinstance(expected, bool) or isinstance(value, bool):
        return expected is value
    return expected == value


def unmet(entry: dict, arguments: Any) -> list[str]:
    """The argument names whose constraints a call's arguments do not meet."""
    args = arguments if isinstance(arguments, dict) else {}
    return [
        name
        for name, constraint in (entry.get("args") or {}).items()
        if not satisfies(constraint, args.get(name), name in args)
    ]
