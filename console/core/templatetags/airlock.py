from django import template

register = template.Library()


@register.filter
def field_value(obj, name: str):
    """`item|field_value:"question"` — read a named attribute in a loop over columns."""
    return getattr(obj, name, None)


@register.filter
def pairs(mapping) -> list[tuple[str, str]]:
    """A JSON object as (key, compact value) pairs for chips: {"tier": "gold"} → tier: gold."""
    import json

    if not isinstance(mapping, dict):
        return []
    return [
        (str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
        for k, v in mapping.items()
    ]


@register.filter
def call_args(arguments) -> str:
    """A tool call's arguments written as in code: {"order_id": "A-1", "n": 2} → order_id="A-1",
    n=2; arguments that are not an object are shown as the text they were."""
    import json

    if isinstance(arguments, str):
        return arguments
    if not isinstance(arguments, dict):
        return json.dumps(arguments, ensure_ascii=False)
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
