from django import forms

from console.datasets.io import FORMATS


class DatasetForm(forms.Form):
    key = forms.SlugField(max_length=80, help_text="e.g. support-golden")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


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
