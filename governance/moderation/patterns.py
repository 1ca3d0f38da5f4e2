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
STARTER_PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "gun-sale",
        r"(?:出售|卖|代购|收购)\s*(?:各种|各类)?\s*(?:枪支|手枪|猎枪|气枪|子弹)",
        "A1_h",
    ),
    Pattern("drug-sale", r"(?:出售|卖|代购)\s*(?:冰毒|海洛因|大麻|K粉|摇头丸)", "A1_h"),
    Pattern(
        "fake-documents",
        r"(?:代办|办理|制作)\s*(?:假\s*证|假\s*文凭|假\s*学历|假\s*身份证)",
        "A1_h",
    ),
    Pattern(
        "gambling-invite",
        r"(?:在线|网上)\s*(?:赌场|博彩|百家乐)\s*(?:注册|充值|开户)",
        "A1_h",
    ),
)


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

    def check(self, text: str) -> CheckResult:
        scores: dict[str, float] = {}
        spans: list[Span] = []
        timed_out: list[str] = []
        for pattern in self.patterns:
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


def _position(span: Span) -> tuple[int, int]:
    return span.start, span.end
