"""Flag forms parse what the browser sends; what is valid lives in console.flags.validation."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from console.core.canonical import loads
from console.core.jsoninput import JSONInputError
from console.flags.models import FlagKind, FlagType


def _json_field(raw: str, what: str):
    try:
        return loads(raw or "null")
    except JSONInputError as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from None


class FlagForm(forms.Form):
    key = forms.SlugField(
        max_length=80,
        help_text="What your code asks for, e.g. new-checkout (cannot change later)",
    )
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    flag_type = forms.ChoiceField(choices=FlagType.choices, label="Type")
    kind = forms.ChoiceField(choices=FlagKind.choices)
    owner = forms.ChoiceField(required=False, help_text="Who decides when this flag goes away")
    variants = forms.CharField(widget=forms.HiddenInput, required=False)
    off_variant = forms.CharField(
        max_length=80,
        required=False,
        label="Off variant",
        help_text="Served when the flag is off or killed",
    )

    def __init__(self, *args, owners: list[str], editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].choices = [("", "— nobody —")] + [(u, u) for u in owners]
        if editing:
            del self.fields["key"]
            del self.fields["flag_type"]

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if key in {"new"}:
            raise ValidationError("“new” is reserved; choose another key")
        return key

    def clean_variants(self):
        raw = self.cleaned_data.get("variants") or ""
        if not raw.strip():
            return None
        value = _json_field(raw, "variants")
        if not isinstance(value, list):
            raise ValidationError("variants must be a list")
        return value


class RulesForm(forms.Form):
    content = forms.CharField(widget=forms.HiddenInput)
    base_number = forms.IntegerField(min_value=0, widget=forms.HiddenInput)
    message = forms.CharField(
        max_length=500, required=False, help_text="Why (shown in the rule history)"
    )

    def clean_content(self) -> dict:
        value = _json_field(self.cleaned_data["content"], "the rules")
        if not isinstance(value, dict):
            raise ValidationError("the rules must be a JSON object")
        return value


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))
