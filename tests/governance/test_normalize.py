from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from governance.moderation.normalize import (
    _CJK,
    ZERO_WIDTH,
    _char_to_simplified,
    _to_simplified,
    normalize,
)


def test_full_width_forms_and_case_are_folded():
    assert normalize("ＡＢＣ１２３ Hello").text == "abc123 hello"


def test_traditional_characters_become_simplified():
    assert normalize("法輪功，臺灣頭髮").text == "法轮功,台湾头发"


def test_separators_inserted_between_cjk_characters_are_removed():
    for evasion in ("法 轮 功", "法-轮-功", "法*轮功", "法.轮.功", "法🌸轮🌸功", "法 ** 轮功"):
        assert normalize(evasion).text == "法轮功", evasion


def test_separator_between_cjk_and_a_letter_is_removed():
    assert normalize("a 片").text == "a片"


def test_zero_width_characters_are_removed_anywhere():
    assert normalize("法\u200b轮\u200d功，te\u200bst").text == "法轮功,test"


def test_clause_punctuation_and_latin_word_spaces_are_kept():
    assert normalize("你好，世界。hello world").text == "你好,世界。hello world"


def test_long_separator_runs_are_kept():
    assert normalize("法     轮").text == "法     轮"


def test_spans_map_back_to_the_original_text():
    original = "他说法 ** 輪功很好"
    normalized = normalize(original)
    start = normalized.text.index("法轮功")
    begin, end = normalized.span(start, start + 3)
    assert original[begin:end] == "法 ** 輪功"


def test_expanding_characters_map_to_their_source():
    original = "Straße ﬁle"  # ß casefolds to "ss", the ligature ﬁ is NFKC "fi"
    normalized = normalize(original)
    assert normalized.text == "strasse file"
    assert normalized.span(4, 6) == (4, 5)
    assert normalized.span(8, 10) == (7, 8)


@given(st.text(max_size=60))
def test_index_is_monotonic_and_points_into_the_original(text: str):
    normalized = normalize(text)
    assert len(normalized.index) == len(normalized.text)
    assert list(normalized.index) == sorted(normalized.index)
    assert all(0 <= i < len(text) for i in normalized.index)


@given(st.text(alphabet="法轮功台独 -*.\u200b臺獨ABC", max_size=30))
def test_normalising_twice_changes_nothing_more(text: str):
    once = normalize(text).text
    assert normalize(once).text == once


# --- the one-pass removal of inserted separators equals the run-by-run check ----------

_OLD_SEPARATORS = re.compile(r"(?:[^\w,!?;:。、\n]|_){1,4}")


def per_character_fold(original: str) -> tuple[str, list[int]]:
    """Each character's NFKC casefolded, zero-width ones dropped (the fold's definition)."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(original):
        if ch not in ZERO_WIDTH:
            folded = unicodedata.normalize("NFKC", ch).casefold()
            chars.append(folded)
            index.extend([i] * len(folded))
    return "".join(chars), index


def run_by_run(original: str) -> tuple[str, list[int]]:
    """:func:`normalize` as first written: folded character by character, then every
    separator run (cut to 4 characters) checked in Python for word characters on both
    sides, one of them CJK."""
    text, index = per_character_fold(original)
    simplified = _to_simplified(text)
    if len(simplified) != len(text):
        simplified = "".join(_char_to_simplified(c) for c in text)
    if len(simplified) == len(text):
        text = simplified

    def inserted(start: int, end: int) -> bool:
        if start == 0 or end >= len(text):
            return False
        before, after = text[start - 1], text[end]
        if not (before.isalnum() and after.isalnum()):
            return False
        return bool(_CJK.match(before) or _CJK.match(after))

    dropped: set[int] = set()
    for match in _OLD_SEPARATORS.finditer(text):
        if inserted(*match.span()):
            dropped.update(range(*match.span()))
    kept = [i for i in range(len(text)) if i not in dropped]
    return "".join(text[i] for i in kept), [index[i] for i in kept]


EVASIONS = st.text(
    alphabet=st.sampled_from(
        list("法轮功台独臺獨灣頭髮东突aZ9_ -*.·•~|/\\，,。、！!？?；;：:（）～\n\t\u3000\u200b")
        + list("ＡＢ１２＊－🌸😀👍🏽\U00020000ßﬁİ\u0301…㍻①½\U0001d400\x00\u00ad\ufeff")
    ),
    max_size=40,
)


@settings(max_examples=500)
@given(st.one_of(EVASIONS, st.text(max_size=80)))
def test_normalised_text_and_index_equal_the_run_by_run_check(text: str) -> None:
    result = normalize(text)
    assert (result.text, list(result.index)) == run_by_run(text)
