"""The pattern checker's shortcuts change no result: the case-sensitive starter patterns
match what their case-insensitive originals matched, and a prefilter that finds nothing
skips only patterns that would have found nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from governance.moderation.patterns import STARTER_PATTERNS, Pattern, PatternChecker

# The starter patterns as first shipped: case-insensitive, "K粉" spelled once.
ORIGINAL = [
    Pattern(p.name, p.pattern.replace("[Kk\\u212a]", "K"), p.category, p.weight)
    for p in STARTER_PATTERNS
]
PIECES = st.text(
    alphabet=st.sampled_from(
        list("出售卖代购收购各种类枪支手猎气子弹冰毒海洛因大麻粉摇头丸办理制作假证文凭学历身份")
        + list("在线网上赌场博彩百家乐注册充值开户 \t\u3000Kkκ\u212aＫ,，ab")
    ),
    max_size=40,
)


def spans(checker: PatternChecker, text: str) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.term) for s in checker.check(text).spans]


def test_the_starter_patterns_are_case_sensitive_and_share_one_prefilter() -> None:
    assert all(p.flags == 0 for p in STARTER_PATTERNS)
    assert [members for _, members in PatternChecker()._prefilters] == [(0, 1, 2, 3)]


@settings(max_examples=500)
@given(st.one_of(PIECES, st.text(max_size=60)))
def test_starter_patterns_match_as_the_case_insensitive_originals(text: str) -> None:
    original = PatternChecker(ORIGINAL)
    original._prefilters = []
    assert spans(PatternChecker(), text) == spans(original, text)


def test_every_character_that_folds_to_k_still_matches() -> None:
    new, old = STARTER_PATTERNS[1].compiled, ORIGINAL[1].compiled
    for code in range(0x110000):
        if 0xD800 <= code < 0xE000:
            continue
        text = f"出售{chr(code)}粉"
        assert (new.search(text) is None) == (old.search(text) is None), hex(code)


USER = [
    Pattern("a", r"ab+c", "A1_h"),
    Pattern("b", r"(?:x|y)\d{2}(?=z)", "A1_h"),
    Pattern("c", r"(q)\1", "A1_h"),  # a group: never in a prefilter
    Pattern("d", r"(?i)hello", "A1_h", flags=0),  # an inline flag: never in one
    Pattern("e", r"^start", "A1_h"),
    Pattern("f", r"end$", "A1_h", flags=0),
    Pattern("g", r"w", "A1_h", flags=0),
]


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from(list("abcxyz0123qQhelloHELLOstartend w\n")), max_size=30))
def test_a_prefilter_finding_nothing_skips_only_patterns_without_matches(text: str) -> None:
    plain = PatternChecker(USER)
    plain._prefilters = []
    assert spans(PatternChecker(USER), text) == spans(plain, text)


def test_patterns_with_groups_or_inline_flags_are_checked_one_by_one() -> None:
    members = [set(m) for _, m in PatternChecker(USER)._prefilters]
    assert members == [{0, 1, 4}, {5, 6}]
