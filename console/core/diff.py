"""Diff two versions' contents: field level for JSON values, line level for text.

The result is shaped for a side-by-side view: one `FieldDiff` per leaf path, and for text
fields a list of rows pairing the old line with the new one.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

MISSING = object()


@dataclass(frozen=True)
class LineRow:
    tag: str  # equal | replace | delete | insert
    old_no: int | None
    old: str
    new_no: int | None
    new: str


@dataclass
class FieldDiff:
    path: str
    status: str  # same | added | removed | changed
    before: Any = None
    after: Any = None
    rows: list[LineRow] = field(default_factory=list)

    @property
    def is_text(self) -> bool:
        return bool(self.rows)

    @property
    def changed(self) -> bool:
        return self.status != "same"

    def display(self, value: Any) -> str:
        if value is None and self.status in {"added", "removed"}:
            return ""
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    @property
    def before_display(self) -> str:
        return "" if self.status == "added" else self.display(self.before)

    @property
    def after_display(self) -> str:
        return "" if self.status == "removed" else self.display(self.after)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key in value:
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix or "(value)": value}


def line_rows(old: str, new: str) -> list[LineRow]:
    a, b = old.splitlines(), new.splitlines()
    rows: list[LineRow] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows.extend(
                LineRow("equal", i + 1, a[i], j + 1, b[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            )
            continue
        span = max(i2 - i1, j2 - j1)
        for k in range(span):
            i, j = i1 + k, j1 + k
            has_old, has_new = i < i2, j < j2
            row_tag = "replace" if has_old and has_new else ("delete" if has_old else "insert")
            rows.append(
                LineRow(
                    row_tag,
                    i + 1 if has_old else None,
                    a[i] if has_old else "",
                    j + 1 if has_new else None,
                    b[j] if has_new else "",
                )
            )
    return rows


def diff_contents(old: dict, new: dict) -> list[FieldDiff]:
    """Every leaf path of either side, in a stable order, with its status.

    Strings are diffed line by line (a one-line string gives a single replace row), so prompt
    templates read as text while numbers and lists read as values.
    """
    flat_old, flat_new = _flatten(old or {}), _flatten(new or {})
    paths = list(flat_old) + [p for p in flat_new if p not in flat_old]
    diffs: list[FieldDiff] = []
    for path in paths:
        before, after = flat_old.get(path, MISSING), flat_new.get(path, MISSING)
        if before is MISSING:
            status = "added"
        elif after is MISSING:
            status = "removed"
        else:
            status = "same" if before == after else "changed"
        b = None if before is MISSING else before
        a = None if after is MISSING else after
        item = FieldDiff(path, status, b, a)
        text_like = isinstance(b, str | type(None)) and isinstance(a, str | type(None))
        if text_like and ("\n" in (b or "") or "\n" in (a or "")):
            item.rows = line_rows(b or "", a or "")
        diffs.append(item)
    return diffs
