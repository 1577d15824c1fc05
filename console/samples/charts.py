"""Plotly figure specs for the quality page (static/js/charts.js draws them). Version labels
come from what applications reported, so they are escaped (see console.usage.charts)."""

from __future__ import annotations

import html
from collections import defaultdict

from console.usage.charts import LAYOUT


def _series(rows, value) -> dict[str, tuple[list[str], list[float | None]]]:
    lines: dict[str, tuple[list[str], list[float | None]]] = defaultdict(lambda: ([], []))
    for row in rows:
        figure = value(row)
        if figure is None:
            continue
        days, values = lines[html.escape(row.version)]
        days.append(row.day.isoformat())
        values.append(round(figure, 4))
    return lines


def _figure(rows, title: str, value, percent: bool = False) -> dict:
    return {
        "data": [
            {"type": "scatter", "mode": "lines+markers", "name": name, "x": x, "y": y}
            for name, (x, y) in sorted(_series(rows, value).items())
        ],
        "layout": {
            **LAYOUT,
            "title": {"text": title},
            "yaxis": {"range": [0, 1.05], **({"tickformat": ".0%"} if percent else {})},
        },
    }


def quality(rows) -> dict:
    return {
        "fig-faithfulness": _figure(rows, "Faithfulness (judged mean)", lambda r: r.faithfulness),
        "fig-relevance": _figure(rows, "Answer relevance (judged mean)", lambda r: r.relevance),
        "fig-hallucination": _figure(
            rows, "Hallucination rate (faithfulness < 0.5)", lambda r: r.hallucination_rate, True
        ),
        "fig-refusal": _figure(rows, "Refusal rate", lambda r: r.refusal_rate, True),
        "fig-thumbs-down": _figure(
            rows, "Thumbs down (of rated)", lambda r: r.thumbs_down_rate, True
        ),
    }
