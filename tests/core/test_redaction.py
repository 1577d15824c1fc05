import time

import pytest

from console.core import pii
from console.core.redaction import (
    BUILTIN,
    MAX_PATTERNS,
    PatternError,
    Redactor,
    clean_patterns,
)
from console.evals import scorers

ALL = Redactor()


def redacted(text: str, redactor: Redactor = ALL) -> str:
    return redactor.redact_text(text)[0]


# Built-in kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("Write to maria.lopez@example.com today.", "Write to [EMAIL] today.", "email"),
        ("Call +1 415 555 0110 after six.", "Call [PHONE] after six.", "phone"),
        ("Call (415) 555-0110.", "Call [PHONE].", "phone"),
        ("The card was 4111 1111 1111 1111.", "The card was [CARD].", "card"),
        ("Card: 3782-822463-10005", "Card: [CARD]", "card"),
        ("Paid with 4111111111111111!", "Paid with [CARD]!", "card"),
        ("Refunded to GB82 WEST 1234 5698 7654 32.", "Refunded to [IBAN].", "iban"),
        ("IBAN DE89370400440532013000", "IBAN [IBAN]", "iban"),
        ("SSN 219-12-4321 is on file.", "SSN [SSN] is on file.", "ssn"),
    ],
)
def test_each_builtin_kind_is_replaced_by_its_token_and_counted(text, expected, kind):
    assert ALL.redact_text(text) == (expected, {kind: 1})
    assert BUILTIN[kind] in expected


def test_several_kinds_and_repeats_are_counted_separately():
    text = "a@example.com, b@example.org; card 4111 1111 1111 1111; SSN 219-12-4321"
    out, counts = ALL.redact_text(text)
    assert out == "[EMAIL], [EMAIL]; card [CARD]; SSN [SSN]"
    assert counts == {"email": 2, "card": 1, "ssn": 1}


@pytest.mark.parametrize(
    "text",
    [
        "Order A-1042 shipped; ticket #T-1000 is closed.",
        "Delivered on 2024-05-01 at 14:30, or 01/05/2024.",
        "Your order number is 4111 1111 1111 1112.",  # 16 digits, fails the Luhn check
        "Reference 1234567812345678 is not a card.",
        "Reference GB83 WEST 1234 5698 7654 32.",  # wrong IBAN check digits
        "Code 666-12-4321 is not an SSN; nor is 900-12-4321 or 123-00-4567.",
        "The price is $1,299.00, or 3 x 433.00; version 1.2.3.",
        "Standard shipping takes 3 to 5 business days [shipping].",
    ],
)
def test_ordinary_numbers_and_invalid_checksums_survive(text):
    assert ALL.redact_text(text) == (text, {})


def test_an_iban_running_into_the_next_word_keeps_the_word():
    out, counts = ALL.redact_text("Refunded to GB82 WEST 1234 5698 7654 32 219 days ago")
    assert (out, counts) == ("Refunded to [IBAN] 219 days ago", {"iban": 1})


def test_unicode_digits_and_separators_are_read_as_the_no_pii_scorer_reads_them():
    assert redacted("card ٤١١١ ١١١١ ١١١١ ١١١١ ok") == "card [CARD] ok"
    text = "Appelez le +1\u00a0415\u00a0555\u00a00110 — merci « Marie »"
    assert pii.personal_data(text) == ["phone number"]
    assert redacted(text) == "Appelez le [PHONE] — merci « Marie »"


def test_only_the_chosen_kinds_are_redacted():
    redactor = Redactor(kinds=["email"])
    text = "x@example.com 4111 1111 1111 1111"
    assert redactor.redact_text(text) == ("[EMAIL] 4111 1111 1111 1111", {"email": 1})
    with pytest.raises(ValueError, match="postcode"):
        Redactor(kinds=["email", "postcode"])


@pytest.mark.parametrize(
    "text",
    [
        "Write to maria.lopez@example.com today.",
        "The card was 4111 1111 1111 1111.",
        "Refunded to GB82 WEST 1234 5698 7654 32.",
        "SSN 219-12-4321 is on file.",
        "Call +1 415 555 0110 after six.",
        "Order A70412 shipped on 2026-11-30.",
    ],
)
def test_redacted_text_holds_nothing_the_no_pii_scorer_flags(text):
    assert pii.personal_data(text) != [] or "A70412" in text
    assert pii.personal_data(redacted(text)) == []


