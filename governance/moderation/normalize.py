"""Text normalisation for matching, with a map back to the original offsets.

:func:`normalize` folds the evasions that defeat naive matching — full-width forms and
compatibility characters (NFKC, per character), case, traditional characters (OpenCC
``t2s``), zero-width characters anywhere, and separators (spaces, symbols, emoji,
inserted punctuation) between two word characters when one of them is CJK ("法 轮-功",
"法*轮功", "a 片") — and keeps, for every character of the result, the index of the
original character it came from, so that spans found in the normalised text point into
the original (:meth:`Normalized.span`).

Clause punctuation (，。！？；：、 and their ASCII forms) is kept: removing it would join
words across clauses. Pure: no Django.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import opencc

ZERO_WIDTH = frozenset(
    "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff"
)
_CJK_CLASS = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]"
_CJK = re.compile(_CJK_CLASS)
# A separator: not a letter or digit (isalnum), not clause punctuation or a newline. The
# class comes first so that the regex engine skips to candidates at C speed.
_SEPARATOR = r"[\W_](?<![,!?;:。、\n])"
_ALNUM = r"[^\W_]"  # \w but "_": what str.isalnum accepts
# An inserted run: a whole run of one to four separators between two letters or digits,
# one of them CJK (a code point of the CJK blocks unassigned in this Python's Unicode is
# no letter); a longer run is kept. The lookbehinds after the first separator look at
# the character before the run.
_INSERTED = re.compile(
    f"{_SEPARATOR}(?:"
    f"(?<={_CJK_CLASS}.)(?<={_ALNUM}.)(?:{_SEPARATOR}){{0,3}}(?={_ALNUM})"
    f"|(?<={_ALNUM}.)(?:{_SEPARATOR}){{0,3}}(?={_CJK_CLASS})(?={_ALNUM}))",
    re.DOTALL,
)

# Marks a zero-width character in the fast fold; a text holding NUL itself just takes the
# slow path.
_MARK = "\x00"
# Full-width punctuation common in Chinese text (each folds to its ASCII form).
_COMMON_MARKS = "，！？：；（）"
_lock = threading.Lock()
_built: _Tables | None = None


@dataclass(frozen=True)
class Normalized:
    """The normalised ``text`` and, per character of it, the original index it came from."""

    original: str
    text: str
    index: Sequence[int]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original ``[start, end)`` covering normalised characters ``[start, end)``."""
        if start >= end:
            at = self.index[start] if start < len(self.index) else len(self.original)
            return at, at
        return self.index[start], self.index[end - 1] + 1


def normalize(text: str) -> Normalized:
    """Normalise ``text`` for matching; see the module docstring for what is folded."""
    folded, index = _fold(text)
    simplified = _to_simplified(folded)
    if len(simplified) != len(folded):  # a phrase changed length: convert per character
        simplified = "".join(_char_to_simplified(c) for c in folded)
    if len(simplified) == len(folded):
        folded = simplified
    return _drop_inserted(text, folded, index)


def _fold(text: str) -> tuple[str, Sequence[int]]:
    """Each character's own fold (:func:`_fold_char`; zero-width ones dropped), joined,
    and the original index of each character of the result."""
    if text.isascii():
        return text.lower(), range(len(text))
    tables = _tables()
    if tables.expanding.search(text) is None:
        folded = _fold_in_place(text, tables)
        if folded is not None:
            return folded, range(len(text))
    # Folded piece by piece: the runs between the BMP characters that fold to more or
    # fewer than one character (an ellipsis is three dots, zero-width ones are dropped),
    # each run at once where it can be, and those characters one by one. A character's
    # fold does not depend on its neighbours, so the pieces join to the same result.
    chars: list[str] = []
    index: list[int] = []
    at = 0
    for match in tables.expanding.finditer(text):
        _fold_run(text, at, match.start(), tables, chars, index)
        if match.group() not in ZERO_WIDTH:
            folded = _fold_char(match.group())
            chars.append(folded)
            index.extend([match.start()] * len(folded))
        at = match.end()
    _fold_run(text, at, len(text), tables, chars, index)
    return "".join(chars), index


def _fold_in_place(text: str, tables: _Tables) -> str | None:
    """The fold of ``text`` when it keeps every character in place (one character each),
    else None. One table maps every BMP character whose fold is a single other character
    (full-width forms, compatibility ideographs) and marks zero-width ones; when nothing
    is marked and the result needs no further NFKC, the fold kept the length 1:1."""
    folded = _translate(text, tables)
    if _MARK not in folded and unicodedata.is_normalized("NFKC", folded):
        lowered = folded.casefold()
        if len(lowered) == len(text):
            return lowered
    return None


