"""Plotly figure specs (plain JSON) for the cost dashboard; static/js/charts.js draws them.

Plotly renders trace names, labels and hover text as its own small HTML (<a href>, <b>, <br>),
so a model or feature name a usage key reported could put a live link into a legend. Every
label that comes from data goes through `_text`, which escapes it: Plotly shows the entities
as the characters they stand for, as plain text.
"""

from __future__ import annotations

import html

from console.usage.selectors import Dashboard

LAYOUT = {
    "margin": {"t": 36, "l": 50, "r": 10, "b": 40},
    "height": 300,
    "legend": {"orientation": "h", "y": -0.2},
}


def _text(value) -> str:
    return html.escape(str(value))


def _f(value) -> float:
    return round(float(value or 0), 6)


def figures(board: Dashboard) -> dict:
    days = [d["day"].isoformat() for d in board.days]
    spend = {
        "data": [
            {
                "type": "bar",
                "name": "Spend ($)",
                "x": days,
                "y": [_f(d["cost"]) for d in board.days],
                "marker": {"color": "#5b7fe0"},
            },
        ],
        "layout": {
            **LAYOUT,
            "title": {"text": "Daily spend vs budget"},
            "yaxis": {"tickprefix": "$"},
        },
    }
    if board.budget_line is not None:
        spend["data"].append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Daily budget",
                "x": days,
                "y": [_f(board.budget_line)] * len(days),
                "line": {"color": "#b42318", "dash": "dash"},
            }
        )
    anomalous = {a["day"].isoformat() for a in board.anomalies}
    if anomalous:
        spend["data"].append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "Anomaly",
                "x": [d for d in days if d in anomalous],
                "y": [_f(x["cost"]) for x in board.days if x["day"].isoformat() in anomalous],
                "marker": {"color": "#b42318", "size": 11, "symbol": "diamond"},
            }
        )
    per_request = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "Cost per request",
                "x": days,
                "y": [
                    _f(d["cost_per_request"]) if d["cost_per_request"] else None for d in board.days
                ],
                "line": {"color": "#137a4b"},
            },
        ],
        "layout": {**LAYOUT, "title": {"text": "Cost per request"}, "yaxis": {"tickprefix": "$"}},
    }
    breakdown = {}
    for name, rows in board.breakdowns.items():
        breakdown[name] = {
            "data": [
                {
                    "type": "pie",
                    "hole": 0.5,
                    "labels": [_text(r["label"]) for r in rows],
                    "values": [_f(r["cost"]) for r in rows],
                    "textinfo": "percent",
                    # Inside the slice, hidden where it does not fit: outside labels of thin
                    # slices collided with the legend in the narrow cards.
                    "textposition": "inside",
                    "sort": False,
                }
            ],
            "layout": {
                **LAYOUT,
                "height": 300,
                "title": {"text": f"By {name}"},
                "showlegend": True,
                "uniformtext": {"minsize": 10, "mode": "hide"},
                "legend": {"orientation": "h", "x": 0, "y": -0.05},
            },
        }
    savings = {
        "data": [
            {
                "type": "bar",
                "name": "Cache savings",
                "x": days,
                "y": [_f(d["savings"]) for d in board.days],
                "marker": {"color": "#7fc8a9"},
            },
            {
                "type": "bar",
                "name": "Eval spend",
                "x": days,
                "y": [_f(d["eval_cost"]) for d in board.days],
                "marker": {"color": "#c9a2e8"},
            },
        ],
        "layout": {
            **LAYOUT,
            "barmode": "group",
            "title": {"text": "Cache savings and eval spend"},
            "yaxis": {"tickprefix": "$"},
        },
    }
    return {
        "spend": spend,
        "per_request": per_request,
        "savings": savings,
        **{f"by_{k}": v for k, v in breakdown.items()},
    }
