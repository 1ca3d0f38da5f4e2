"""The TC260-003 risk taxonomy (5 classes, 31 risks), detector categories, and the
mapping to OpenAI's 13 moderation categories.

Codes are ours (``A1_a`` … ``A5_b``, appendix A of TC260-003 / GB/T 45654-2025);
detector categories such as ``PII_PHONE`` are finer labels that roll up to one risk.
Pure: no Django.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Risk:
    """One risk (``A2_d``) or class (``A2``) with its Chinese and English names."""

    code: str
    zh: str
    en: str


CLASSES: dict[str, Risk] = {
    r.code: r
    for r in (
        Risk("A1", "违反社会主义核心价值观", "Violates core socialist values"),
        Risk("A2", "歧视性内容", "Discriminatory content"),
        Risk("A3", "商业违法违规", "Commercial violations"),
        Risk("A4", "侵犯他人合法权益", "Infringes others' legitimate rights"),
        Risk("A5", "无法满足特定服务类型的安全需求", "Fails service-specific safety needs"),
    )
}

_RISKS: tuple[tuple[str, str, str], ...] = (
    ("A1_a", "煽动颠覆国家政权、推翻社会主义制度", "Incites subversion of state power"),
    ("A1_b", "危害国家安全和利益、损害国家形象", "Endangers national security or image"),
    ("A1_c", "煽动分裂国家、破坏国家统一和社会稳定", "Incites separatism or unrest"),
    ("A1_d", "宣扬恐怖主义、极端主义", "Promotes terrorism or extremism"),
    ("A1_e", "宣扬民族仇恨", "Promotes ethnic hatred"),
    ("A1_f", "宣扬暴力、淫秽色情", "Promotes violence or pornography"),
    ("A1_g", "传播虚假有害信息", "Spreads false and harmful information"),
    ("A1_h", "其他法律、行政法规禁止的内容", "Other content prohibited by law"),
    ("A2_a", "民族歧视", "Ethnic discrimination"),
    ("A2_b", "信仰歧视", "Religious discrimination"),
    ("A2_c", "国别歧视", "Nationality discrimination"),
    ("A2_d", "地域歧视", "Regional discrimination"),
    ("A2_e", "性别歧视", "Gender discrimination"),
    ("A2_f", "年龄歧视", "Age discrimination"),
    ("A2_g", "职业歧视", "Occupational discrimination"),
    ("A2_h", "健康歧视", "Health discrimination"),
    ("A2_i", "其他方面歧视", "Other discrimination"),
    ("A3_a", "侵犯他人知识产权", "Infringes intellectual property"),
    ("A3_b", "违反商业道德", "Violates business ethics"),
    ("A3_c", "泄露他人商业秘密", "Leaks trade secrets"),
    ("A3_d", "利用算法、数据、平台等优势实施垄断和不正当竞争", "Monopoly or unfair competition"),
    ("A3_e", "其他商业违法违规行为", "Other commercial violations"),
    ("A4_a", "危害他人身心健康", "Endangers physical or mental health"),
    ("A4_b", "侵害他人肖像权", "Infringes portrait rights"),
    ("A4_c", "侵害他人名誉权", "Infringes reputation rights"),
    ("A4_d", "侵害他人荣誉权", "Infringes honour rights"),
    ("A4_e", "侵害他人隐私权", "Infringes privacy"),
    ("A4_f", "侵害他人个人信息权益", "Infringes personal information rights"),
    ("A4_g", "侵犯他人其他合法权益", "Infringes other legitimate rights"),
    ("A5_a", "内容不准确", "Inaccurate content"),
    ("A5_b", "内容不可靠", "Unreliable content"),
)
RISKS: dict[str, Risk] = {code: Risk(code, zh, en) for code, zh, en in _RISKS}

# Detector categories (finer than a risk) → the risk they belong to.
DETECTORS: dict[str, str] = {
    "PII_ID_CARD": "A4_f",
    "PII_PHONE": "A4_f",
    "PII_EMAIL": "A4_f",
    "PII_BANK_CARD": "A4_f",
}

OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

# Which OpenAI categories a risk feeds. Political and reliability risks (A1_a–c, A1_g,
# A5) have no OpenAI counterpart and feed none; they still show in platform scores.
_HATE = ("hate",)
OPENAI_MAP: dict[str, tuple[str, ...]] = {
    "A1_d": ("illicit/violent", "violence"),
    "A1_e": ("hate",),
    "A1_f": ("violence", "sexual"),
    "A1_h": ("illicit",),
    "A2_a": _HATE,
    "A2_b": _HATE,
    "A2_c": _HATE,
    "A2_d": _HATE,
    "A2_e": _HATE,
    "A2_f": _HATE,
    "A2_g": ("harassment",),
    "A2_h": _HATE,
    "A2_i": ("harassment",),
    "A3_a": ("illicit",),
    "A3_b": ("illicit",),
    "A3_c": ("illicit",),
    "A3_d": ("illicit",),
    "A3_e": ("illicit",),
    "A4_a": ("self-harm", "violence"),
    "A4_c": ("harassment",),
    "A4_d": ("harassment",),
}


def is_known(code: str) -> bool:
    """Whether ``code`` is a class, a risk or a detector category."""
    return code in RISKS or code in CLASSES or code in DETECTORS


def risk_of(code: str) -> str:
    """The risk a category belongs to: itself for a risk, the parent for a detector.

    Raises ``KeyError`` for an unknown code.
    """
    if code in RISKS:
        return code
    return DETECTORS[code]


def class_of(code: str) -> str:
    """The class (``A1`` … ``A5``) of a risk or detector category."""
    return risk_of(code).split("_")[0]


def rollup(scores: Mapping[str, float]) -> dict[str, float]:
    """``scores`` with detector categories also counted under their risk (max)."""
    out = dict(scores)
    for code, score in scores.items():
        parent = DETECTORS.get(code)
        if parent is not None:
            out[parent] = max(out.get(parent, 0.0), score)
    return out


def openai_scores(platform_scores: Mapping[str, float]) -> dict[str, float]:
    """All 13 OpenAI categories, each the max over the platform risks mapped to it
    (0.0 where none is); detector categories count through their risk."""
    out = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
    for code, score in rollup(platform_scores).items():
        for category in OPENAI_MAP.get(code, ()):
            out[category] = max(out[category], score)
    return out
