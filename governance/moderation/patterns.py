"""Regular-expression checker: user patterns, each tagged with a platform category.

Patterns are compiled with the ``regex`` module and matched with a per-text timeout, so a
catastrophically backtracking user pattern costs at most ``timeout`` seconds and is
reported in ``detail["timed_out"]`` rather than hanging the pipeline. Patterns see the
original text (spans need no mapping); write them to tolerate spacing where needed.
Pure: no Django.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import regex

from governance.moderation.taxonomy import is_known
from governance.moderation.types import CheckResult, Span

DEFAULT_TIMEOUT = 0.05


@dataclass(frozen=True)
class Pattern:
    """A named pattern: matches score ``category`` with ``weight`` (0..1).

    Raises ``ValueError`` for an unknown category, a bad weight or a pattern that does
    not compile.
    """

    name: str
    pattern: str
    category: str
    weight: float = 1.0
    flags: int = regex.IGNORECASE
    compiled: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not is_known(self.category):
            raise ValueError(f"Pattern {self.name!r}: unknown category {self.category!r}.")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"Pattern {self.name!r}: weight {self.weight} is outside 0..1.")
        try:
            compiled = regex.compile(self.pattern, self.flags | regex.VERSION1)
        except regex.error as exc:
            raise ValueError(f"Pattern {self.name!r} does not compile: {exc}") from None
        object.__setattr__(self, "compiled", compiled)


# A few starter patterns: solicitation for prohibited trade, written to tolerate spacing.
# Case-sensitive, with the one cased letter's forms spelled out ("K", "k" and the Kelvin
# sign, what IGNORECASE's full case folding matches): the same matches, and regex's
# case-insensitive search costs several times more per character.
STARTER_PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "gun-sale",
        r"(?:出售|卖|代购|收购)\s*(?:各种|各类)?\s*(?:枪支|手枪|猎枪|气枪|子弹)",
        "A1_h",
        flags=0,
    ),
    Pattern(
        "drug-sale",
        r"(?:出售|卖|代购)\s*(?:冰毒|海洛因|大麻|[Kk\u212a]粉|摇头丸)",
        "A1_h",
        flags=0,
    ),
    Pattern(
        "fake-documents",
        r"(?:代办|办理|制作)\s*(?:假\s*证|假\s*文凭|假\s*学历|假\s*身份证)",
        "A1_h",
        flags=0,
    ),
    Pattern(
        "gambling-invite",
        r"(?:在线|网上)\s*(?:赌场|博彩|百家乐)\s*(?:注册|充值|开户)",
        "A1_h",
        flags=0,
    ),
)

# "(?" may open only a non-capturing group or a lookaround in a pattern that joins a
# prefilter: those keep their meaning as one branch of a larger pattern (flags, groups,
# recursion and the like might not).
_UNSCOPED = regex.compile(r"\(\?(?![:=!]|<[=!])")


class PatternChecker:
    """Matches every pattern against the text; a category scores the highest weight
    among its patterns that matched."""

    name: ClassVar[str] = "patterns"
    cost: ClassVar[int] = 1

    def __init__(
        self, patterns: Iterable[Pattern] | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.patterns = tuple(STARTER_PATTERNS if patterns is None else patterns)
        self.timeout = timeout
        self._prefilters = _prefilters(self.patterns)

    def check(self, text: str) -> CheckResult:
        scores: dict[str, float] = {}
        spans: list[Span] = []
        timed_out: list[str] = []
        quiet = self._quiet(text)
        for i, pattern in enumerate(self.patterns):
            if i in quiet:
                continue
            try:
                found = [
                    Span(m.start(), m.end(), pattern.category, self.name, pattern.name)
                    # concurrent=False: keep the GIL. Releasing and taking it back for
                    # each short text costs more than the match itself, and far more
                    # when another thread of the process (the gateway has a few) runs.
                    for m in pattern.compiled.finditer(text, concurrent=False, timeout=self.timeout)
                ]
            except TimeoutError:
                timed_out.append(pattern.name)
                continue
            if found:
                spans.extend(found)
                scores[pattern.category] = max(scores.get(pattern.category, 0.0), pattern.weight)
        detail: dict[str, Any] = {"timed_out": timed_out} if timed_out else {}
        return CheckResult(self.name, scores, sorted(spans, key=_position), detail)

    def _quiet(self, text: str) -> set[int]:
        """The patterns that a prefilter proved have no match in ``text``: one search
        for the alternation of several patterns finds nothing only when none of them
        matches anywhere (a timed-out prefilter proves nothing)."""
        quiet: set[int] = set()
        for combined, members in self._prefilters:
            try:
                if combined.search(text, concurrent=False, timeout=self.timeout) is None:
                    quiet.update(members)
            except TimeoutError:
                continue
        return quiet


def _prefilters(patterns: tuple[Pattern, ...]) -> list[tuple[Any, tuple[int, ...]]]:
    """One alternation per set of at least two patterns with the same flags, not
    verbose, without capture groups (whose numbers would shift) and with no "(?"
    construct but non-capturing groups and lookarounds: (compiled, their indexes)."""
    by_flags: dict[int, list[int]] = {}
    for i, pattern in enumerate(patterns):
        if (
            pattern.compiled.groups == 0
            and not pattern.flags & regex.VERBOSE
            and _UNSCOPED.search(pattern.pattern) is None
        ):
            by_flags.setdefault(pattern.flags, []).append(i)
    out: list[tuple[Any, tuple[int, ...]]] = []
    for flags, members in by_flags.items():
        if len(members) < 2:
            continue
        source = "|".join(f"(?:{patterns[i].pattern})" for i in members)
        try:
            out.append((regex.compile(source, flags | regex.VERSION1), tuple(members)))
        except regex.error:
            continue
    return out


def _position(span: Span) -> tuple[int, int]:
    return span.start, span.end
