"""Canonical JSON and content hashing: the identity of a version's content.

Two contents are "the same" exactly when their canonical JSON is byte-identical: keys sorted,
no insignificant whitespace, UTF-8 kept as is, and floats that are whole numbers written as
integers so that 1 and 1.0 (which JSON databases may normalise differently) hash alike.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from console.core.jsoninput import parse


def _normalise(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and infinity cannot be stored in canonical JSON")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    raise TypeError(f"{type(value).__name__} is not JSON content")


def loads(text: str | bytes) -> Any:
    """Untrusted JSON text to content: jsoninput.parse, which refuses NaN/Infinity (content
    must be canonical), nesting deeper than MAX_DEPTH and lone surrogates with a
    JSONInputError (a ValueError) saying where."""
    return parse(text)


def canonical_json(value: Any) -> str:
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalise(value: Any) -> Any:
    """The value as it will read back from the database after a canonical round trip."""
    return json.loads(canonical_json(value))


def content_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
