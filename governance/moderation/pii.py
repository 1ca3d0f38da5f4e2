"""Personal-information detectors and redaction.

Finds Chinese resident ID numbers (18 characters: a plausible province code, a valid
birth date not in the future, the ISO 7064 MOD 11-2 check character), mainland mobile
numbers (optionally ``+86``), e-mail addresses and bank card numbers (16–19 digits, in
one run or in groups of four, Luhn-valid). A number inside a longer run of digits is not
matched. Categories are ``PII_ID_CARD``, ``PII_PHONE``, ``PII_EMAIL`` and
``PII_BANK_CARD``, all under risk ``A4_f``. Pure: no Django.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date
from typing import ClassVar

from governance.moderation.types import CheckResult, Span

# Province-level codes (GB/T 2260): 11–15, 21–23, 31–37, 41–46, 50–54, 61–65, 71, 81–83.
PROVINCES = frozenset(
    (
        *range(11, 16),
        *range(21, 24),
        *range(31, 38),
        *range(41, 47),
        *range(50, 55),
        *range(61, 66),
        71,
        81,
        82,
        83,
    )
)
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"

_ID = re.compile(r"(?<![0-9])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])")
_PHONE = re.compile(r"(?<![0-9+])(?:\+?86[ -]?)?1[3-9][0-9]{9}(?![0-9])")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_CARD = re.compile(
    r"(?<![0-9])(?<![0-9][ -])(?:[0-9]{16,19}|[0-9]{4}(?:([ -])[0-9]{4}){3}(?:\1[0-9]{1,3})?)"
    r"(?![0-9])(?![ -][0-9])"
)
_TRIGGER = re.compile(r"[0-9@]")
_MIN_BIRTH_YEAR = 1900


def id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits of an ID number."""
    total = sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True))
    return ID_CHECK[total % 11]


def is_valid_id(number: str, *, today: date | None = None) -> bool:
    """Whether ``number`` is a well-formed resident ID: 18 characters, a known province
    code, a real birth date between 1900 and ``today``, and the right check character."""
    if len(number) != 18 or not number[:17].isdigit() or int(number[:2]) not in PROVINCES:
        return False
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if born.year < _MIN_BIRTH_YEAR or born > (today or date.today()):
        return False
    return id_check_char(number[:17]) == number[17].upper()


def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def is_valid_card(number: str) -> bool:
    """Whether ``number`` (spaces and dashes allowed) is 16–19 digits passing Luhn."""
    digits = number.replace(" ", "").replace("-", "")
    return digits.isdigit() and 16 <= len(digits) <= 19 and luhn_ok(digits)


def find_pii(text: str, *, checker: str = "pii") -> list[Span]:
    """Every ID number, mobile number, e-mail and bank card in ``text``, by position.

    A digit run that is a valid ID number is not also reported as a card.
    """
    if _TRIGGER.search(text) is None:  # the common case: nothing that could be PII
        return []
    spans: list[Span] = []
    ids = _find(_ID.finditer(text), is_valid_id, "PII_ID_CARD", checker)
    spans.extend(ids)
    spans.extend(_find(_PHONE.finditer(text), None, "PII_PHONE", checker))
    if "@" in text:
        spans.extend(_find(_EMAIL.finditer(text), None, "PII_EMAIL", checker))
    taken = {(s.start, s.end) for s in ids}
    cards = _find(_CARD.finditer(text), is_valid_card, "PII_BANK_CARD", checker)
    spans.extend(s for s in cards if (s.start, s.end) not in taken)
    return sorted(spans, key=lambda s: (s.start, s.end))


def redact(text: str, spans: Iterable[Span], *, template: str = "[{category}]") -> str:
    """``text`` with each span replaced by ``template`` (``{category}`` and ``{term}``
    are filled in); overlapping spans are merged, the first one's category wins."""
    out: list[str] = []
    at = 0
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.end <= at:
            continue
        if span.start >= at:
            out.append(text[at : span.start])
            out.append(template.format(category=span.category, term=span.term))
        at = max(at, span.end)
    out.append(text[at:])
    return "".join(out)


class PiiChecker:
    """Scores each PII category found (and ``A4_f``) 1.0; spans carry the ``PII_*``
    category, so a policy can redact them with :func:`redact`."""

    name: ClassVar[str] = "pii"
    cost: ClassVar[int] = 1

    def check(self, text: str) -> CheckResult:
        spans = find_pii(text, checker=self.name)
        scores = dict.fromkeys((s.category for s in spans), 1.0)
        if scores:
            scores["A4_f"] = 1.0
        return CheckResult(self.name, scores, spans)


def _find(
    matches: Iterable[re.Match[str]],
    valid: Callable[[str], bool] | None,
    category: str,
    checker: str,
) -> list[Span]:
    return [
        Span(m.start(), m.end(), category, checker, m.group())
        for m in matches
        if valid is None or valid(m.group())
    ]
