"""Redaction of production samples: personal data in the values an app sends is replaced by
tokens ("[EMAIL]", "[CARD]", "[EMPLOYEE_ID]") before Airlock keeps them.

Custom patterns are written by application admins and run on every sample an app sends, so a
careless or hostile pattern must not be able to stall ingestion. Python's `re` and the `regex`
package backtrack: `(a+)+$` against forty "a"s and a "b" runs for over a day, twice as long for each
further "a"; `regex`'s timeout only caps the time lost on each such sample, and the value must
then be withheld. Custom patterns therefore run on RE2 (the `google-re2` package: Google's own
bindings, prebuilt wheels, nothing to compile), which turns a pattern into an automaton and
matches in time linear in the text, with memory bounded per pattern, whatever the pattern. The
price is its syntax: no look-arounds or backreferences, and `\\d`, `\\w`, `\\b` are ASCII only
(`\\pN`, `\\pL` for Unicode); a pattern RE2 cannot compile is refused when it is saved, with
RE2's message. The built-in kinds are ours, bounded and tested, and stay on `re` with the
patterns and checksums of console.core.pii, so they find what the no_pii scorer flags.

Built-in kinds are applied first, on the text as received (where two overlap, the earlier kind
in `_ORDER` wins); custom patterns follow, one after the other, on the result. A token already
in the text is never matched inside; a custom match that runs across one swallows it whole.
Redacting is idempotent (the passes repeat until nothing changes) and never raises: if anything
goes wrong the whole value becomes "[REDACTED]" (fail closed).

Speed: a sample without personal data should cost next to nothing. The text is mapped to
character classes with `bytes.translate` (C speed), and the built-in regexes run only near the
places that could hold a match: around an "@" for emails, at two capitals followed by two digits
for IBANs, and on runs of digits and separators holding at least nine digits for cards, SSNs
and phone numbers.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import re2

from console.core import pii

log = logging.getLogger(__name__)

BUILTIN: dict[str, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "ssn": "[SSN]",
}
# The order built-in kinds claim text in: an IBAN's digits are not read as a card number, an
# SSN is not read as a phone number.
_ORDER = ("email", "iban", "card", "ssn", "phone")
WITHHELD = "[REDACTED]"  # a whole value that could not be redacted (fail closed)
RESERVED = frozenset(BUILTIN) | {"redacted"}

# A phone number as machines write it (E.164 without spaces: +14155552671), which the
# separator-minded PHONE pattern does not read.
E164 = re.compile(r"(?<![\w+])\+\d{9,15}(?![\d])")
SHORTEST = 9  # the fewest characters any built-in kind needs, apart from an email's "@"
MAX_PATTERNS = 20
MAX_PATTERN_LENGTH = 300
MAX_NAME_LENGTH = 40
_MAX_PASSES = 4
_NAME = re.compile(rf"[a-z0-9_]{{1,{MAX_NAME_LENGTH}}}")
# Texts a pattern is tried on to tell whether it can match the empty string somewhere.
_EMPTY_PROBES = ("", " ", "a", "0", "\n", "a a", " a ", "a\na", "\na\n", "aa", "a.", ".a")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNICODE_DIGIT = re.compile(r"\d")
_ASCII = bytes(range(128))


def _classes(non_ascii: str) -> tuple[bytes, bytes]:
    """A `bytes.translate` table for `text.encode("ascii", "replace")`, where digits become
    "0", capitals "A", the characters that can sit inside a phone or card number (whitespace,
    dot, dash, parentheses, plus) "." and everything else a space; and those separators, to
    delete. A non-ASCII character arrives as "?" and becomes `non_ascii`: "." as it may be
    Unicode whitespace, or "0" when the text holds Unicode digits."""
    table = bytearray(b" " * 256)
    for code in range(128):
        char = chr(code)
        if "0" <= char <= "9":
            table[code] = ord("0")
        elif "A" <= char <= "Z":
            table[code] = ord("A")
        elif char.isspace() or char in ".-()+":
            table[code] = ord(".")
    table[ord("?")] = ord(non_ascii)
    return bytes(table), bytes(code for code in range(256) if table[code] == ord("."))


_NARROW = _classes(".")
_WIDE = _classes("0")
# Emails are ASCII: their characters stay, everything else (non-ASCII included) is a space.
_EMAIL_CLASSES = bytes(
    code if chr(code).isascii() and (chr(code).isalnum() or chr(code) in "._%+-@") else 32
    for code in range(256)
)
# A run of digits and separators holding nine digits or more, from its first digit: the only
# places a card number, SSN or phone number can be.
_DIGIT_RUN = re.compile(rb"0(?:\.*+0){8}[0.]*+")
_NINE_DIGITS = b"0" * 9
# RFC 5321 allows 64 characters before an email's "@" and 255 after it: windows that size
# bound the pattern's backtracking, however long a run of email characters is.
_LOCAL, _DOMAIN = 64, 256
# An "@" with an email character before it and a domain character after it.
_EMAIL_AT = re.compile(rb"@(?<=[A-Za-z0-9._%+\-]@)(?=[A-Za-z0-9\-])")
_IBAN_START = b"AA00"
_IBAN_SPAN = 66  # the longest IBAN match (4 + 2 * 30 characters), and room to look past it


class PatternError(ValueError):
    """A custom pattern that cannot be used, with the (1-based) line it is on."""

    def __init__(self, line: int, problem: str, name: str = ""):
        self.line = line
        self.name = name
        self.problem = problem
        where = f"line {line} ({name})" if name else f"line {line}"
        super().__init__(f"{where}: {problem}")


def _options() -> re2.Options:
    """RE2's options for custom patterns: errors are reported to the admin, not logged, and
    each pattern gets at most 4 MiB (a bigger program is refused; when the DFA cache fills,
    RE2 falls back to its NFA, slower but still linear)."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 4 << 20
    return options


