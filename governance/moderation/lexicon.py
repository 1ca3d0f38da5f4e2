"""Category-tagged keyword lexicon matched with Aho-Corasick over normalised text.

A :class:`Lexicon` holds terms (each with a platform category and a weight) and an
allow-list: an allow-listed word that overlaps a hit suppresses it ("平台独立" is not
"台独", "向东突然" is not "东突"). Terms and text go through the same
:func:`~governance.moderation.normalize.normalize`, so evasions and traditional forms
match, and every span points into the original text. All overlapping matches are found
(an automaton over the whole lexicon, one pass per text). Terms that begin or end with a
Latin letter or digit match whole words only ("ass" does not hit "class").

File formats: text, one term per line with an optional ``\\tcategory`` and
``\\tweight`` (``#`` starts a comment); CSV with ``term,category[,weight]`` columns
(a header row naming ``term`` is skipped). ``version`` is a content hash, so a policy
can record which lexicon judged a text. Pure: no Django.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import ahocorasick

from governance.moderation.normalize import Normalized, normalize
from governance.moderation.taxonomy import is_known
from governance.moderation.types import CheckResult, Span

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "lexicons"


@dataclass(frozen=True)
class Term:
    """A lexicon entry: the term as written, its platform category and weight (0..1)."""

    text: str
    category: str
    weight: float = 1.0


@dataclass(frozen=True)
class _Entry:
    allowed: bool
    terms: tuple[Term, ...]
    length: int  # characters
    size: int  # bytes of UTF-8 (the automaton's symbols, see _encode)
    latin_start: bool
    latin_end: bool


class Lexicon:
    """Terms and allow-listed words; immutable once built.

    Raises ``ValueError`` for an unknown category or a weight outside 0..1.
    """

    def __init__(self, terms: Iterable[Term], allow: Iterable[str] = ()) -> None:
        self.terms: tuple[Term, ...] = tuple(sorted(set(terms), key=_term_key))
        self.allow: tuple[str, ...] = tuple(sorted({a.strip() for a in allow if a.strip()}))
        for term in self.terms:
            _validate(term)
        self.version = _content_hash(self.terms, self.allow)
        self._automaton = _build(self.terms, self.allow)

    def __len__(self) -> int:
        return len(self.terms)

    def __repr__(self) -> str:
        return f"Lexicon({len(self.terms)} terms, {len(self.allow)} allowed, {self.version})"

    def category_counts(self) -> dict[str, int]:
        """How many terms each category has."""
        counts: dict[str, int] = {}
        for term in self.terms:
            counts[term.category] = counts.get(term.category, 0) + 1
        return counts

    def find(self, text: str, *, checker: str = "lexicon") -> list[Span]:
        """Every term occurrence in ``text`` (overlaps included) not suppressed by an
        allow-listed word, as spans of the original text, ordered by position."""
        return self.match(normalize(text), checker=checker)

    def match(self, normalized: Normalized, *, checker: str = "lexicon") -> list[Span]:
        """:meth:`find` for text already normalised."""
        if self._automaton is None:
            return []
        hits, allowed = _scan(self._automaton, normalized.text)
        spans: list[Span] = []
        for start, end, entry in hits:
            if any(a < end and start < b for a, b in allowed):
                continue
            begin, finish = normalized.span(start, end)
            spans.extend(Span(begin, finish, t.category, checker, t.text) for t in entry.terms)
        return spans

    def merged(self, other: Lexicon) -> Lexicon:
        """A new lexicon with the terms and allow-lists of both."""
        return Lexicon(self.terms + other.terms, self.allow + other.allow)

    @classmethod
    def from_text(
        cls, source: str | Path | Iterable[str], *, category: str | None = None
    ) -> Lexicon:
        """A lexicon from text lines (a path, a string or lines); ``category`` is used
        for lines without one (else such a line raises ``ValueError``)."""
        return cls(read_text_terms(_lines(source), category=category))

    @classmethod
    def from_csv(cls, source: str | Path | Iterable[str]) -> Lexicon:
        """A lexicon from ``term,category[,weight]`` CSV rows."""
        return cls(read_csv_terms(_lines(source)))

    @classmethod
    def from_dir(cls, directory: str | Path) -> Lexicon:
        """Every ``*.tsv``/``*.txt`` (terms) and ``*.csv`` file in ``directory``; files
        named ``allow*.txt`` are allow-lists, one word per line."""
        terms: list[Term] = []
        allow: list[str] = []
        for path in sorted(Path(directory).iterdir()):
            if path.name.startswith("allow") and path.suffix == ".txt":
                allow.extend(_words(_lines(path)))
            elif path.suffix in (".tsv", ".txt"):
                terms.extend(read_text_terms(_lines(path), source=path.name))
            elif path.suffix == ".csv":
                terms.extend(read_csv_terms(_lines(path), source=path.name))
        return cls(terms, allow)


class LexiconChecker:
    """Scores each category by the highest weight among its terms found in the text."""

    name: ClassVar[str] = "lexicon"
    cost: ClassVar[int] = 1

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self.lexicon = lexicon if lexicon is not None else default_lexicon()
        self._weights = {(t.text, t.category): t.weight for t in self.lexicon.terms}

    def check(self, text: str) -> CheckResult:
        spans = self.lexicon.find(text, checker=self.name)
        scores: dict[str, float] = {}
        for span in spans:
            weight = self._weights.get((span.term, span.category), 1.0)
            scores[span.category] = max(scores.get(span.category, 0.0), weight)
        detail = {"lexicon_version": self.lexicon.version}
        return CheckResult(self.name, scores, spans, detail)


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The curated starter lexicon shipped in ``governance/data/lexicons`` (built once)."""
    return Lexicon.from_dir(DATA_DIR)


