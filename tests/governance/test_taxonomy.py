from __future__ import annotations

from governance.moderation.taxonomy import (
    CLASSES,
    DETECTORS,
    OPENAI_CATEGORIES,
    OPENAI_MAP,
    RISKS,
    class_of,
    openai_scores,
    risk_of,
    rollup,
)


def test_taxonomy_has_the_five_classes_and_31_risks_of_tc260():
    assert list(CLASSES) == ["A1", "A2", "A3", "A4", "A5"]
    assert len(RISKS) == 31
    per_class = {c: sum(code.startswith(c + "_") for code in RISKS) for c in CLASSES}
    assert per_class == {"A1": 8, "A2": 9, "A3": 5, "A4": 7, "A5": 2}
    assert all(r.zh and r.en for r in RISKS.values())


def test_pii_detector_categories_roll_up_to_personal_information():
    assert set(DETECTORS) == {"PII_ID_CARD", "PII_PHONE", "PII_EMAIL", "PII_BANK_CARD"}
    assert {risk_of(code) for code in DETECTORS} == {"A4_f"}
    assert class_of("PII_PHONE") == "A4"
    assert rollup({"PII_PHONE": 1.0, "A4_f": 0.2}) == {"PII_PHONE": 1.0, "A4_f": 1.0}


def test_openai_scores_cover_13_categories_and_take_the_max_over_mapped_risks():
    scores = openai_scores({"A2_a": 0.3, "A2_d": 0.8, "A1_f": 0.6, "A1_a": 0.9})
    assert tuple(scores) == OPENAI_CATEGORIES
    assert len(scores) == 13
    assert scores["hate"] == 0.8
    assert scores["violence"] == scores["sexual"] == 0.6
    assert scores["self-harm"] == 0.0


def test_risks_without_an_openai_counterpart_score_nothing_there():
    assert set(openai_scores({"A1_a": 1.0, "A5_a": 1.0, "PII_EMAIL": 1.0}).values()) == {0.0}


def test_openai_map_names_only_known_risks_and_categories():
    assert set(OPENAI_MAP) <= set(RISKS)
    assert {c for targets in OPENAI_MAP.values() for c in targets} <= set(OPENAI_CATEGORIES)
