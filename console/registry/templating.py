"""Prompt templates: `{{ variable }}` placeholders only, so any client language can render them.

No filters, no logic, no other braces syntax: `{{ name }}` where name is an identifier. A lone
`{` or `}` is ordinary text (prompts often contain JSON examples).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TAG = re.compile(r"\{\{(.*?)\}\}|\{%|%\}|\{\{|\}\}", re.DOTALL)


@dataclass(frozen=True)
class Problem:
    field: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.field}, line {self.line}, column {self.column}: {self.message}"


@dataclass
class Analysis:
    used: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # name → [(field, line)]
    problems: list[Problem] = field(default_factory=list)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def analyse(templates: dict[str, str], analysis: Analysis | None = None) -> Analysis:
    """Find placeholders and malformed tags in each named template."""
    result = analysis or Analysis()
    for name, text in templates.items():
        for match in TAG.finditer(text or ""):
            line, column = _position(text, match.start())
            token = match.group(0)
            if match.group(1) is None:
                if token == "{%" or token == "%}":
                    msg = f"'{token}' tags are not supported: use {{{{ name }}}} placeholders only"
                elif token == "{{":
                    msg = "'{{' is never closed with '}}'"
                else:
                    msg = "'}}' has no opening '{{'"
                result.problems.append(Problem(name, line, column, msg))
                continue
            inner = match.group(1).strip()
            if not IDENTIFIER.match(inner):
                result.problems.append(
                    Problem(
                        name,
                        line,
                        column,
                        f"'{token}' is not a placeholder: write {{{{ name }}}} with a plain "
                        "variable name (letters, digits, underscore; no filters or expressions)",
                    )
                )
                continue
            result.used.setdefault(inner, []).append((name, line))
    return result


class MissingVariables(ValueError):
    """Placeholders with no value; `names` in order of first appearance."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        super().__init__(f"no value for {', '.join(self.names)}")


def placeholders(text: str) -> list[str]:
    """The variable names used in a template, each once, in order of first appearance."""
    names: dict[str, None] = {}
    for match in TAG.finditer(text or ""):
        inner = (match.group(1) or "").strip()
        if IDENTIFIER.match(inner):
            names.setdefault(inner)
    return list(names)


def render(text: str, values: dict[str, str]) -> str:
    """Substitute known values; unknown placeholders stay as written (for previews)."""

    def substitute(match: re.Match) -> str:
        if match.group(1) is None:
            return match.group(0)
        inner = match.group(1).strip()
        if IDENTIFIER.match(inner) and inner in values:
            return str(values[inner])
        return match.group(0)

    return TAG.sub(substitute, text or "")


def render_strict(text: str, values: dict[str, str]) -> str:
    """Substitute every placeholder, or raise MissingVariables naming all that have no value:
    what is sent to a model never contains a `{{ name }}` left over."""
    missing = [name for name in placeholders(text) if name not in values]
    if missing:
        raise MissingVariables(missing)
    return render(text, values)
