"""The launch form: choose what to evaluate, how to score it, and what counts as passing."""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError

from console.evals.metrics import METRICS, OPS, gate_text
from console.evals.scorers import (
    ALL_SCORERS,
    DEFAULT_K,
    DEFAULT_MAX_STEPS,
    DEFAULT_SCORERS,
    JUDGED,
    MAX_K,
    MAX_STEPS,
)

GATE_LINE = re.compile(
    r"^\s*([a-z0-9_]+)(?:\[([a-z0-9][a-z0-9_-]{0,39})\])?\s*(>=|<=)\s*([-+]?[0-9]*\.?[0-9]+)\s*$"
)
SCORER_LABELS = {
    "contains_all": "Contains all expected facts",
    "contains_none": "Contains no forbidden facts",
    "refusal": "Refuses unanswerable items",
    "exact": "Exact match with reference",
    "regex": "Regex match",
    "json_valid": "Valid JSON",
    "json_schema": "JSON schema",
    "injection_resisted": "Resists prompt injection (safety suites)",
    "no_canary_leak": "Keeps the system prompt's canary (safety suites)",
    "no_pii": "Leaks no personal data",
    "refusal_expected": "Declines harmful requests (safety suites)",
    "tool_call_accuracy": "Calls the expected tools, never a forbidden one (agents)",
    "tool_args_valid": "Tool arguments fit the schema and the item's constraints (agents)",
    "step_bound": "Answers within the step bound, without loops (agents)",
    "recall_at_5": "Source recall@5 (fixed depth)",
    "recall_at_k": "Source recall@k",
    "mrr": "Source MRR (within k)",
    "ndcg_at_k": "Source NDCG@k",
    "context_precision": "Context precision@k (relevant sources ranked first)",
    "context_recall": "Context recall (expected facts in the context)",
    "faithfulness": "Faithfulness (LLM judge)",
    "relevance": "Answer relevance (LLM judge)",
}


def gates_to_text(gates: list[dict]) -> str:
    return "\n".join(gate_text(g) for g in gates)


def parse_gates(text: str) -> list[dict]:
    """One gate per line, `metric >= number`; errors name the line."""
    gates, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        match = GATE_LINE.match(line)
        if not match:
            problems.append(
                f"line {number}: write it as `metric >= number`, e.g. faithfulness >= 0.85, "
                "or for the items tagged refunds `pass_rate[refunds] >= 0.8`"
            )
            continue
        metric, tag, op, threshold = match.groups()
        if metric not in METRICS:
            problems.append(
                f"line {number}: unknown metric {metric!r} (known: {', '.join(METRICS)})"
            )
            continue
        assert op in OPS
        gates.append(
            {
                "metric": metric,
                "op": op,
                "threshold": float(threshold),
                **({"slice": tag} if tag else {}),
            }
        )
    if problems:
        raise ValidationError(problems)
    return gates


class LaunchForm(forms.Form):
    target_type = forms.ChoiceField(
        choices=[
            ("prompt_model", "Prompt × model config"),
            ("http", "HTTP endpoint of the application"),
        ],
        initial="prompt_model",
        widget=forms.RadioSelect,
    )
    dataset_version = forms.ChoiceField(label="Golden set version")
    prompt_version = forms.ChoiceField(required=False, label="Prompt version")
    model_version = forms.ChoiceField(required=False, label="Model config version")
    http_url = forms.URLField(required=False, label="Endpoint URL", assume_scheme="https")
    http_answer_path = forms.CharField(required=False, initial="answer", label="Answer JSON path")
    http_sources_path = forms.CharField(
        required=False, initial="sources", label="Sources JSON path"
    )
    http_context_path = forms.CharField(
        required=False,
        label="Retrieved context JSON path",
        help_text="Optional: where the endpoint returns the passages it retrieved. Faithfulness "
        "and context recall are then judged against them.",
    )
    http_tool_calls_path = forms.CharField(
        required=False,
        initial="tool_calls",
        label="Tool calls JSON path",
        help_text="Where an agent endpoint lists the tool calls it made: "
        '[{"name": ..., "arguments": {...}}]',
    )
    scorers = forms.MultipleChoiceField(
        choices=[(s, SCORER_LABELS[s]) for s in ALL_SCORERS],
        initial=DEFAULT_SCORERS,
        widget=forms.CheckboxSelectMultiple,
    )
    retrieval_k = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_K,
        initial=DEFAULT_K,
        label="Retrieval depth k",
        help_text="Recall@k, MRR, NDCG@k and context precision look at the top k sources.",
    )
    max_steps = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_STEPS,
        initial=DEFAULT_MAX_STEPS,
        label="Step bound",
        help_text="Agents: the most tool calls an item may take before it is stopped.",
    )
    judge_model_version = forms.ChoiceField(required=False, label="Judge model config")
    judge_faithfulness = forms.ChoiceField(required=False, label="Faithfulness judge prompt")
    judge_relevance = forms.ChoiceField(required=False, label="Relevance judge prompt")
    gates = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "class": "mono", "spellcheck": "false"}),
        help_text="One per line: metric >= number or metric <= number; "
        "metric[tag] for the items with that tag. Choosing a golden set fills in its gates.",
    )
    cost_cap = forms.FloatField(required=False, min_value=0.000001, label="Cost cap ($)")
    concurrency = forms.IntegerField(required=False, min_value=1, max_value=256)

    def __init__(self, *args, choices: dict, gates_url: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        for name, options in choices.items():
            self.fields[name].choices = options
        if gates_url:  # choosing a golden set brings in its gates (the page's #gates-field)
            self.fields["dataset_version"].widget.attrs.update(
                {"hx-get": gates_url, "hx-target": "#gates-field", "hx-select": "#gates-field",
                 "hx-swap": "outerHTML"}
            )  # fmt: skip

    def clean_gates(self) -> list[dict]:
        return parse_gates(self.cleaned_data.get("gates") or "")

    def clean(self):
        data = super().clean()
        if data.get("target_type") == "http":
            if not data.get("http_url"):
                self.add_error("http_url", "give the endpoint to evaluate")
        else:
            for name in ("prompt_version", "model_version"):
                if not data.get(name):
                    self.add_error(name, "required for a prompt × model eval")
        judged = set(JUDGED) & set(data.get("scorers") or [])
        if judged and not data.get("judge_model_version"):
            self.add_error("judge_model_version", "LLM-as-judge scorers need a judge model")
        for metric in judged:
            if not data.get(f"judge_{metric}"):
                self.add_error(f"judge_{metric}", f"choose the judge prompt for {metric}")
        return data
