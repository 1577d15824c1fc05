from django import template

register = template.Library()


@register.filter
def field_value(obj, name: str):
    """`item|field_value:"question"` — read a named attribute in a loop over columns."""
    return getattr(obj, name, None)
