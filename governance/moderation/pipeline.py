"""The moderation pipeline: checkers cheapest first, merged scores, thresholds, early stop.

``Pipeline(checkers, thresholds).run(text, decide=...)`` runs each checker in order of
``cost``; after each one the merged scores (max per category) go to ``decide``, and when
it returns True the outcome can no longer change (e.g. a block is already certain) and the
remaining, dearer checkers are skipped. ``decide=pipeline.is_flagged`` stops as soon as
any category crosses its threshold. Pure: no Django.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from governance.moderation.lexicon import LexiconChecker
from governance.moderation.patterns import PatternChecker
from governance.moderation.pii import PiiChecker
from governance.moderation.taxonomy import DETECTORS, rollup
from governance.moderation.types import Checker, CheckResult, Span

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
CLASSIFIER = "governance.moderation.classifier:ClassifierChecker"

Decide = Callable[[Mapping[str, float]], bool]


@dataclass
class Verdict:
    """The pipeline's outcome for one text.

    ``scores``: category → max score over the checkers that ran (detector categories
    also counted under their risk); ``categories``: category → whether its score reached
    its threshold; ``flagged``: any of them did; ``results`` per checker that ran and
    ``skipped``: the checkers an early stop left out.
    """

    scores: dict[str, float]
    spans: list[Span]
    results: list[CheckResult]
    flagged: bool
    categories: dict[str, bool]
    skipped: list[str] = field(default_factory=list)


class Pipeline:
    """Runs ``checkers`` cheapest first (stable for equal cost).

    ``thresholds`` maps a category code, a class (``"A2"``) or ``"default"`` to the score
    at which it flags; the most specific key wins, a detector category falls back to its
    risk's, and everything to :data:`DEFAULT_THRESHOLD`.
    """

    def __init__(
        self, checkers: Iterable[Checker], thresholds: Mapping[str, float] | None = None
    ) -> None:
        self.checkers: list[Checker] = sorted(checkers, key=lambda c: c.cost)
        self.thresholds: dict[str, float] = dict(thresholds or {})

    def threshold(self, category: str) -> float:
        """The score at which ``category`` flags."""
        for key in (category, DETECTORS.get(category, ""), category.split("_")[0]):
            if key in self.thresholds:
                return self.thresholds[key]
        return self.thresholds.get("default", DEFAULT_THRESHOLD)

    def is_flagged(self, scores: Mapping[str, float]) -> bool:
        """Whether any category in ``scores`` reaches its threshold (usable as ``decide``)."""
        return any(score >= self.threshold(code) for code, score in scores.items())

    def run(
        self,
        text: str,
        *,
        decide: Decide | None = None,
        given: Mapping[str, CheckResult] | None = None,
    ) -> Verdict:
        """Check ``text``; see the module docstring for ``decide``. ``given``: results
        already had, by checker name (e.g. from a batched pass), used instead of running
        those checkers."""
        scores: dict[str, float] = {}
        spans: list[Span] = []
        results: list[CheckResult] = []
        skipped: list[str] = []
        for i, checker in enumerate(self.checkers):
            result = given.get(checker.name) if given else None
            _add(result or checker.check(text), scores, spans, results)
            if decide is not None and decide(scores):
                skipped = [c.name for c in self.checkers[i + 1 :]]
                break
        return self._verdict(scores, spans, results, skipped)

    def extend(self, verdict: Verdict, results: Iterable[CheckResult]) -> Verdict:
        """``verdict`` with more checkers' ``results`` merged in (dearer stages that ran
        later, or elsewhere); the skipped list loses their names."""
        scores, spans, merged = dict(verdict.scores), list(verdict.spans), list(verdict.results)
        names = set()
        for result in results:
            _add(result, scores, spans, merged)
            names.add(result.checker)
        skipped = [name for name in verdict.skipped if name not in names]
        return self._verdict(scores, spans, merged, skipped)

    def _verdict(
        self,
        scores: dict[str, float],
        spans: list[Span],
        results: list[CheckResult],
        skipped: list[str],
    ) -> Verdict:
        categories = {code: score >= self.threshold(code) for code, score in scores.items()}
        spans.sort(key=lambda s: (s.start, s.end))
        return Verdict(scores, spans, results, any(categories.values()), categories, skipped)


def _add(
    result: CheckResult, scores: dict[str, float], spans: list[Span], results: list[CheckResult]
) -> None:
    results.append(result)
    spans.extend(result.spans)
    for code, score in rollup(result.scores).items():
        scores[code] = max(scores.get(code, 0.0), score)


def default_pipeline(
    thresholds: Mapping[str, float] | None = None, *, classifier: bool = True
) -> Pipeline:
    """The normalised lexicon, the starter patterns and PII, plus the classifier when
    its module and model are available (it is skipped, with a log line, otherwise)."""
    checkers: list[Checker] = [LexiconChecker(), PatternChecker(), PiiChecker()]
    if classifier:
        loaded = load_classifier()
        if loaded is not None:
            checkers.append(loaded)
    return Pipeline(checkers, thresholds)


def load_classifier() -> Checker | None:
    """The classifier checker, or None when it cannot be imported or has no model."""
    module, _, attr = CLASSIFIER.partition(":")
    try:
        cls: Any = getattr(importlib.import_module(module), attr)
        checker: Checker = cls()
    except (ImportError, AttributeError, OSError, ValueError) as exc:
        logger.info("Moderation classifier unavailable, skipped: %s", exc)
        return None
    return checker
