from __future__ import annotations

from typing import ClassVar

import pytest

from governance.moderation.lexicon import Lexicon, LexiconChecker, Term
from governance.moderation.patterns import Pattern, PatternChecker
from governance.moderation.pii import PiiChecker
from governance.moderation.pipeline import Pipeline, default_pipeline
from governance.moderation.types import CheckResult


class Dear:
    """A costly checker that records the texts it saw."""

    name: ClassVar[str] = "dear"
    cost: ClassVar[int] = 10

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.seen: list[str] = []

    def check(self, text: str) -> CheckResult:
        self.seen.append(text)
        return CheckResult(self.name, dict(self.scores))


def insults() -> LexiconChecker:
    return LexiconChecker(Lexicon([Term("傻逼", "A2_i"), Term("废物", "A2_i", 0.3)]))


def test_checkers_run_cheapest_first_and_scores_merge_by_max():
    dear = Dear({"A2_i": 0.7, "A2_d": 0.2})
    verdict = Pipeline([dear, insults()]).run("你个废物")
    assert [r.checker for r in verdict.results] == ["lexicon", "dear"]
    assert verdict.scores == {"A2_i": 0.7, "A2_d": 0.2}
    assert verdict.categories == {"A2_i": True, "A2_d": False}
    assert verdict.flagged


def test_early_stop_skips_dearer_checkers_once_the_outcome_is_certain():
    dear = Dear({"A2_i": 0.9})
    pipeline = Pipeline([insults(), dear])
    verdict = pipeline.run("你个傻逼", decide=pipeline.is_flagged)
    assert verdict.flagged and verdict.skipped == ["dear"] and dear.seen == []
    pipeline.run("你好", decide=pipeline.is_flagged)
    assert dear.seen == ["你好"]


def test_thresholds_prefer_the_category_then_the_risk_then_the_class_then_default():
    pipeline = Pipeline([], {"A2_i": 0.9, "A4_f": 0.2, "A2": 0.6, "default": 0.4})
    assert pipeline.threshold("A2_i") == 0.9
    assert pipeline.threshold("PII_PHONE") == 0.2
    assert pipeline.threshold("A2_d") == 0.6
    assert pipeline.threshold("A1_a") == 0.4
    assert Pipeline([]).threshold("A1_a") == 0.5


def test_a_score_below_its_threshold_does_not_flag():
    verdict = Pipeline([insults()], {"A2_i": 0.5}).run("你个废物")
    assert verdict.scores == {"A2_i": 0.3}
    assert not verdict.flagged


def test_pii_scores_roll_up_to_personal_information():
    verdict = Pipeline([PiiChecker()]).run("电话 13812345678")
    assert verdict.scores == {"PII_PHONE": 1.0, "A4_f": 1.0}
    assert [s.category for s in verdict.spans] == ["PII_PHONE"]


def test_default_pipeline_flags_lexicon_patterns_and_pii_and_passes_plain_text():
    pipeline = default_pipeline(classifier=False)
    assert [c.name for c in pipeline.checkers] == ["lexicon", "patterns", "pii"]
    assert pipeline.run("你 是 傻 逼").categories == {"A2_i": True}
    assert pipeline.run("本店出售 手枪").categories == {"A1_h": True}
    assert pipeline.run("我的邮箱是 wang@example.com").flagged
    clean = pipeline.run("今天天气很好，我们去公园散步")
    assert not clean.flagged and clean.scores == {} and clean.spans == []


def test_pattern_timeouts_are_reported_not_raised():
    slow = Pattern("slow", r"(a|aa)+c", "A1_h", flags=0)
    result = PatternChecker([slow], timeout=0.01).check("a" * 40)
    assert result.detail == {"timed_out": ["slow"]}
    assert result.scores == {}


def test_bad_patterns_are_rejected_when_defined():
    with pytest.raises(ValueError, match="unknown category"):
        Pattern("p", "x", "Z9")
    with pytest.raises(ValueError, match="does not compile"):
        Pattern("p", "(unclosed", "A1_h")


def test_default_pipeline_adds_the_classifier_last_when_it_is_available():
    names = [c.name for c in default_pipeline().checkers]
    assert names == ["lexicon", "patterns", "pii", "classifier"]
