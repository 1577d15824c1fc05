"""Form helpers shared by the console's editors."""

from __future__ import annotations

from django.core.exceptions import ValidationError


def apply_errors(forms: list, error: ValidationError) -> list[str]:
    """Attach a service's ValidationError to the form field it names (on the first form that
    has that field); return the messages no field owns, prefixed with their key."""
    if not hasattr(error, "error_dict"):
        return list(error.messages)
    leftovers: list[str] = []
    for field, messages in error.message_dict.items():
        target = next((f for f in forms if field in f.fields), None)
        if target is None:
            leftovers.extend(f"{field}: {m}" for m in messages)
            continue
        for message in messages:
            target.add_error(field, message)
    return leftovers