def _translate(text: str, tables: _Tables) -> str:
    """``text.translate(tables.fold)``, sooner: Chinese text mostly holds only a few
    full-width punctuation marks among the characters the table maps, and replacing
    those (C speed) then finding no other costs less than a table lookup per character.
    (Each replacement is a character the table leaves alone, so the result is the same.)"""
    for mark, replacement in tables.common:
        if mark in text:
            text = text.replace(mark, replacement)
    if tables.mapped.search(text) is None:
        return text
    return text.translate(tables.fold)


def _fold_run(
    text: str, start: int, end: int, tables: _Tables, chars: list[str], index: list[int]
) -> None:
    """Append the fold of ``text[start:end]`` and its original indexes."""
    run = text[start:end]
    folded = _fold_in_place(run, tables) if run else ""
    if folded is not None:
        chars.append(folded)
        index.extend(range(start, end))
        return
    for i, ch in enumerate(run, start):
        if ch in ZERO_WIDTH:
            continue
        one = _fold_char(ch)
        chars.append(one)
        index.extend([i] * len(one))


@lru_cache(maxsize=65536)
def _fold_char(ch: str) -> str:
    return unicodedata.normalize("NFKC", ch).casefold()


def _drop_inserted(original: str, text: str, index: Sequence[int]) -> Normalized:
    if text.isascii() or _CJK.search(text) is None:  # no CJK: nothing can be inserted
        return Normalized(original, text, index)
    runs = [m.span() for m in _INSERTED.finditer(text)]
    if not runs:
        return Normalized(original, text, index)
    parts: list[str] = []
    kept: list[int] = []
    at = 0
    for start, end in runs:
        parts.append(text[at:start])
        kept.extend(index[at:start])
        at = end
    parts.append(text[at:])
    kept.extend(index[at:])
    return Normalized(original, "".join(parts), tuple(kept))


def _to_simplified(text: str) -> str:
    if text.isascii():
        return text
    tables = _tables()
    if tables.traditional.search(text) is None:  # the common case: nothing to convert
        return text
    return str(tables.converter.convert(text))


@lru_cache(maxsize=65536)
def _char_to_simplified(ch: str) -> str:
    converted = str(_tables().converter.convert(ch))
    return converted if len(converted) == 1 else ch


@dataclass(frozen=True)
class _Tables:
    converter: opencc.OpenCC
    traditional: re.Pattern[str]  # matches any character that t2s changes
    fold: dict[int, str]  # str.translate table: one-character folds, zero-width → _MARK
    expanding: re.Pattern[str]  # a zero-width or BMP character whose fold is not 1 character
    mapped: re.Pattern[str]  # a character that ``fold`` maps
    common: tuple[tuple[str, str], ...]  # frequent ones (full-width punctuation), folded


def _tables() -> _Tables:
    """The t2s converter and the lookup tables, built once (about 0.3 s)."""
    global _built
    with _lock:
        if _built is None:
            converter = opencc.OpenCC("t2s")
            candidates = [chr(c) for c in range(0x3400, 0xA000)] + [
                chr(c) for c in range(0xF900, 0xFB00)
            ]
            # One call over all candidates, one per line; t2s keeps line structure.
            converted = str(converter.convert("\n".join(candidates))).split("\n")
            changed = "".join(c for c, s in zip(candidates, converted, strict=True) if c != s)
            fold, expanding = _fold_table()
            mapped = "".join(map(chr, fold))
            common = tuple(
                (mark, fold[ord(mark)])
                for mark in _COMMON_MARKS
                if ord(mark) in fold and ord(fold[ord(mark)]) not in fold
            )
            _built = _Tables(
                converter,
                re.compile(f"[{re.escape(changed)}]"),
                fold,
                re.compile(f"[{re.escape(expanding)}]"),
                re.compile(f"[{re.escape(mapped)}]"),
                common,
            )
        return _built


def _fold_table() -> tuple[dict[int, str], str]:
    """The translate table of one-character folds and the characters (zero-width, or
    BMP with a fold of another length) that ``expanding`` matches."""
    table: dict[int, str] = dict.fromkeys(map(ord, ZERO_WIDTH), _MARK)
    expanding = sorted(ZERO_WIDTH)
    for code in range(0x80, 0x10000):
        if 0xD800 <= code < 0xE000 or code in table:
            continue
        folded = _fold_char(chr(code))
        if len(folded) == 1 and folded != chr(code):
            table[code] = folded
        elif len(folded) != 1:
            expanding.append(chr(code))
    return table, "".join(expanding)
