from __future__ import annotations

import pytest

from datasets.pipelines.pii import find_pii
from tests.datasets.pipeline_helpers import rows_of, run


def resident_id(first17: str) -> str:
    """A resident ID with its MOD 11-2 check character (computed here, independently)."""
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    remainder = sum(int(d) * w for d, w in zip(first17, weights, strict=True)) % 11
    return first17 + "10X98765432"[remainder]


def luhn_card(prefix: str) -> str:
    """``prefix`` plus the digit that makes it pass the Luhn check."""
    for last in "0123456789":
        digits = [int(d) for d in prefix + last][::-1]
        total = sum(
            d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits)
        )
        if total % 10 == 0:
            return prefix + last
    raise AssertionError


VALID_ID = resident_id("11010519491231002")  # born 1949-12-31: ends in X
VALID_CARD = luhn_card("622202123456789012")  # 19 digits


def wrong_last(number: str) -> str:
    return number[:-1] + ("1" if number[-1] != "1" else "2")


def kinds_in(text: str) -> list[tuple[str, str]]:
    return [(m.kind, m.text) for m in find_pii(text)]


def test_resident_id_with_valid_checksum_and_birth_date_is_found():
    assert VALID_ID.endswith("X")
    assert kinds_in(f"身份证号{VALID_ID}，请核对") == [("id_card", VALID_ID)]
    assert kinds_in(f"id {VALID_ID.lower()}") == [("id_card", VALID_ID.lower())]


@pytest.mark.parametrize(
    "number",
    [
        wrong_last(VALID_ID),  # bad check character
        resident_id("11010519491332002"),  # month 13
        resident_id("11010520990101002"),  # born in the future
        resident_id("11010518990101002"),  # before 1900
        "110105491301002",  # legacy 15 digits with month 13
    ],
)
def test_resident_id_failing_its_checks_is_not_found(number):
    assert [m for m in find_pii(f"编号 {number} 结束") if m.kind == "id_card"] == []


def test_legacy_fifteen_digit_id_with_real_date_is_found():
    assert kinds_in("老身份证 110105491231002 号") == [("id_card", "110105491231002")]


def test_mobile_numbers_with_prefixes_and_separators_are_found():
    text = (
        "打 13812345678 或 +86 139-1234-5678 或 8615012345678，不是 12812345678 也不是 138123456789"
    )
    assert kinds_in(text) == [
        ("mobile", "13812345678"),
        ("mobile", "+86 139-1234-5678"),
        ("mobile", "8615012345678"),
    ]


def test_email_is_found():
    assert kinds_in("mail zhang.san+ml@example.com.cn now") == [
        ("email", "zhang.san+ml@example.com.cn")
    ]


def test_bank_card_passing_luhn_is_found_and_failing_is_not():
    grouped = " ".join(VALID_CARD[i : i + 4] for i in range(0, 19, 4))
    text = f"卡号 {VALID_CARD}，另 {grouped}，错号 {wrong_last(VALID_CARD)}，订单 1234567890123"
    assert kinds_in(text) == [("bank_card", VALID_CARD), ("bank_card", grouped)]


def test_redact_pii_replaces_every_string_leaf_and_counts_by_kind(tmp_path):
    rows = rows_of(
        [
            {
                "messages": [
                    {"role": "user", "content": f"我的身份证 {VALID_ID}，电话 13812345678"}
                ],
                "n": 13812345678,
            },
            {"text": "订单号 20240101123456789，没有个人信息"},
            {"text": f"e-mail a@b.io, card {VALID_CARD}", "tags": ["x@y.org"]},
        ]
    )
    result, out = run([{"step": "redact_pii"}], rows, tmp_path)

    assert out["train"] == [
        {
            "messages": [{"role": "user", "content": "我的身份证 [身份证号]，电话 [手机号]"}],
            "n": 13812345678,
        },
        {"text": "订单号 20240101123456789，没有个人信息"},
        {"text": "e-mail [邮箱], card [银行卡号]", "tags": ["[邮箱]"]},
    ]
    assert result.steps[0]["counters"] == {
        "rows_redacted": 2,
        "redacted": {"id_card": 1, "mobile": 1, "email": 2, "bank_card": 1},
    }


def test_redact_pii_limited_to_kinds_fields_and_own_tokens(tmp_path):
    rows = rows_of([{"a": "x@y.org 13812345678", "b": "x@y.org"}])
    spec = [
        {
            "step": "redact_pii",
            "kinds": ["email"],
            "fields": ["a"],
            "replacements": {"email": "<EMAIL>"},
        }
    ]
    result, out = run(spec, rows, tmp_path)
    assert out["train"] == [{"a": "<EMAIL> 13812345678", "b": "x@y.org"}]
    assert result.steps[0]["counters"]["redacted"] == {"email": 1}
