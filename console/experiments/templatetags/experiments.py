"""Formatting of experiment figures: rates as percents, cost in dollars, latency in ms."""

from __future__ import annotations

from datetime import datetime

from django import template

register = template.Library()

RATES = {"error_rate", "thumbs_up_rate", "hallucination_rate", "refusal_rate"}


@register.filter
def figure(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    if metric in RATES:
        return f"{value * 100:.1f}%"
    if metric == "cost_per_request":
        return f"${value:.6f}"
    if metric.startswith("latency"):
        return f"{value:,.0f} ms"
    return f"{value:.3f}"


@register.filter
def difference(value: float | None, metric: str) -> str:
    """A difference, signed; rates in percentage points."""
    if value is None:
        return "—"
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    size = abs(value)
    if metric in RATES:
        return f"{sign}{size * 100:.1f} pt"
    if metric == "cost_per_request":
        return f"{sign}${size:.6f}"
    if metric.startswith("latency"):
        return f"{sign}{size:,.0f} ms"
    return f"{sign}{size:.3f}"


@register.filter
def cell(cells: dict, variant: str) -> dict:
    return cells.get(variant) or {}


@register.filter
def when(value: str) -> str:
    """An ISO 8601 time from a stored report, as "Dec 1, 13:00"."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return value or "—"
    return f"{moment:%b} {moment.day}, {moment:%H:%M}"