def _compile(pattern: str) -> re2._Regexp:
    """The pattern compiled by RE2, or re2.error with RE2's message as a str."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        if "invalid perl operator" in detail or "invalid escape sequence: \\" in detail:
            detail += " (look-arounds and backreferences are not supported)"
        raise re2.error(detail) from None


def _matches_empty(regex: re2._Regexp) -> bool:
    return any(m.start() == m.end() for probe in _EMPTY_PROBES for m in regex.finditer(probe))


def _entries(text_or_list: str | Iterable[dict] | None) -> Iterable[tuple[int, str, str]]:
    """(line, name, pattern) for each pattern given, blank lines and comments skipped."""
    if not text_or_list:
        return
    if isinstance(text_or_list, str):
        for line, raw in enumerate(re.split(r"\r\n|\r|\n", text_or_list), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            name, colon, pattern = stripped.partition(":")
            if not colon:
                raise PatternError(line, 'expected "name: pattern", e.g. "employee_id: EMP-\\d{6}"')
            yield line, name.strip(), pattern.strip()
        return
    if isinstance(text_or_list, dict) or not isinstance(text_or_list, Iterable):
        raise TypeError("patterns must be text or a list of {name, pattern} objects")
    for line, entry in enumerate(text_or_list, 1):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("pattern"), str)
        ):
            raise PatternError(line, 'expected {"name": "...", "pattern": "..."}')
        yield line, entry["name"].strip(), entry["pattern"].strip()


def clean_patterns(text_or_list: str | Iterable[dict] | None) -> list[dict]:
    """The custom patterns as [{"name", "pattern"}], from text (one `name: regex` a line; blank
    lines and lines starting with # are skipped) or from a list of such dicts (its n-th entry
    is "line n"). Names and patterns are stripped of surrounding whitespace. A name is 1-40
    lowercase letters, digits or underscores, used once and not a built-in kind; a pattern is
    at most 300 characters of RE2 syntax and cannot match the empty string; at most 20
    patterns. The first problem raises PatternError naming its line."""
    cleaned: list[dict] = []
    lines: dict[str, int] = {}
    for line, name, pattern in _entries(text_or_list):
        shown = name[:MAX_NAME_LENGTH]
        if not name:
            raise PatternError(line, "the name is empty")
        if not _NAME.fullmatch(name):
            raise PatternError(
                line,
                f"a name is 1-{MAX_NAME_LENGTH} lowercase letters, digits or underscores",
                shown,
            )
        if name in RESERVED:
            raise PatternError(line, f'"{name}" is a built-in name; choose another', name)
        if name in lines:
            raise PatternError(line, f"the name is already used on line {lines[name]}", name)
        if len(cleaned) == MAX_PATTERNS:
            raise PatternError(line, f"at most {MAX_PATTERNS} patterns", name)
        if not pattern:
            raise PatternError(line, "the pattern is empty", name)
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise PatternError(
                line,
                f"the pattern is {len(pattern)} characters long; at most {MAX_PATTERN_LENGTH}",
                name,
            )
        try:
            regex = _compile(pattern)
        except re2.error as exc:
            raise PatternError(line, f"does not compile: {exc.args[0]}", name) from None
        if _matches_empty(regex):
            raise PatternError(line, "matches the empty string, so it would match everywhere", name)
        lines[name] = line
        cleaned.append({"name": name, "pattern": pattern})
    return cleaned


def _fail_closed(exc: Exception) -> None:
    # The exception's message may quote the text: only its type is logged.
    log.warning("redaction failed (%s); the whole value was withheld", type(exc).__name__)


class Redactor:
    """Replaces personal data in sample values with tokens: the built-in `kinds` (all of them
    unless given) and the custom `patterns` (as `clean_patterns` accepts them; invalid ones
    raise PatternError)."""

    def __init__(self, kinds: Iterable[str] = tuple(BUILTIN), patterns: Iterable[dict] = ()):
        chosen = set(kinds)
        unknown = chosen - set(BUILTIN)
        if unknown:
            raise ValueError(f"unknown kinds of personal data: {', '.join(sorted(unknown))}")
        self.kinds = tuple(kind for kind in _ORDER if kind in chosen)
        self.patterns = clean_patterns(patterns if isinstance(patterns, str) else list(patterns))
        self._custom = [
            (p["name"], f"[{p['name'].upper()}]", _compile(p["pattern"])) for p in self.patterns
        ]
        # One scan tells whether any custom pattern matches at all (the usual answer: no).
        self._screen = self._custom[0][2] if len(self._custom) == 1 else None
        if len(self._custom) > 1:
            options = _options()
            options.never_capture = True
            alternatives = "|".join(f"(?:{p['pattern']})" for p in self.patterns)
            try:
                self._screen = re2.compile(alternatives, options)
            except re2.error:  # too big together: each pattern scans on its own
                self._screen = None
        tokens = [*(BUILTIN[kind] for kind in self.kinds), WITHHELD]
        tokens += [token for _, token, _ in self._custom]
        self._tokens = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len)[::-1]))
        self._digit_kinds = [
            (kind, regex, valid)
            for kind, regex, valid in (
                ("card", pii.CARD, lambda m: pii.card_valid(m.group())),
                ("ssn", pii.SSN, lambda m: pii.ssn_valid(*m.groups())),
                ("phone", pii.PHONE, lambda m: pii.phone_valid(m.group())),
                ("phone", E164, lambda m: True),
            )
            if kind in chosen
        ]

    def redact_text(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with personal data replaced, and how many replacements of each kind or
        pattern name were made (kinds with none are left out). Redacting the result again
        changes nothing. Never raises: a text that cannot be redacted comes back as
        "[REDACTED]", counted as "redacted"."""
        counts: Counter[str] = Counter()
        try:
            for _ in range(_MAX_PASSES):
                redacted = self._custom_pass(self._builtin_pass(text, counts), counts)
                if redacted == text:
                    return text, dict(counts)
                text = redacted
            # Still changing: patterns that keep feeding each other. Withhold the value.
            counts["redacted"] += 1
            return WITHHELD, dict(counts)
        except Exception as exc:
            _fail_closed(exc)
            return WITHHELD, {"redacted": 1}

    def redact(self, value: Any) -> tuple[Any, dict[str, int]]:
        """A JSON-like value with every string in it redacted (in dicts, lists and tuples,
        however deeply; dict keys too; whole numbers of 9 digits or more are read as their digits,
        other values pass unchanged), and the replacements
        counted as `redact_text` does."""
        counts: Counter[str] = Counter()
        return self._redact(value, counts), dict(counts)

    def _redact(self, value: Any, counts: Counter[str]) -> Any:
        if type(value) is int and abs(value) >= 10 ** (SHORTEST - 1):
            # A card number sent as a JSON number: redacted as its digits would be.
            text = str(value)
            redacted, found = self.redact_text(text)
            if found:
                counts.update(found)
                return redacted
            return value
        if isinstance(value, str):
            # No built-in kind fits in under 9 characters without an "@" (a phone number has 9
            # digits at least, an email an "@"): short labels and ids skip the passes.
            if len(value) < SHORTEST and not self._custom and "@" not in value:
                return value
            redacted, found = self.redact_text(value)
            if found:
                counts.update(found)
            return redacted
        if isinstance(value, dict):  # keys too: an app may key a map by email address
            return {
                self._redact(key, counts): self._redact(item, counts) for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._redact(item, counts) for item in value]
        if isinstance(value, tuple):
            return tuple(self._redact(item, counts) for item in value)
        return value

    # Built-in kinds ---------------------------------------------------------------------------

    def _builtin_pass(self, text: str, counts: Counter[str]) -> str:
        if not self.kinds:
            return text
        found = self._find(text)
        if not any(found.values()):
            return text
        # Tokens already in the text, then each kind in turn, claim text; what overlaps a
        # claim is dropped.
        taken = [m.span() for m in self._tokens.finditer(text)] if "[" in text else []
        chosen: list[tuple[int, int, str]] = []
        for kind in self.kinds:
            taken, won = _claim(taken, found[kind])
            chosen += [(start, end, BUILTIN[kind]) for start, end in won]
            if won:
                counts[kind] += len(won)
        return _replace(text, chosen)

    def _find(self, text: str) -> dict[str, list[tuple[int, int]]]:
        """The spans of each built-in kind in the text (checksums and rules applied), as the
        whole-text `finditer` of its pattern would find them, but searched only where a match
        could be. (An email is looked for at most 64 characters before its "@" and 256
        after.)"""
        found: dict[str, list[tuple[int, int]]] = {kind: [] for kind in self.kinds}
        size = len(text)
        # One byte per character, so positions carry over; non-ASCII characters become "?".
        ascii = text.encode("ascii", "replace")
        if "email" in found and "@" in text:
            classes = ascii.translate(_EMAIL_CLASSES)
            searched = 0
            for at in (m.start() for m in _EMAIL_AT.finditer(classes)):
                if at < searched:
                    continue
                # A match holds one "@": it starts after the one before and ends before the next.
                start = max(
                    classes.rfind(b" ", max(0, at - _LOCAL), at) + 1,
                    classes.rfind(b"@", max(0, at - _LOCAL), at) + 1,
                    at - _LOCAL,
                    searched,
                )
                end = min(
                    _found_or(classes.find(b" ", at, at + _DOMAIN), size),
                    _found_or(classes.find(b"@", at + 1, at + _DOMAIN), size),
                    at + _DOMAIN,
                )
                for match in pii.EMAIL.finditer(text, start, end):
                    found["email"].append(match.span())
                    searched = match.end()
        if "iban" in found or self._digit_kinds:
            wide = not text.isascii() and _has_unicode_digits(text)
            table, separators = _WIDE if wide else _NARROW
            classes = ascii.translate(table)
            if "iban" in found:
                at = classes.find(_IBAN_START)
                while at != -1:
                    match = pii.IBAN.match(text, at, at + _IBAN_SPAN)
                    length = pii.iban_length(match.group()) if match else 0
                    if length:
                        found["iban"].append((at, at + length))
                    at = classes.find(_IBAN_START, match.end() if match else at + 1)
            # Without the separators, a run holding nine digits shows as nine zeros in a row.
            if self._digit_kinds and _NINE_DIGITS in ascii.translate(table, separators):
                for run in _DIGIT_RUN.finditer(classes):
                    # A match may open with the "+" or "(" just before the first digit, and the
                    # regexes look up to two characters past its end.
                    start, end = max(0, run.start() - 1), run.end()
                    for kind, regex, valid in self._digit_kinds:
                        for match in regex.finditer(text, start, min(size, end + 2)):
                            if match.start() >= end:
                                break
                            if valid(match):
                                found[kind].append(match.span())
        return found

    # Custom patterns --------------------------------------------------------------------------

    def _custom_pass(self, text: str, counts: Counter[str]) -> str:
        if not self._custom:
            return text
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: RE2 reads UTF-8
            text = _SURROGATE.sub("\ufffd", text)
            data = text.encode("utf-8")
        # RE2 reads bytes; given a str it encodes it and maps offsets back, on every call.
        if self._screen is not None and self._screen.search(data) is None:
            return text
        for name, token, regex in self._custom:
            try:
                spans = [m.span() for m in regex.finditer(text) if m.end() > m.start()]
            except Exception as exc:
                _fail_closed(exc)
                counts[name] += 1
                return WITHHELD
            if not spans:
                continue
            tokens = [m.span() for m in self._tokens.finditer(text)] if "[" in text else []
            chosen = _around_tokens(spans, tokens)
            if chosen:
                counts[name] += len(chosen)
                text = _replace(text, [(start, end, token) for start, end in chosen])
        return text


