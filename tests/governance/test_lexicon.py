from __future__ import annotations

from pathlib import Path

import pytest

from governance.moderation.lexicon import Lexicon, LexiconChecker, Term, default_lexicon
from governance.moderation.taxonomy import RISKS


def lexicon(*terms: tuple[str, str], allow: tuple[str, ...] = ()) -> Lexicon:
    return Lexicon([Term(t, c) for t, c in terms], allow)


def test_overlapping_terms_are_all_found():
    lex = lexicon(("法轮", "A1_h"), ("轮功", "A1_h"), ("法轮功", "A1_h"))
    assert sorted(s.term for s in lex.find("练法轮功的人")) == ["法轮", "法轮功", "轮功"]


def test_an_evasion_is_found_and_its_span_covers_the_original_characters():
    lex = lexicon(("法轮功", "A1_h"))
    text = "他们在练 法-輪 功 呢"
    [span] = lex.find(text)
    assert text[span.start : span.end] == "法-輪 功"
    assert (span.category, span.checker, span.term) == ("A1_h", "lexicon", "法轮功")


def test_an_allow_listed_word_suppresses_the_hit_it_overlaps():
    lex = lexicon(("台独", "A1_c"), allow=("平台独立",))
    assert lex.find("这个平台独立部署") == []
    assert [s.term for s in lex.find("反对台独")] == ["台独"]


def test_latin_terms_match_whole_words_only():
    lex = lexicon(("ass", "A2_i"))
    assert lex.find("a classic class") == []
    assert [s.term for s in lex.find("you ASS!")] == ["ass"]


def test_text_import_takes_a_default_category_and_rejects_unknown_ones():
    lex = Lexicon.from_text("傻逼\tA2_i\n# comment\n\n废物\tA2_i\t0.4\n人渣", category="A2_i")
    assert {(t.text, t.weight) for t in lex.terms} == {("傻逼", 1.0), ("废物", 0.4), ("人渣", 1.0)}
    with pytest.raises(ValueError, match="<text>:1: unknown category 'B9'"):
        Lexicon.from_text("傻逼\tB9")
    with pytest.raises(ValueError, match="no category"):
        Lexicon.from_text("傻逼")


def test_csv_import_skips_the_header(tmp_path: Path):
    path = tmp_path / "terms.csv"
    path.write_text("term,category,weight\n黑鬼,A2_a,\n地域黑,A2_d,0.6\n", encoding="utf-8")
    lex = Lexicon.from_csv(path)
    assert lex.category_counts() == {"A2_a": 1, "A2_d": 1}


def test_version_is_a_content_hash_independent_of_order():
    one = lexicon(("黑鬼", "A2_a"), ("支那", "A2_c"), allow=("支那么",))
    same = lexicon(("支那", "A2_c"), ("黑鬼", "A2_a"), allow=("支那么",))
    other = lexicon(("支那", "A2_c"), ("黑鬼", "A2_a"))
    assert one.version == same.version != other.version


def test_checker_scores_a_category_by_its_heaviest_hit():
    lex = Lexicon([Term("废物", "A2_i", 0.4), Term("人渣", "A2_i", 0.9)])
    result = LexiconChecker(lex).check("废物人渣")
    assert result.scores == {"A2_i": 0.9}
    assert result.detail["lexicon_version"] == lex.version


def test_starter_lexicon_covers_every_a1_and_a2_risk_and_its_allow_list_works():
    lex = default_lexicon()
    wanted = {code for code in RISKS if code[:2] in ("A1", "A2")}
    assert wanted <= set(lex.category_counts())
    checker = LexiconChecker()
    assert checker.check("向东突然转弯，平台独立部署，玉米棒子面").scores == {}
    assert checker.check("臺 獨分子").scores == {"A1_c": 1.0}


def test_starter_lexicon_leaves_ordinary_comments_alone():
    ordinary = [
        "今天天气不错，我们一起去公园散步吧",
        "这个项目没有一个人能按时完成，领导很头疼",
        "北京和上海的房价都很高，年轻人压力大",
        "玻璃杯摔碎了，记得打扫干净",
    ]
    checker = LexiconChecker()
    assert [checker.check(t).scores for t in ordinary] == [{}, {}, {}, {}]


def test_lexicon_checker_is_registered():
    from governance.moderation import CHECKERS

    assert CHECKERS.get("lexicon") is LexiconChecker
    assert {"lexicon", "patterns", "pii", "classifier"} <= set(CHECKERS.names())


@pytest.mark.parametrize(
    "text",
    ["😀a颠覆国家政权b", "x𠀀颠覆国家政权", "é颠覆国家政权", "ascii then 颠覆国家政权"],
)
def test_spans_stay_on_character_offsets_after_multibyte_characters(text: str) -> None:
    checker = LexiconChecker(Lexicon([Term("颠覆国家政权", "A1_a")]))
    (span,) = checker.check(text).spans
    assert text[span.start : span.end] == "颠覆国家政权"
