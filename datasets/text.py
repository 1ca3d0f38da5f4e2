"""Text helpers shared by validation, statistics and processing: the text of a row and
its language (zh / en / other), with no dependency beyond the standard library."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

LANGUAGES = ("zh", "en", "other")


def string_leaves(value: Any) -> Iterator[str]:
    """Every string inside ``value`` (dict values and list items, depth first); keys of
    dicts are structure, not text, and are skipped."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_leaves(item)


def text_of(row: Any) -> str:
    """The row's text: its string leaves joined by newlines, whatever the layout."""
    return "\n".join(string_leaves(row))


def _is_han(code: int) -> bool:
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x2FA1F
    )


def language_of(text: str, min_letters: int = 1) -> str:
    """``zh`` when Han characters are at least 30 % of the letters, ``en`` when Latin
    letters are at least 50 %, else ``other`` (also for text without letters).

    Chinese is decided first and with a lower share because Chinese text routinely
    carries Latin names, code and units, while an English text with 30 % Han is rare.
    """
    han = latin = other = 0
    for char in text:
        code = ord(char)
        if code < 128:
            if char.isalpha():
                latin += 1
        elif _is_han(code):
            han += 1
        elif char.isalpha():
            other += 1
    letters = han + latin + other
    if letters < min_letters:
        return "other"
    if han * 10 >= letters * 3:
        return "zh"
    if latin * 2 >= letters:
        return "en"
    return "other"
