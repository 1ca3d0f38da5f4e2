"""Detectors of personal information in Chinese and English text, as pure functions.

A candidate counts only when it passes the checks a real number passes: a resident ID
its ISO 7064 MOD 11-2 check digit and a real birth date, a bank card the Luhn check. A
digit string that fails them (an order number, a timestamp) is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import NamedTuple

KINDS = ("id_card", "mobile", "email", "bank_card")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


class Match(NamedTuple):
    kind: str
    start: int
    end: int
    text: str


def id_check_digit(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of an 18-character resident ID."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def is_real_date(year: int, month: int, day: int) -> bool:
    """A calendar date from 1900 up to today (a birth date)."""
    try:
        born = date(year, month, day)
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date.today()


def is_resident_id(text: str) -> bool:
    """An 18-character ID (check digit, birth date) or a 15-digit legacy one (date)."""
    if len(text) == 15 and text.isdigit():
        return is_real_date(1900 + int(text[6:8]), int(text[8:10]), int(text[10:12]))
    if len(text) != 18 or not text[:17].isdigit():
        return False
    born = is_real_date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    return born and id_check_digit(text[:17]) == text[17].upper()


def luhn_ok(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


_DIGIT_RUN = re.compile(r"\d{3}")

# Digit look-arounds keep a candidate from being cut out of a longer number.
_PATTERNS: dict[str, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "email": (
        re.compile(
            r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"
        ),
        lambda text: ".." not in text,
    ),
    "id_card": (
        re.compile(r"(?<![0-9A-Za-z])(?:\d{17}[0-9Xx]|\d{15})(?![0-9A-Za-z])"),
        is_resident_id,
    ),
    "bank_card": (
        re.compile(r"(?<![\d-])\d{4}(?:[ -]?\d){12,15}(?![\d-])"),
        lambda text: luhn_ok(_digits(text)),
    ),
    "mobile": (
        re.compile(r"(?<![\d+])(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)"),
        lambda text: True,
    ),
}


def find_pii(text: str, kinds: tuple[str, ...] = KINDS) -> list[Match]:
    """Every checked occurrence of ``kinds`` in ``text``, sorted and non-overlapping.

    Where candidates overlap, the kind earlier in :data:`KINDS`'s order wins: a valid
    resident ID is not also reported as a bank card.
    """
    found: list[Match] = []
    # Most text has neither an "@" nor three digits in a row: skip those scans.
    skip = {"email"} if "@" not in text else set()
    if not _DIGIT_RUN.search(text):
        skip |= {"id_card", "bank_card", "mobile"}
    for kind in sorted(kinds, key=KINDS.index):
        if kind in skip:
            continue
        pattern, valid = _PATTERNS[kind]
        for hit in pattern.finditer(text):
            start, end = hit.span()
            if valid(hit.group()) and not any(start < m.end and m.start < end for m in found):
                found.append(Match(kind, start, end, hit.group()))
    return sorted(found, key=lambda m: m.start)


def redact(
    text: str, replacements: dict[str, str], kinds: tuple[str, ...] = KINDS
) -> tuple[str, list[Match]]:
    """``text`` with each match replaced by ``replacements[kind]``, and the matches."""
    matches = find_pii(text, kinds)
    if not matches:
        return text, matches
    parts, cursor = [], 0
    for match in matches:
        parts += [text[cursor : match.start], replacements[match.kind]]
        cursor = match.end
    parts.append(text[cursor:])
    return "".join(parts), matches
