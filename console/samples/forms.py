"""The sample policy form, and the golden-set item a curator makes from a sample."""

from __future__ import annotations

import json

from django import forms
from django.core.exceptions import ValidationError

from console.core.redaction import BUILTIN

KIND_LABELS = {
    "email": "Email addresses",
    "phone": "Phone numbers",
    "card": "Payment card numbers (checksum valid)",
    "iban": "IBANs (checksum valid)",
    "ssn": "US social security numbers",
}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class CurateForm(forms.Form):
    """What the item will hold: pre-filled from the sample, completed by the curator."""

    dataset = forms.ChoiceField(label="Golden set")
    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    variables = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono"}),
        help_text="The other inputs, as a JSON object.",
    )
    expected_contains = forms.CharField(
        label="Expected facts",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: what a good answer must say.",
    )
    expected_not_contains = forms.CharField(
        label="Forbidden facts",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One per line: what the answer must not say (often what this one got wrong).",
    )
    expected_sources = forms.CharField(
        label="Expected sources",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One source id per line.",
    )
    unanswerable = forms.BooleanField(
        required=False, help_text="The right answer is to decline (the sources do not say)."
    )
    tags = forms.CharField(required=False, help_text="Comma separated; “production” is added.")
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The sample's provenance is added below your note.",
    )

    def __init__(self, *args, golden_sets: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].choices = golden_sets

    def clean_variables(self) -> dict:
        raw = (self.cleaned_data.get("variables") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ValidationError(f"not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValidationError('must be a JSON object, e.g. {"customer_tier": "gold"}')
        return value

    def item_values(self) -> dict:
        data = self.cleaned_data
        return {
            "question": data["question"],
            "variables": data["variables"],
            "expected_contains": _lines(data["expected_contains"]),
            "expected_not_contains": _lines(data["expected_not_contains"]),
            "expected_sources": _lines(data["expected_sources"]),
            "unanswerable": data["unanswerable"],
            "tags": [t.strip().lower() for t in data["tags"].split(",") if t.strip()],
            "note": data["note"],
        }

    @staticmethod
    def initial_from(values: dict) -> dict:
        """Form initial values from services.prefill's item values."""
        return {
            "question": values["question"],
            "variables": json.dumps(values["variables"], indent=1) if values["variables"] else "",
            "expected_sources": "\n".join(values["expected_sources"]),
            "unanswerable": values["unanswerable"],
            "tags": ", ".join(values["tags"]),
        }


class PolicyForm(forms.Form):
    revision = forms.IntegerField(widget=forms.HiddenInput)
    redact_kinds = forms.MultipleChoiceField(
        label="Redact before storing",
        required=False,
        choices=[(k, KIND_LABELS.get(k, k)) for k in BUILTIN],
        widget=forms.CheckboxSelectMultiple,
    )
    redact_patterns = forms.CharField(
        label="Custom patterns",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "class": "mono"}),
        help_text="One per line, name: regular expression, e.g. employee_id: EMP-\\d{6}. "
        "A match is stored as [EMPLOYEE_ID].",
    )
    judge_rate = forms.FloatField(
        label="Judged share",
        min_value=0,
        max_value=1,
        help_text="The share of samples the judge scores, from 0 to 1 (0.1: one in ten).",
    )
    judge_daily_cap = forms.DecimalField(
        label="Daily judge spend cap ($)", min_value=0, max_value=10_000, decimal_places=2
    )
    judge_model = forms.ChoiceField(label="Judge model", required=False)
    judge_faithfulness = forms.ChoiceField(label="Faithfulness judge prompt", required=False)
    judge_relevance = forms.ChoiceField(label="Relevance judge prompt", required=False)

    def __init__(self, *args, models: list, prompts: list, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["judge_model"].choices = [("", "— none: no judging —"), *models]
        for name in ("judge_faithfulness", "judge_relevance"):
            self.fields[name].choices = [("", "—"), *prompts]


class MonitorForm(forms.Form):
    environment = forms.ChoiceField()
    metric = forms.ChoiceField()
    version = forms.CharField(
        required=False, max_length=120, label="Prompt version",
        help_text="key@N to watch one version; blank watches all traffic.",
    )  # fmt: skip
    window_minutes = forms.IntegerField(label="Window (minutes)", initial=60)
    baseline_minutes = forms.IntegerField(label="Baseline (minutes)", initial=24 * 60)
    warn = forms.FloatField(
        required=False, label="Warn at",
        help_text="% worse than the baseline (default 10); PSI for input drift (default 0.1).",
    )  # fmt: skip
    critical = forms.FloatField(
        required=False, label="Critical at", help_text="Default 15%, or PSI 0.25 for drift."
    )
    min_samples = forms.IntegerField(label="Minimum in each window", initial=30)
    cooldown_minutes = forms.IntegerField(label="Cooldown (minutes)", initial=15)

    def __init__(self, *args, environments: list[tuple[str, str]], metrics, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environment"].choices = environments
        self.fields["metric"].choices = metrics
