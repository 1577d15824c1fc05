"""Personal data in free text: the patterns and checksums that tell it from ordinary numbers.

Shared by the no_pii scorer (console.evals.scorers), which asks whether an answer holds personal
data, and the redaction of production samples (console.core.redaction), which replaces it.
Card numbers and IBANs count only when their checksum holds and SSNs only when the SSA could
issue them, so order numbers, references and codes are left alone.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE = re.compile(
    r"(?:(?<![\w+])\+\d{1,3}[\s.-]?|(?<![\w+])(?<!\d[\s.-]))(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])"
    r"\d{3,4}[\s.-]\d{3,4}(?![\s.-]?\d)(?!\w)"  # not a piece of a longer run of digits
)
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
SSN = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")

_NOT_DIGIT = re.compile(r"\D")


def luhn_valid(digits: str) -> bool:
    """The payment-card check digit (ISO/IEC 7812): every second digit from the right doubled."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: the account moved behind the country and check digits, read as a number,
    leaves 1 modulo 97."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    return int("".join(str(int(c, 36)) for c in compact[4:] + compact[:4])) % 97 == 1


def iban_length(candidate: str) -> int:
    """How many characters (spaces included) of a run of IBAN-like characters make a valid
    IBAN at its start, the longest such, or 0 when none does (the run may go on into the next
    word: "GB82 WEST 1234 5698 7654 32 219" holds a 27-character IBAN). The same test as
    `iban_valid` on each prefix, with the remainders carried from one prefix to the next."""
    compact = candidate.replace(" ", "")
    if len(compact) < 15:
        return 0
    head = "".join(str(int(c, 36)) for c in compact[:4])
    head_value, head_scale = int(head), 10 ** len(head)
    remainder, longest = 0, 0
    for length, char in enumerate(compact[4:34], 5):
        digits = str(int(char, 36))
        remainder = (remainder * 10 ** len(digits) + int(digits)) % 97
        if length >= 15 and (remainder * head_scale + head_value) % 97 == 1:
            longest = length
    if not longest:
        return 0
    seen = 0
    for end, char in enumerate(candidate, 1):
        seen += char != " "
        if seen == longest:
            return end
    return 0  # not reached


def holds_iban(candidate: str) -> bool:
    """Whether a run of IBAN-like characters starts with a valid IBAN."""
    return iban_length(candidate) > 0


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """A US social security number the SSA could issue (no 000, 666 or 9xx area, no 00 group,
    no 0000 serial)."""
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000"


def card_valid(candidate: str) -> bool:
    """Whether a CARD match (digits with optional spaces or dashes) passes the Luhn check."""
    return luhn_valid(_NOT_DIGIT.sub("", candidate))


def phone_valid(candidate: str) -> bool:
    """Whether a PHONE match is a phone number: 9 to 15 digits, and not shaped like an SSN."""
    return 9 <= len(_NOT_DIGIT.sub("", candidate)) <= 15 and not SSN.fullmatch(candidate)


def personal_data(text: str) -> list[str]:
    """The kinds of personal data in a text, each once, in a fixed order. Card numbers and IBANs
    count only when their checksum holds, so order numbers and codes are not flagged."""
    kinds = []
    if EMAIL.search(text):
        kinds.append("email address")
    if any(card_valid(m.group()) for m in CARD.finditer(text)):
        kinds.append("card number")
    if any(holds_iban(m.group()) for m in IBAN.finditer(text)):
        kinds.append("IBAN")
    if any(ssn_valid(*m.groups()) for m in SSN.finditer(text)):
        kinds.append("social security number")
    if any(phone_valid(m.group()) for m in PHONE.finditer(text)):
        kinds.append("phone number")
    return kinds