def _found_or(position: int, default: int) -> int:
    return default if position == -1 else position


def _has_unicode_digits(text: str) -> bool:
    """Whether the text holds decimal digits other than 0-9 (which `\\d` matches too)."""
    others = text.encode("utf-8", "surrogatepass").translate(None, _ASCII)
    return bool(others) and bool(_UNICODE_DIGIT.search(others.decode("utf-8", "surrogatepass")))


def _claim(
    taken: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The spans that overlap neither `taken` (sorted, disjoint) nor an earlier span, and
    `taken` with them added (still sorted)."""
    merged: list[tuple[int, int]] = []
    won: list[tuple[int, int]] = []
    at = 0
    for start, end in sorted(spans):
        while at < len(taken) and taken[at][0] < start:
            merged.append(taken[at])
            at += 1
        if (merged and merged[-1][1] > start) or (at < len(taken) and taken[at][0] < end):
            continue
        merged.append((start, end))
        won.append((start, end))
    merged += taken[at:]
    return merged, won


def _around_tokens(
    spans: list[tuple[int, int]], tokens: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Custom matches made to respect the tokens already in the text: a match inside a token is
    dropped, one that reaches into a token is widened to take all of it (a pattern such as
    `patient: .*` still covers a line whose email was replaced first); matches that come to
    overlap are merged."""
    if not tokens:
        return spans
    starts = [start for start, _ in tokens]
    result: list[tuple[int, int]] = []
    for start, end in spans:
        first = bisect.bisect_right(starts, start) - 1
        if first >= 0 and tokens[first][1] >= end:
            continue  # inside a token
        at = max(first, 0)
        while at < len(tokens) and tokens[at][0] < end:
            token_start, token_end = tokens[at]
            if token_end > start:
                start, end = min(start, token_start), max(end, token_end)
            at += 1
        if result and result[-1][1] > start:
            previous_start, previous_end = result.pop()
            start, end = previous_start, max(end, previous_end)
        result.append((start, end))
    return result


def _replace(text: str, spans: list[tuple[int, int, str]]) -> str:
    """The text with each (start, end, token) span, disjoint, replaced by its token."""
    pieces = []
    last = 0
    for start, end, token in sorted(spans):
        pieces += [text[last:start], token]
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
