"""Types shared by every moderation checker (pure: no Django)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class Span:
    """A match in the ORIGINAL text (normalisation maps offsets back)."""

    start: int
    end: int
    category: str
    checker: str
    term: str = ""


@dataclass
class CheckResult:
    """One checker's finding: platform category code (e.g. "A1_d", "A4_f") → score 0..1."""

    checker: str
    scores: dict[str, float]
    spans: list[Span] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


class Checker(Protocol):
    """A moderation checker, registered in ``CHECKERS`` (a ``portal.plugins.Registry``).

    ``cost`` orders the pipeline, cheaper first: regex/lexicon/pii 1, classifier 10,
    guard model 100.
    """

    name: ClassVar[str]
    cost: ClassVar[int]

    def check(self, text: str) -> CheckResult: ...
