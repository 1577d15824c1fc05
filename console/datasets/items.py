"""What a golden-set item is, and how it travels as CSV and JSONL.

One mapping for both formats (documented in the README):

| field / CSV column      | type                  | CSV cell (import)                       |
|-------------------------|-----------------------|-----------------------------------------|
| id                      | text ≤ 64, optional   | plain text; generated when empty        |
| question                | text, required        | plain text                              |
| variables               | object                | `tier: gold; region: eu` (or lines), or |
|                         |                       | a JSON object, e.g. {"tier": "gold"}    |
| expected_contains       | list of text          | `30 days; receipt`, or a JSON array     |
| expected_not_contains   | list of text          | as expected_contains                    |
| expected_sources        | list of text          | document ids/paths, as above            |
| expected_tools          | list of tool calls    | one per line: `name {args} -> result`;  |
|                         |                       | `!name` = never call; or a JSON array   |
| reference_answer        | text                  | plain text                              |
| unanswerable            | boolean               | true/false, yes/no, 1/0 (empty=false)   |
| tags                    | list of text          | `refunds; multi-part`, or a JSON array  |
| note                    | text                  | plain text                              |

Exports write lists and variables as JSON, which imports back unchanged. How cells are
written by people (here and in the editor) is console.datasets.cells; what a tool call entry
holds and how it matches a call is console.datasets.tools.

`expected_tools` came after the first published versions: an item's hash leaves it out while
it is empty, so every hash from before stays valid, and snapshots published before it have no
such key (content_with_defaults fills it in when they are read).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

from console.core.canonical import canonical_json, content_hash
from console.datasets import tools

FIELDS = [
    "id", "question", "variables", "expected_contains", "expected_not_contains",
    "expected_sources", "expected_tools", "reference_answer", "unanswerable", "tags", "note",
]  # fmt: skip
CONTENT_FIELDS = FIELDS[1:]
LIST_FIELDS = {"expected_contains", "expected_not_contains", "expected_sources", "tags"}
TEXT_FIELDS = {"question", "reference_answer", "note"}
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_ITEM_BYTES = 32 * 1024
# Prompt variables an item fills from its own fields (an eval fills {{ question }} with the
# item's question); every other variable a prompt declares must be a key of `variables`.
ITEM_FIELD_VARIABLES = frozenset({"question"})
# Fields added after items were first published: left out of the hash while empty (so older
# hashes stay valid) and filled with this default when a stored snapshot lacks them.
OPTIONAL_FIELDS: dict[str, Any] = {"expected_tools": []}
TRUE = {"true", "yes", "1", "y"}
FALSE = {"false", "no", "0", "n", ""}


class ItemError(ValueError):
    """A problem with one field of one item."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def new_item_id() -> str:
    return uuid.uuid4().hex[:12]


def _shown(value: Any) -> str:
    """A refused value quoted for an error message, shortened when long."""
    if isinstance(value, str):
        text = '"' + " ↵ ".join(value.splitlines()) + '"'
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def clean_field(name: str, value: Any) -> Any:
    """Validate one field's value (already decoded from JSON); raise ItemError."""
    if name in TEXT_FIELDS:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ItemError(name, f"{_shown(value)} is not text")
        value = value.strip() if name == "question" else value
        if name == "question" and not value:
            raise ItemError(name, "is required")
        return value
    if name in LIST_FIELDS:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ItemError(
                name, f'{_shown(value)} is not a list of text — e.g. ["30 days", "receipt"]'
            )
        for entry in value:
            if not isinstance(entry, str):
                raise ItemError(name, f'{_shown(entry)} is not text — e.g. "30 days"')
        cleaned = [v.strip() for v in value if v.strip()]
        if name == "tags":
            bad = [t for t in cleaned if not TAG_PATTERN.match(t.lower())]
            if bad:
                raise ItemError(
                    name,
                    f'{_shown(bad[0])} is not a tag (a-z, 0-9, - and _, up to 40) — e.g. "refunds"',
                )
            cleaned = [t.lower() for t in cleaned]
            cleaned = sorted(set(cleaned))
        return cleaned
    if name == "variables":
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise ItemError(
                name,
                f'{_shown(value)} is not an object of names and values — e.g. {{"tier": "gold"}}',
            )
        try:
            canonical_json(value)
        except (ValueError, TypeError) as exc:
            raise ItemError(name, str(exc)) from None
        return value
    if name == "expected_tools":
        try:
            cleaned = tools.clean(value)
            canonical_json(cleaned)  # NaN or infinity from JSONL cannot be stored or hashed
        except (ValueError, TypeError) as exc:
            raise ItemError(name, str(exc)) from None
        return cleaned
    if name == "unanswerable":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
            return value.strip().lower() in TRUE
        if value is None:
            return False
        raise ItemError(name, f'{_shown(value)} is not true or false — e.g. "yes" or "no"')
    if name == "id":
        if value in (None, ""):
            return ""
        if not isinstance(value, str) or not ID_PATTERN.match(value):
            raise ItemError(
                name,
                f"{_shown(value)} is not an id (1-64 letters, digits, '.', '_', ':' or '-') — "
                'e.g. "refund-1"',
            )
        return value
    raise ItemError(name, "is not a known field")


def clean_item(raw: dict) -> tuple[dict, list[ItemError]]:
    """Clean every field; return (content without id, errors). Unknown keys are errors."""
    content: dict[str, Any] = {}
    errors: list[ItemError] = []
    for key in raw:
        if key not in FIELDS:
            errors.append(ItemError(key, f"unknown field (expected one of: {', '.join(FIELDS)})"))
    for name in FIELDS:
        try:
            content[name] = clean_field(name, raw.get(name))
        except ItemError as exc:
            errors.append(exc)
    return content, errors


def item_content(item) -> dict:
    """The hashed content of a draft item (model instance) — everything but identity."""
    return {name: getattr(item, name) for name in CONTENT_FIELDS}


def item_hash(content: dict) -> str:
    """The hash of an item's content. An optional field that is empty (or absent) is left out,
    so adding such a field to Airlock changes no existing hash."""
    return content_hash(
        {
            k: content[k]
            for k in CONTENT_FIELDS
            if k not in OPTIONAL_FIELDS or content.get(k, OPTIONAL_FIELDS[k])
        }
    )


def content_with_defaults(content: dict) -> dict:
    """Stored content (a snapshot, maybe from before an optional field existed) with every
    optional field present, so readers can rely on the keys."""
    missing = {k: copy.deepcopy(v) for k, v in OPTIONAL_FIELDS.items() if k not in content}
    return {**content, **missing} if missing else content


def tags_text(tags: list[str]) -> str:
    """Tags as ',a,b,' so 'has tag x' is a portable LIKE '%,x,%' on any database."""
    return "," + ",".join(tags) + "," if tags else ""


def to_csv_cell(name: str, value: Any) -> str:
    if name in LIST_FIELDS or name in {"variables", "expected_tools"}:
        return json.dumps(value, ensure_ascii=False) if value else ""
    if name == "unanswerable":
        return "true" if value else "false"
    return value or ""
