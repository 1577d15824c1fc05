"""JSON from outside (API bodies, imported files, editor cells), parsed with a depth limit.

Python's json module recurses once per nesting level: a body of 100,000 `[` raises
RecursionError, and a value a few hundred levels deep parses but then breaks whatever walks it
next (canonical JSON, hashing, templates). So the nesting is measured before parsing, on the
text's brackets outside strings, which needs no recursion at all; only text within the limit
reaches json.loads. Lone UTF-16 surrogates (`"\\ud800"`) are refused too: they parse into Python
strings that no database, hash or page can encode.

Every refusal is a `JSONInputError` (a ValueError) that says where: line and column, and for
nesting the path to the value (`events[3].metadata`), so callers can name the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

# Deep enough for any configuration or dataset cell a person writes; shallow enough that every
# recursive walk of the parsed value (canonical JSON, diff, templates) stays far from Python's
# recursion limit whatever the call stack above it.
MAX_DEPTH = 64

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]', re.DOTALL)
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# A \u escape of a surrogate; whether it is escaped itself, or paired, is checked after parsing.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONInputError(ValueError):
    """JSON refused: malformed, nested too deeply, or not encodable text. `path` is the list of
    keys and indexes leading to the problem when known (nesting), else empty."""

    def __init__(self, message: str, *, line: int = 0, column: int = 0, path: list | None = None):
        self.message = message
        self.line = line
        self.column = column
        self.path = path or []
        where = f" at line {line}, column {column}" if line else ""
        super().__init__(f"{message}{where}")


def _no_constants(name: str) -> Any:
    raise JSONInputError(f"{name} is not a JSON number")


def parse(text: str | bytes, *, max_depth: int = MAX_DEPTH, constants: bool = False) -> Any:
    """json.loads for untrusted text. Refuses nesting deeper than `max_depth`, lone surrogates
    and (unless `constants`) NaN/Infinity, which JSON does not have: a caller that wants to name
    the field holding them passes constants=True and checks numbers itself."""
    if isinstance(text, bytes | bytearray):
        raw = bytes(text)
        encoding = json.detect_encoding(raw)
        text = raw.decode(encoding)
        if encoding not in {"utf-8", "utf-8-sig"}:  # the scan below reads UTF-8 bytes
            raw = text.encode("utf-8", "surrogatepass")
    else:
        raw = text.encode("utf-8", "surrogatepass")
    if _deeper_than(raw, max_depth):
        raise _depth_error(text, max_depth)
    try:
        value = json.loads(text, parse_constant=None if constants else _no_constants)
    except json.JSONDecodeError as exc:
        raise JSONInputError(
            f"malformed JSON: {exc.msg}", line=exc.lineno, column=exc.colno
        ) from None
    except JSONInputError:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise JSONInputError(f"malformed JSON: {exc}") from None
    except RecursionError:  # not reachable within MAX_DEPTH; kept for callers raising the limit
        raise JSONInputError(f"nested deeper than {max_depth} levels") from None
    if b"\\" in raw and _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(value)
    return value


def _deeper_than(raw: bytes, max_depth: int) -> bool:
    """Whether any value nests deeper than `max_depth`, counting brackets outside strings. Exact
    for valid JSON; for broken text, exact up to where a parser would stop.

    Byte operations only (this runs on every usage batch): drop escaped backslashes, then
    escaped quotes, so every quote left delimits a string; keep only brackets and quotes; drop
    adjacent quote pairs (which keeps every bracket's side of the string boundaries: the count
    of quotes before it changes by two); drop what is left between quotes; sum the steps."""
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    if len(skeleton) <= max_depth:
        return False
    return max(accumulate(map(_STEP.__getitem__, skeleton))) > max_depth


def _depth_error(text: str, max_depth: int) -> JSONInputError:
    """Where the nesting first goes past the limit, as line, column and path (the slow walk
    runs only for text already refused)."""
    stack: list[list] = []  # [kind, key or index] per open container
    last_string = None
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            last_string = token
        elif token == ":":
            if stack and last_string is not None:
                stack[-1][1] = _key(last_string)
        elif token == ",":
            if stack:
                stack[-1][1] = stack[-1][1] + 1 if stack[-1][0] == "[" else None
        elif token in "[{":
            stack.append([token, 0 if token == "[" else None])
            if len(stack) > max_depth:
                position = match.start()
                line = text.count("\n", 0, position) + 1
                column = position - text.rfind("\n", 0, position)
                path = [entry[1] for entry in stack[:-1]]
                return JSONInputError(
                    f"nested deeper than {max_depth} levels (at {format_path(path)})",
                    line=line,
                    column=column,
                    path=path,
                )
        elif stack:
            stack.pop()
    return JSONInputError(f"nested deeper than {max_depth} levels")


def _key(token: str) -> str:
    try:
        return json.loads(token)
    except ValueError:
        return token[1:-1]


def format_path(path: list) -> str:
    """events[3].metadata[0] — shortened after a few steps, for messages."""
    shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[:6]).lstrip(".")
    return (shown or "the top level") + ("…" if len(path) > 6 else "")


def _strings(value: Any) -> Iterator[tuple[list, str]]:
    """Every string in the value (keys included) with the path to it, without recursion."""
    pending: list[tuple[list, Any]] = [([], value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            for key, child in item.items():
                pending.append((path, key))
                pending.append(([*path, key], child))
        elif isinstance(item, list):
            pending.extend(([*path, n], child) for n, child in enumerate(item))


def _refuse_lone_surrogates(value: Any) -> None:
    for path, text in _strings(value):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONInputError(
                f"a lone UTF-16 surrogate (\\ud800-\\udfff) at {format_path(path)} is not a "
                "character",
                path=path,
            ) from None
