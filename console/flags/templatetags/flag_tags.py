"""Small filters for the flag pages: show JSON scalars the way the editor parses them back."""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def plain(value: Any) -> str:
    """A value as typed in an input: strings as is, everything else as JSON (true, 3, {...})."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


@register.filter
def condition_text(condition: dict | None) -> str:
    """The editor's value box for a condition: a list joined by commas, or the one value."""
    if not condition:
        return ""
    if "values" in condition:
        return ", ".join(plain(v) for v in condition.get("values") or [])
    return plain(condition.get("value"))


@register.filter
def weight_of(serve: dict | None, variant: str) -> str:
    for part in (serve or {}).get("rollout") or []:
        if part.get("variant") == variant:
            weight = part.get("weight", 0)
            return f"{weight:g}" if isinstance(weight, int | float) else str(weight)
    return "0"


@register.filter
def operator_label(operator: str) -> str:
    from console.flags.evaluation import OPERATORS

    return OPERATORS.get(operator, operator)
