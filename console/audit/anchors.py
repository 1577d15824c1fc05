"""Anchors: the chain's head (seq, hash, time, key id) published outside the database.

The keyed chain stops anyone without the key from rewriting history, but not from deleting the
newest events: what remains is still a valid chain. An anchor is a witness kept elsewhere
(AIRLOCK_AUDIT_ANCHOR_FILE, one JSON object per line, only ever appended to) that the chain once
reached `seq` with `hash`; `audit_verify` checks every anchor against the stored events.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from console.audit.models import AuditEvent

_TAIL_BYTES = 64 * 1024  # far more than one anchor line


class AnchorFileError(Exception):
    """The anchor file cannot be read as anchors; names the line."""


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    at: str  # when the anchored event was written
    key_id: str
    anchored_at: str
    line: int = 0  # where it was read from (0: not read from a file)

    def to_json(self) -> str:
        fields = asdict(self)
        del fields["line"]
        return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def configured_file() -> Path | None:
    return settings.AIRLOCK_AUDIT_ANCHOR_FILE


def current_head() -> Anchor | None:
    event = AuditEvent.objects.order_by("-seq").only("seq", "hash", "at", "key_id").first()
    if event is None:
        return None
    return Anchor(
        seq=event.seq,
        hash=event.hash,
        at=event.at.astimezone(UTC).isoformat(timespec="microseconds"),
        key_id=event.key_id,
        anchored_at=timezone.now().astimezone(UTC).isoformat(timespec="microseconds"),
    )


def _parse(text: str, line: int) -> Anchor:
    try:
        fields = json.loads(text)
        anchor = Anchor(
            seq=fields["seq"],
            hash=fields["hash"],
            at=fields["at"],
            key_id=fields["key_id"],
            anchored_at=fields["anchored_at"],
            line=line,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise AnchorFileError(f"line {line} is not an anchor ({exc})") from None
    if not isinstance(anchor.seq, int) or isinstance(anchor.seq, bool) or anchor.seq < 1:
        raise AnchorFileError(f"line {line}: seq must be a positive whole number")
    if not isinstance(anchor.hash, str) or len(anchor.hash) != 64:
        raise AnchorFileError(f"line {line}: hash must be 64 hex characters")
    return anchor


def read_anchors(path: Path) -> list[Anchor]:
    """Every anchor in the file, in file order; a missing file holds none."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return []
    with handle:
        return [_parse(text, n) for n, text in enumerate(handle, start=1) if text.strip()]


def _last_anchor(path: Path) -> Anchor | None:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            lines = [x for x in handle.read().splitlines() if x.strip()]
    except FileNotFoundError:
        return None
    if not lines:
        return None
    try:
        return _parse(lines[-1].decode("utf-8"), 0)
    except (AnchorFileError, UnicodeDecodeError):
        return None  # a damaged last line: append a fresh anchor; audit_verify reports the line


def _append_line(path: Path, line: str) -> None:
    """One write() on an O_APPEND descriptor: concurrent writers never interleave a line, and
    nothing already in the file is touched (the file may be made append-only: chattr +a)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def anchor_head(path: Path | None = None) -> tuple[Anchor | None, bool]:
    """Append the current head to the anchor file unless the last anchor already names it.

    Returns (head, written). Raises AnchorFileError when no anchor file is configured.
    """
    path = path or configured_file()
    if path is None:
        raise AnchorFileError("AIRLOCK_AUDIT_ANCHOR_FILE is not set")
    head = current_head()
    if head is None:
        return None, False
    last = _last_anchor(path)
    if last is not None and (last.seq, last.hash) == (head.seq, head.hash):
        return head, False
    _append_line(path, head.to_json())
    return head, True
