from django import forms

from console.datasets import safety
from console.datasets.cells import variables_from_text
from console.datasets.io import FORMATS
from console.datasets.items import ItemError


class DatasetForm(forms.Form):
    key = forms.SlugField(max_length=80, help_text="e.g. support-golden")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    templates = forms.MultipleChoiceField(
        label="Start from safety templates",
        choices=[(key, t.title) for key, t in safety.TEMPLATES.items()],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    variables = forms.CharField(
        label="Variables every case carries",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "customer_tier: standard"}),
        help_text=(
            "What your prompt needs besides question and context, one `name: value` per line. "
            "Only used with templates."
        ),
    )

    def clean_variables(self) -> dict:
        try:
            return variables_from_text("variables", self.cleaned_data.get("variables") or "")
        except ItemError as exc:
            raise forms.ValidationError(exc.message) from None


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV or JSONL, UTF-8; see the column mapping below")
    format = forms.ChoiceField(
        choices=[("", "Detect from file name"), *[(f, f.upper()) for f in FORMATS]], required=False
    )
    mode = forms.ChoiceField(
        choices=[
            ("merge", "Merge: add new items, update items with the same id"),
            ("replace", "Replace: also remove draft items missing from the file"),
        ],
        initial="merge",
        widget=forms.RadioSelect,
    )


class PublishForm(forms.Form):
    message = forms.CharField(max_length=500, help_text="What changed in this version and why")