def test_the_scorers_still_export_the_pii_helpers():
    assert scorers.personal_data is pii.personal_data
    assert scorers.luhn_valid is pii.luhn_valid and scorers.iban_valid is pii.iban_valid
    assert scorers.EMAIL is pii.EMAIL and scorers.CARD is pii.CARD


# Custom patterns --------------------------------------------------------------------------------


def test_custom_patterns_are_redacted_after_the_builtins_and_counted_by_name():
    redactor = Redactor(patterns=clean_patterns("employee_id: EMP-\\d{6}\nticket: (?i)tkt-\\d+"))
    out, counts = redactor.redact_text("EMP-123456 raised TKT-77 for a@example.com (EMP-654321)")
    assert out == "[EMPLOYEE_ID] raised [TICKET] for [EMAIL] ([EMPLOYEE_ID])"
    assert counts == {"employee_id": 2, "ticket": 1, "email": 1}


def test_a_custom_match_across_a_builtin_token_takes_the_token_with_it():
    redactor = Redactor(patterns=[{"name": "patient", "pattern": "Patient: .*"}])
    out, counts = redactor.redact_text("Patient: Jo Smith, jo@example.com, 3rd floor\nnext line")
    assert out == "[PATIENT]\nnext line"
    assert counts == {"email": 1, "patient": 1}


def test_custom_patterns_never_match_inside_tokens():
    redactor = Redactor(patterns="caps: [A-Z]{3,}\ndigits: \\d+")
    text = "write to ab@example.com, order 1042"
    assert redactor.redact_text(text) == (
        "write to [EMAIL], order [DIGITS]",
        {"email": 1, "digits": 1},
    )


def test_nested_values_are_walked_keys_included():
    redactor = Redactor(patterns="employee_id: EMP-\\d{6}")
    value = {
        "input": "mail me at x@example.com",
        "messages": [{"role": "user", "content": "I am EMP-123456"}, ("SSN 219-12-4321", 7)],
        "EMP-000001": None,
        "score": 0.5,
        "ok": True,
    }
    out, counts = redactor.redact(value)
    assert out == {
        "input": "mail me at [EMAIL]",
        "messages": [{"role": "user", "content": "I am [EMPLOYEE_ID]"}, ("SSN [SSN]", 7)],
        "[EMPLOYEE_ID]": None,
        "score": 0.5,
        "ok": True,
    }
    assert counts == {"email": 1, "employee_id": 2, "ssn": 1}
    assert redactor.redact(42) == (42, {})


@pytest.mark.parametrize(
    "text",
    [
        "Write to maria.lopez@example.com or call +1 415 555 0110; card 4111 1111 1111 1111.",
        "GB82 WEST 1234 5698 7654 32, SSN 219-12-4321, EMP-123456, [EMAIL] already there",
        "a@b.co415 555 0110",  # the phone only reads as one once the email is a token
        "Patient: EMP-123456 x@example.com",
        "nothing to see here",
    ],
)
def test_redaction_is_idempotent(text):
    redactor = Redactor(
        patterns="employee_id: EMP-\\d{6}\nwords: \\b[A-Z]+\\b\npatient: Patient: .*"
    )
    once, _ = redactor.redact_text(text)
    assert redactor.redact_text(once) == (once, {})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00\x00 4111 1111 1111 1111 \x00",
        "lone surrogates \ud800 and \udfff near EMP-123456",
        "emoji 😀 and ß and 漢字 and ١٢٣",
        "x" * 300_000 + " a@example.com",
        "a" * 200_000 + "@",  # a long run before an "@"
        "1 " * 100_000,
        "@" * 100_000,
    ],
)
def test_any_text_is_redacted_without_raising(text):
    redactor = Redactor(patterns="employee_id: EMP-\\d{6}\nany: [^\\x00]{5}\\d")
    started = time.perf_counter()
    out, counts = redactor.redact_text(text)
    assert isinstance(out, str) and all(n > 0 for n in counts.values())
    assert time.perf_counter() - started < 5
    assert redactor.redact_text(out) == (out, {})


def test_a_catastrophic_pattern_finishes_in_linear_time():
    redactor = Redactor(patterns="nested: (a+)+$\nalternation: (a|aa)+b$")
    started = time.perf_counter()
    for n in (40, 5_000):
        assert redactor.redact_text("a" * n + "c") == ("a" * n + "c", {})
    assert redactor.redact_text("aaab") == ("[ALTERNATION]", {"alternation": 1})
    assert time.perf_counter() - started < 1


# clean_patterns -----------------------------------------------------------------------------


