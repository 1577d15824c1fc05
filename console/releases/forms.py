"""The release policy form: plain fields for people, one content dict for the service."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from console.evals import metrics as eval_metrics
from console.evals.forms import gates_to_text
from console.releases import checklists


class PolicyForm(forms.Form):
    base = forms.IntegerField(widget=forms.HiddenInput, min_value=0)
    protected = forms.BooleanField(required=False)
    required_approvals = forms.IntegerField(min_value=0, max_value=10, initial=0)
    eval_gate = forms.BooleanField(required=False, label="Eval gate")
    datasets = forms.CharField(
        required=False,
        label="Golden sets",
        help_text="Keys of the golden sets evidence must come from, one per line.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    gates = forms.CharField(
        required=False,
        help_text="One gate per line: metric, operator (>= or <=), threshold — e.g. "
        "“pass_rate >= 0.8”; add “on <golden set>” for a gate that holds on that golden set "
        "only, e.g. “injection_success_rate <= 0.02 on support-safety”. Metrics: "
        + ", ".join(eval_metrics.METRICS)
        + ".",
        widget=forms.Textarea(attrs={"rows": 7}),
    )
    max_error_rate = forms.FloatField(
        min_value=0, max_value=1, initial=0.1, label="Max error rate (0–1)"
    )
    breakers = forms.CharField(
        required=False,
        label="Breaker actions allowed here",
        help_text="One <flag>:<variant> per line: a budget breaker may move that flag to that "
        "variant here. Kill switches to a flag's off variant are always allowed.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    min_judge_kappa = forms.FloatField(
        required=False,
        min_value=-1,
        max_value=1,
        label="Trust LLM-judge gates from κ",
        help_text="Optional. A gate on faithfulness or relevance counts only when its judge agrees "
        "with people's reviews on that golden set at least this much (Cohen's κ; 0.6 is "
        "substantial).",
    )
    min_judge_reviews = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=10_000,
        initial=20,
        label="…over at least this many reviews",
    )
    checklist = forms.CharField(
        required=False,
        label="Readiness checklist",
        help_text="One item per line: “[required] text” or “[optional] text”, and “(auto: check)” "
        "for what Airlock verifies itself (" + ", ".join(checklists.AUTO_CHECKS) + "). Every "
        "promotion request here carries it; required items block apply.",
        widget=forms.Textarea(attrs={"rows": 6}),
    )
    message = forms.CharField(
        required=False, max_length=500, label="Why (kept with the version and the audit event)"
    )

    @staticmethod
    def initial_from(content: dict[str, Any], number: int) -> dict[str, Any]:
        return {
            "base": number,
            "protected": content.get("protected"),
            "required_approvals": content.get("required_approvals", 0),
            "eval_gate": content.get("eval_gate"),
            "datasets": "\n".join(content.get("datasets", [])),
            "gates": gates_to_text(content.get("gates", [])),
            "max_error_rate": content.get("max_error_rate", 0.1),
            "breakers": "\n".join(content.get("breakers", [])),
            "checklist": checklists.to_text(content.get("checklist", [])),
            "min_judge_kappa": (
                "" if content.get("min_judge_kappa") is None else content["min_judge_kappa"]
            ),
            "min_judge_reviews": content.get("min_judge_reviews", 20),
        }

    def clean_checklist(self) -> list[dict[str, Any]]:
        try:
            return checklists.parse(self.cleaned_data["checklist"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from None

    def clean_gates(self) -> list[dict[str, Any]]:
        gates = []
        for n, line in enumerate(self.cleaned_data["gates"].splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (3, 5) or (len(parts) == 5 and parts[3] != "on"):
                raise forms.ValidationError(
                    f"line {n}: “{line.strip()}” — write metric, operator and threshold, "
                    "e.g. “pass_rate >= 0.8”, and “on <golden set>” for a gate that holds on "
                    "one golden set only"
                )
            gate = {"metric": parts[0], "op": parts[1], "threshold": parts[2]}
            gates.append({**gate, "dataset": parts[4]} if len(parts) == 5 else gate)
        return gates

    def content(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "protected": data["protected"],
            "required_approvals": data["required_approvals"],
            "eval_gate": data["eval_gate"],
            "datasets": data["datasets"].split(),
            "gates": data["gates"],
            "max_error_rate": data["max_error_rate"],
            "breakers": data["breakers"].split(),
            "checklist": data["checklist"],
            "min_judge_kappa": data["min_judge_kappa"],
            "min_judge_reviews": data["min_judge_reviews"] or 20,
        }
