"""CSV that a spreadsheet opens as data, never as formulas ("CSV injection", OWASP).

A cell beginning with =, +, -, @, tab or carriage return is a formula to Excel, LibreOffice
and Google Sheets: `=HYPERLINK(...)` leaks data on a click, `=cmd|...` asks to run a program.
Every CSV export writes cells through `writer`, which prefixes such a cell with a `'` (shown as
text, not kept in the cell by spreadsheets). `restore` undoes it on import, so an export
imported again is unchanged: the prefix goes onto any cell of quotes followed by a trigger
(`'=x` is written `''=x`), and exactly one quote comes off such a cell.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any

_RUNS_AS_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def neutralise(value: Any) -> Any:
    """The cell as written: text a spreadsheet would run gets a leading quote; other values
    (numbers, dates) are ours and pass unchanged."""
    if isinstance(value, str) and _RUNS_AS_FORMULA.match(value):
        return "'" + value
    return value


def restore(cell: str) -> str:
    """A cell as read back from one of our exports: the inverse of `neutralise`."""
    if cell.startswith("'") and _RUNS_AS_FORMULA.match(cell, 1):
        return cell[1:]
    return cell


class SafeWriter:
    """csv.writer whose rows are neutralised cell by cell."""

    def __init__(self, stream: Any, **options: Any):
        self._writer = csv.writer(stream, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([neutralise(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(stream: Any, **options: Any) -> SafeWriter:
    return SafeWriter(stream, **options)