def test_clean_patterns_reads_lines_and_skips_blanks_and_comments():
    text = "# ids\n\nemployee_id: EMP-\\d{6}\r\n  ticket :  TKT-\\d+  \n"
    assert clean_patterns(text) == [
        {"name": "employee_id", "pattern": "EMP-\\d{6}"},
        {"name": "ticket", "pattern": "TKT-\\d+"},
    ]
    assert clean_patterns(clean_patterns(text)) == clean_patterns(text)
    assert clean_patterns("") == [] and clean_patterns([]) == []


def raises(patterns, line: int, *fragments: str) -> PatternError:
    with pytest.raises(PatternError) as caught:
        clean_patterns(patterns)
    assert caught.value.line == line
    message = str(caught.value)
    assert message.startswith(f"line {line}")
    for fragment in fragments:
        assert fragment in message, message
    return caught.value


def test_a_pattern_that_does_not_compile_names_its_line():
    raises("ok: x\nemployee_id: EMP-(\\d{6}", 2, "(employee_id)", "does not compile", "missing )")


def test_look_arounds_and_backreferences_are_refused_with_a_hint():
    raises("x: (?<=id )\\d+", 1, "(x)", "does not compile", "not supported")
    raises("# c\ny: (a)\\1", 2, "(y)", "not supported")


def test_names_must_be_unique_and_not_builtin():
    raises("employee_id: A\nemployee_id: B", 2, "already used on line 1")
    raises("email: corp-mail-\\d+", 1, "(email)", "built-in name")
    raises("redacted: x", 1, "built-in")


def test_names_are_lowercase_words_of_at_most_40_characters():
    raises("Employee-ID: x", 1, "lowercase letters, digits or underscores")
    raises(f"{'a' * 41}: x", 1, "1-40")
    raises(": x", 1, "name is empty")
    raises("no colon here", 1, 'expected "name: pattern"')
    assert clean_patterns(f"{'a' * 40}: x")[0]["name"] == "a" * 40


def test_a_pattern_matching_the_empty_string_is_refused():
    for pattern in ("a*", "x?", "\\b", "^", "(?m)$", "(|abc)"):
        raises(f"p: {pattern}", 1, "matches the empty string")
    raises("p:   ", 1, "pattern is empty")


def test_patterns_have_a_length_and_a_number_limit():
    raises(f"long: {'a' * 301}", 1, "301 characters", "at most 300")
    assert clean_patterns(f"long: {'a' * 300}")
    many = "\n".join(f"p{i}: x{i}" for i in range(MAX_PATTERNS + 1))
    raises(many, MAX_PATTERNS + 1, f"(p{MAX_PATTERNS})", f"at most {MAX_PATTERNS}")
    assert len(clean_patterns("\n".join(many.splitlines()[:MAX_PATTERNS]))) == MAX_PATTERNS


def test_a_list_of_patterns_numbers_its_entries_as_lines():
    assert clean_patterns([{"name": "a", "pattern": " x+ "}]) == [{"name": "a", "pattern": "x+"}]
    raises([{"name": "a", "pattern": "x"}, {"name": "b"}], 2, '"pattern"')
    raises([{"name": "a", "pattern": "x"}, "b: y"], 2)
    raises([{"name": "a", "pattern": "("}], 1, "(a)", "does not compile")
    with pytest.raises(TypeError):
        clean_patterns({"name": "a", "pattern": "x"})


def test_the_redactor_refuses_invalid_patterns():
    with pytest.raises(PatternError):
        Redactor(patterns=[{"name": "bad", "pattern": "a*"}])


@pytest.mark.parametrize("text", ["", "en-GB", "kb-123", "12345678", "A-1042", "a@b.co", "x@y"])
def test_short_values_take_the_shortcut_without_changing_the_result(text):
    """The shortcut for short strings gives what the full passes give."""
    redactor = Redactor()
    assert redactor.redact([text]) == (
        [redactor.redact_text(text)[0]],
        redactor.redact_text(text)[1],
    )
    assert Redactor().redact(["a@b.co"])[1] == {"email": 1}


def test_machine_written_phone_numbers_keys_and_numbers_are_redacted():
    redactor = Redactor()
    assert redactor.redact_text("call +447700900123 now") == ("call [PHONE] now", {"phone": 1})
    assert redactor.redact_text("order 12345678901") == ("order 12345678901", {})
    value, counts = redactor.redact({"card": 4111111111111111, "jo@example.com": "x", "n": 5})
    assert value == {"card": "[CARD]", "[EMAIL]": "x", "n": 5}
    assert counts == {"card": 1, "email": 1}
    assert redactor.redact(123456789) == (123456789, {})  # not a card: left as it was
