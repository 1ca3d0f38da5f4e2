from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from governance.moderation.pii import (
    PROVINCES,
    PiiChecker,
    find_pii,
    id_check_char,
    is_valid_id,
    luhn_ok,
    redact,
)

digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    province = draw(st.sampled_from(sorted(PROVINCES)))
    area = draw(st.text(alphabet="0123456789", min_size=4, max_size=4))
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date.today()))
    serial = draw(st.text(alphabet="0123456789", min_size=3, max_size=3))
    first17 = f"{province}{area}{born:%Y%m%d}{serial}"
    return first17 + id_check_char(first17)


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(16, 19))
    body = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    body = str(draw(st.integers(1, 9))) + body[1:]
    check = next(d for d in "0123456789" if luhn_ok(body + d))
    return body + check


def categories_at(text: str, number: str) -> set[str]:
    start = text.index(number)
    return {s.category for s in find_pii(text) if (s.start, s.end) == (start, start + len(number))}


@given(id_numbers())
def test_a_valid_id_number_is_found(number: str):
    text = f"我的身份证号是{number}，请核对"
    assert categories_at(text, number) == {"PII_ID_CARD"}


@given(id_numbers(), digits)
def test_an_id_number_with_a_wrong_check_character_is_not_an_id(number: str, wrong: str):
    bad = number[:17] + ("X" if number[17] != "X" else wrong)
    if bad == number:
        bad = number[:17] + ("0" if number[17] != "0" else "1")
    assert "PII_ID_CARD" not in categories_at(f"号码{bad}。", bad)


@given(id_numbers(), st.sampled_from(["0230", "1301", "0001", "0431", "0000"]))
def test_an_id_number_with_an_impossible_birth_date_is_not_an_id(number: str, month_day: str):
    first17 = number[:10] + month_day + number[14:17]
    bad = first17 + id_check_char(first17)
    assert not is_valid_id(bad)
    assert "PII_ID_CARD" not in categories_at(f"号码{bad}。", bad)


def test_a_birth_date_in_the_future_is_not_an_id():
    tomorrow = date.today() + timedelta(days=1)
    first17 = f"110105{tomorrow:%Y%m%d}001"
    assert not is_valid_id(first17 + id_check_char(first17))
    assert is_valid_id(first17 + id_check_char(first17), today=tomorrow)


def test_an_unknown_province_code_is_not_an_id():
    first17 = "99010519491231002"
    assert not is_valid_id(first17 + id_check_char(first17))


@given(id_numbers(), digits, digits)
def test_an_id_number_inside_a_longer_digit_run_is_not_matched(number: str, a: str, b: str):
    for text in (f"编号{a}{number}", f"编号{number}{b}", f"{a}{number}{b}"):
        assert categories_at(text, number) == set()


@given(card_numbers())
def test_a_luhn_valid_card_is_found_alone_or_in_groups_of_four(number: str):
    assert categories_at(f"卡号{number}谢谢", number) == {"PII_BANK_CARD"}
    grouped = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    assert categories_at(f"卡号 {grouped} 谢谢", grouped) == {"PII_BANK_CARD"}


@given(card_numbers())
def test_a_card_with_a_wrong_check_digit_is_not_found(number: str):
    bad = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert categories_at(f"卡号{bad}谢谢", bad) == set()


@given(card_numbers(), digits)
def test_a_card_inside_a_longer_digit_run_is_not_matched(number: str, a: str):
    assert categories_at(f"{a}{number}", number) == set()


@given(st.sampled_from("3456789"), st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_mobile_numbers_are_found_with_or_without_the_country_code(second: str, rest: str):
    number = f"1{second}{rest}"
    assert categories_at(f"电话{number}", number) == {"PII_PHONE"}
    assert categories_at(f"电话 +86 {number}", f"+86 {number}") == {"PII_PHONE"}
    assert categories_at(f"编号{number}7", number) == set()


def test_emails_are_found():
    text = "联系 zhang.san+test@mail.example.com.cn 或 a@b"
    [span] = find_pii(text)
    assert (span.category, span.term) == ("PII_EMAIL", "zhang.san+test@mail.example.com.cn")


def test_checker_scores_each_pii_kind_and_personal_information():
    result = PiiChecker().check("电话13812345678，邮箱 li@example.org")
    assert result.scores == {"PII_PHONE": 1.0, "PII_EMAIL": 1.0, "A4_f": 1.0}
    assert PiiChecker().check("没有个人信息，只有 2024 年的数字 42").scores == {}


def test_redact_replaces_each_span_in_the_original_text():
    text = "身份证11010519491231002X，电话13812345678。"
    assert redact(text, find_pii(text)) == "身份证[PII_ID_CARD]，电话[PII_PHONE]。"
    assert redact(text, find_pii(text), template="***") == "身份证***，电话***。"
