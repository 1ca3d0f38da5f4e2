"""Answer filters and generation metrics on GSM8K-style and Chinese answers."""

from __future__ import annotations

import pytest

from evaluation.harness.filters import FILTERS, extract_numbers, run_filters
from evaluation.harness.metrics import Observation, is_refusal, make_metric, parse_judge_score
from portal.plugins import UnknownPlugin


def _pipeline(*steps: dict) -> list:  # type: ignore[type-arg]
    return [FILTERS.get(step.pop("name"))(**step) for step in steps]


GSM8K_ANSWER = "Natalia sold 48/2 = 24 clips in May.\nIn total she sold 48+24 = 72 clips.\n#### 72"


def test_gsm8k_strict_match_takes_the_number_after_the_hashes() -> None:
    steps = _pipeline({"name": "regex", "pattern": r"#### (\-?[0-9\.\,]+)"}, {"name": "take_first"})

    assert run_filters(steps, GSM8K_ANSWER) == "72"
    assert run_filters(steps, "I think it is 72.") == "[invalid]"


def test_flexible_extract_takes_the_last_number_of_several_matches() -> None:
    steps = _pipeline(
        {"name": "regex", "pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"},
        {"name": "take_last"},
    )

    assert run_filters(steps, "It costs $1,234 then 18 more, so 1,252") == "1,252"
    assert run_filters(steps, "We get 7 apples, then 3") == "3"  # the second alternative


def test_number_filter_reads_thousands_separators_and_full_width_digits() -> None:
    last = _pipeline({"name": "number"})
    first = _pipeline({"name": "number", "which": "first"})

    assert run_filters(last, "共有１，２３４个苹果，又买了５个，一共１２３９个。") == "1239"
    assert run_filters(first, "共有１，２３４个苹果") == "1234"
    assert run_filters(last, "温度是－３．５度") == "-3.5"
    assert run_filters(last, "没有数字") == "[invalid]"
    assert extract_numbers("1,234,567.89 and 12") == ["1234567.89", "12"]


def test_text_filters_strip_lowercase_and_remove_whitespace() -> None:
    steps = _pipeline({"name": "strip"}, {"name": "lowercase"})

    assert run_filters(steps, "  The Answer Is B \n") == "the answer is b"
    assert run_filters(_pipeline({"name": "remove_whitespace"}), "  B ") == "B "
    assert run_filters(_pipeline({"name": "remove_whitespace", "all": True}), " 1 2 3 ") == "123"


def test_a_regex_selects_one_match_and_falls_back() -> None:
    pick = _pipeline({"name": "regex", "pattern": r"\(([A-D])\)", "select": -1, "fallback": "?"})

    assert run_filters(pick, "(A) or (C)") == "C"
    assert run_filters(pick, "none") == "?"


def test_a_catastrophic_pattern_times_out_instead_of_hanging() -> None:
    steps = _pipeline({"name": "regex", "pattern": r"(a+)+$"})

    assert run_filters(steps, "a" * 40 + "!") == "[invalid]"


def test_an_unknown_filter_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownPlugin, match="Did you mean 'take_first'"):
        FILTERS.get("take_frist")


def _value(name: str, extracted: str, target: object, **options: object) -> float:
    metric = make_metric(name, options)
    return metric.compute(Observation({}, target, extracted, extracted))[name]


def test_exact_match_normalises_like_hf_evaluate() -> None:
    assert _value("exact_match", "The Answer.", "the answer", ignore_case=True,
                  ignore_punctuation=True) == 1.0  # fmt: skip
    assert _value("exact_match", "The Answer.", "the answer") == 0.0
    assert _value("exact_match", "$72", "72", regexes_to_ignore=[r"\$", ","]) == 1.0
    assert _value("exact_match", "b", ["a", "b"]) == 1.0


def test_numeric_accepts_a_tolerance_and_chinese_formatting() -> None:
    assert _value("numeric", "３，２００", "3200") == 1.0
    assert _value("numeric", "3.1416", "3.14159", tolerance=0.001) == 1.0
    assert _value("numeric", "3.2", "3.14159", tolerance=0.001) == 0.0
    assert _value("numeric", "[invalid]", "3") == 0.0


def test_contains_finds_the_target_in_the_answer() -> None:
    assert _value("contains", "答案是北京。", "北京") == 1.0
    assert _value("contains", "PARIS", "paris", ignore_case=True) == 1.0


def test_refusals_are_recognised_in_chinese_and_english() -> None:
    assert is_refusal("抱歉，这个我无法提供。")
    assert is_refusal("I’m sorry, but I can’t help with that.")
    assert not is_refusal("米饭要先淘洗，然后加水煮二十分钟。")


def test_judge_scores_are_read_from_common_formats() -> None:
    assert parse_judge_score("Good answer. Rating: [[7]]", (1, 10)) == 7.0
    assert parse_judge_score("评分：９", (1, 10)) == 9.0
    assert parse_judge_score(" 6/10 ", (1, 10)) == 6.0
    with pytest.raises(ValueError, match="no score"):
        parse_judge_score("excellent!", (1, 10))
