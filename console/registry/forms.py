"""Editor forms. They parse what the browser sends into version content; the rules for what
content is valid live in console.registry.validation (shared with services and the preview)."""

from __future__ import annotations

import json
import re

from django import forms
from django.core.exceptions import ValidationError

from console.core.canonical import loads
from console.core.jsoninput import JSONInputError
from console.registry.validation import TOOL_KEYS

SPLIT = re.compile(r"[\s,]+")


class HeadForm(forms.Form):
    """Identity fields, shown only when creating a new prompt or model config."""

    key = forms.SlugField(
        max_length=80, help_text="Stable identifier used by the runtime API, e.g. answer-question"
    )
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class VersionMetaForm(forms.Form):
    base_number = forms.IntegerField(min_value=0, widget=forms.HiddenInput, initial=0)
    message = forms.CharField(
        max_length=500, required=False, help_text="What changed and why (shown in the timeline)"
    )


class PromptContentForm(forms.Form):
    system = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "class": "mono", "spellcheck": "false"}),
    )
    user = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "class": "mono", "spellcheck": "false"}),
    )
    variables = forms.CharField(
        required=False, help_text="Names used as {{ name }} in the templates, comma-separated"
    )
    params = forms.CharField(
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
        help_text='JSON object of default parameters, e.g. {"top_k": 5}',
    )

    tools = forms.CharField(
        required=False,
        label="Tools",
        widget=forms.Textarea(attrs={"rows": 4, "class": "mono", "spellcheck": "false"}),
        help_text=(
            "JSON array of the tools the model may call (agents), each "
            '{"name", "description", "parameters": JSON Schema}; empty for none'
        ),
    )

    def clean_variables(self) -> list[str]:
        raw = self.cleaned_data.get("variables", "")
        return [v for v in SPLIT.split(raw.strip()) if v]

    def clean_params(self) -> dict:
        raw = (self.cleaned_data.get("params") or "").strip() or "{}"
        try:
            value = loads(raw)
        except JSONInputError as exc:
            raise ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object ({...})")
        return value

    def clean_tools(self) -> list:
        raw = (self.cleaned_data.get("tools") or "").strip()
        if not raw:
            return []
        try:
            value = loads(raw)
        except JSONInputError as exc:
            raise ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, list):
            raise ValidationError('must be a JSON array of tools ([{"name": ...}])')
        return value

    def content(self) -> dict:
        keys = ("system", "user", "variables", "params", "tools")
        return {k: self.cleaned_data[k] for k in keys}

    @staticmethod
    def initial_from(content: dict) -> dict:
        return {
            "system": content.get("system", ""),
            "user": content.get("user", ""),
            "variables": ", ".join(content.get("variables", [])),
            "params": json.dumps(content.get("params", {}), indent=2),
            "tools": json.dumps(
                [{k: t[k] for k in TOOL_KEYS if k in t} for t in content["tools"]], indent=2
            )
            if content.get("tools")
            else "",
        }


class ModelConfigContentForm(forms.Form):
    provider = forms.CharField(max_length=60, help_text="openai, azure-openai, local, ...")
    base_url = forms.CharField(
        max_length=500, help_text="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1"
    )
    model = forms.CharField(max_length=200)
    api_key_env = forms.CharField(
        max_length=100,
        required=False,
        help_text=(
            "Name of the environment variable holding the API key (never the key itself), one "
            "the operator binds to this base_url's host in AIRLOCK_PROVIDER_KEYS; empty for none"
        ),
    )
    temperature = forms.FloatField(initial=0.2)
    max_tokens = forms.IntegerField(initial=512)
    timeout_s = forms.FloatField(initial=30, label="Timeout (s)")
    max_retries = forms.IntegerField(initial=3)
    max_concurrency = forms.IntegerField(initial=8, help_text="Parallel calls during an eval")
    price_input_per_1m = forms.FloatField(initial=0, label="Input $/1M tokens")
    price_cached_input_per_1m = forms.FloatField(initial=0, label="Cached input $/1M tokens")
    price_output_per_1m = forms.FloatField(initial=0, label="Output $/1M tokens")
    fallbacks = forms.CharField(
        max_length=500,
        required=False,
        label="Fallbacks",
        help_text="Model config keys to try, in order, when this one fails or its breaker is "
        "open (comma separated); served with the config",
    )
    breaker_error_rate = forms.FloatField(
        required=False, label="Breaker: error rate", help_text="e.g. 0.5: trip at half failing"
    )
    breaker_window_s = forms.IntegerField(
        required=False, label="Breaker: window (s)", help_text="e.g. 60"
    )
    breaker_min_requests = forms.IntegerField(
        required=False, label="Breaker: at least (calls)", help_text="e.g. 20 in the window"
    )

    BREAKER = ("error_rate", "window_s", "min_requests")

    def content(self) -> dict:
        content = dict(self.cleaned_data)
        breaker = {name: content.pop(f"breaker_{name}") for name in self.BREAKER}
        if any(value is not None for value in breaker.values()):
            content["breaker"] = breaker
        return content

    @staticmethod
    def initial_from(content: dict) -> dict:
        initial = dict(content)
        initial["fallbacks"] = ", ".join(content.get("fallbacks") or [])
        for name, value in (content.get("breaker") or {}).items():
            initial[f"breaker_{name}"] = value
        return initial


CONTENT_FORMS = {"prompts": PromptContentForm, "models": ModelConfigContentForm}


class BindForm(forms.Form):
    environment = forms.SlugField()
    version = forms.IntegerField(min_value=1)
    reason = forms.CharField(max_length=500, required=False)