def read_text_terms(
    lines: Iterable[str], *, category: str | None = None, source: str = "<text>"
) -> list[Term]:
    """Terms from ``term[\\tcategory[\\tweight]]`` lines; blank lines and ``#`` comments
    are skipped. Raises ``ValueError`` naming the line for a missing category or a bad
    weight."""
    terms: list[Term] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split("\t")]
        terms.append(_term(fields, category, f"{source}:{number}"))
    return terms


def read_csv_terms(lines: Iterable[str], *, source: str = "<csv>") -> list[Term]:
    """Terms from ``term,category[,weight]`` CSV rows (a ``term`` header is skipped)."""
    terms: list[Term] = []
    for number, row in enumerate(csv.reader(lines), 1):
        fields = [f.strip() for f in row]
        if not fields or not fields[0] or (number == 1 and fields[0].lower() == "term"):
            continue
        terms.append(_term(fields, None, f"{source}:{number}"))
    return terms


def _term(fields: list[str], default: str | None, where: str) -> Term:
    category = fields[1] if len(fields) > 1 and fields[1] else default
    if category is None:
        raise ValueError(f"{where}: no category for term {fields[0]!r}.")
    try:
        weight = float(fields[2]) if len(fields) > 2 and fields[2] else 1.0
    except ValueError:
        raise ValueError(f"{where}: weight {fields[2]!r} is not a number.") from None
    term = Term(fields[0], category, weight)
    try:
        _validate(term)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return term


def _validate(term: Term) -> None:
    if not is_known(term.category):
        raise ValueError(f"unknown category {term.category!r} for term {term.text!r}.")
    if not 0.0 <= term.weight <= 1.0:
        raise ValueError(f"weight {term.weight} of {term.text!r} is outside 0..1.")


def _lines(source: str | Path | Iterable[str]) -> Iterator[str]:
    if isinstance(source, Path):
        yield from source.read_text(encoding="utf-8-sig").splitlines()
    elif isinstance(source, str):
        yield from io.StringIO(source).read().splitlines()
    else:
        for line in source:
            yield line.rstrip("\r\n")


def _words(lines: Iterable[str]) -> list[str]:
    return [w for w in (line.split("#", 1)[0].strip() for line in lines) if w]


def _term_key(term: Term) -> tuple[str, str, float]:
    return term.text, term.category, term.weight


def _content_hash(terms: tuple[Term, ...], allow: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for term in terms:
        digest.update(f"{term.text}\t{term.category}\t{term.weight:g}\n".encode())
    digest.update(b"\x00allow\n")
    for word in allow:
        digest.update(f"{word}\n".encode())
    return digest.hexdigest()[:16]


def _build(terms: tuple[Term, ...], allow: tuple[str, ...]) -> ahocorasick.Automaton | None:
    keyed: dict[str, list[Term]] = {}
    for term in terms:
        key = normalize(term.text).text
        if key:
            keyed.setdefault(key, []).append(term)
    allowed = {k for k in (normalize(word).text for word in allow) if k}
    if not keyed and not allowed:
        return None
    automaton = ahocorasick.Automaton()
    for key in keyed.keys() | allowed:
        entry = _Entry(
            key in allowed,
            tuple(keyed.get(key, ())),
            len(key),
            len(key.encode()),
            _latin(key[0]),
            _latin(key[-1]),
        )
        automaton.add_word(_encode(key), entry)
    automaton.make_automaton()
    return automaton


def _scan(
    automaton: ahocorasick.Automaton, text: str
) -> tuple[list[tuple[int, int, _Entry]], list[tuple[int, int]]]:
    hits: list[tuple[int, int, _Entry]] = []
    allowed: list[tuple[int, int]] = []
    encoded = _encode(text)
    ascii_only = len(encoded) == len(text)
    for last, entry in automaton.iter(encoded):
        begin = last + 1 - entry.size
        # UTF-8 is self-synchronising: a term's bytes can only match from the first byte
        # of a character, so every match is aligned; only its offset needs converting.
        start = begin if ascii_only else len(encoded[:begin].encode("latin-1").decode())
        end = start + entry.length
        if not _whole_word(text, start, end, entry):
            continue
        if entry.allowed:
            allowed.append((start, end))
        if entry.terms:
            hits.append((start, end, entry))
    return hits, allowed


def _encode(text: str) -> str:
    """One symbol per byte of UTF-8: pyahocorasick finds a node's child by a linear
    scan, so a root with thousands of CJK children is slow; bytes keep fan-out ≤ 256.
    (UTF-8 rather than UTF-32: a match can never start inside a character, so no
    misaligned matches reach Python, and the text is shorter.)"""
    return text.encode().decode("latin-1")


def _whole_word(text: str, start: int, end: int, entry: _Entry) -> bool:
    if entry.latin_start and start > 0 and _latin(text[start - 1]):
        return False
    return not (entry.latin_end and end < len(text) and _latin(text[end]))


def _latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()
