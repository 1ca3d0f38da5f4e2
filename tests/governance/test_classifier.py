"""The moderation classifier: training from a labelled CSV, saving without pickle, topics
mapped to A2 risks, the cached default model and its quality on COLD's dev split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from governance.moderation import checkers
from governance.moderation.classifier import (
    DATA_DIR,
    ClassifierChecker,
    Model,
    TrainingDataError,
    cache_dir,
    default_model,
    load_model,
    read_csv,
    train_from_csv,
)
from governance.moderation.pipeline import default_pipeline

DEV_CSV = DATA_DIR / "cold" / "dev.csv"
TRAIN_CSV = DATA_DIR / "cold" / "train.csv"

# Small synthetic data: offensive rows about three topics, harmless rows about the same.
OFFENSIVE = {
    "race": ["黑人都是猴子", "黑鬼滚回去", "黑人就是懒还偷东西"],
    "gender": ["女人就是蠢只配做饭", "女的都是拜金婊", "女司机都是马路杀手蠢货"],
    "region": ["河南人都是骗子", "东北人全是流氓", "上海人都是势利眼垃圾"],
}
HARMLESS = ["今天天气不错", "我喜欢吃饺子", "这部电影很好看", "周末一起去爬山吧", "谢谢你的帮助"]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def topic_rows(copies: int = 4) -> list[dict[str, str]]:
    rows = []
    for _ in range(copies):
        for topic, texts in OFFENSIVE.items():
            rows += [{"topic": topic, "label": "1", "TEXT": text} for text in texts]
            rows += [{"topic": topic, "label": "0", "TEXT": text} for text in HARMLESS]
    return rows


@pytest.fixture(scope="module")
def cold_model() -> Model:
    """The default model (trained from COLD's train split once, then cached on disk)."""
    return default_model()


def test_model_round_trips_through_npz_and_json_without_pickle(tmp_path: Path) -> None:
    # given a small labelled CSV with topics
    source = write_csv(tmp_path / "train.csv", topic_rows())
    # when a model is trained and saved, then loaded
    trained = train_from_csv(source, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    # then the files are plain arrays and JSON, and the loaded model scores identically
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["params.json", "weights.npz"]
    with np.load(tmp_path / "model" / "weights.npz", allow_pickle=False) as arrays:
        assert {"weights", "bias", "topic_weights", "topic_bias"} <= set(arrays.files)
    params = json.loads((tmp_path / "model" / "params.json").read_text())
    assert params["format"] == "openmaas-moderation-classifier/1"
    assert params["vectorizer"]["analyzer"] == "char"
    texts = ["黑人都是猴子", "今天天气不错"]
    for before, after in zip(trained.score(texts), loaded.score(texts), strict=True):
        assert after.offensive == pytest.approx(before.offensive, abs=1e-4)


def test_offensive_text_scores_under_its_topics_a2_category(tmp_path: Path) -> None:
    # given a model trained with race, gender and region topics
    model = train_from_csv(write_csv(tmp_path / "train.csv", topic_rows()), tmp_path / "m")
    assert sorted(model.categories) == ["A2_a", "A2_d", "A2_e"]
    # when offensive texts about each topic are scored
    race, gender, region, harmless = model.score(
        ["黑人都是猴子", "女人就是蠢只配做饭", "河南人都是骗子", "周末一起去爬山吧"]
    )
    # then each is offensive, with its topic's category on top; the harmless one is not
    for scores, category in ((race, "A2_a"), (gender, "A2_e"), (region, "A2_d")):
        assert scores.offensive >= 0.5
        assert max(scores.categories, key=scores.categories.__getitem__) == category
        assert scores.categories[category] == scores.offensive
    assert harmless.offensive < 0.5


def test_data_without_a_topic_column_scores_offensive_text_as_other_discrimination(
    tmp_path: Path,
) -> None:
    rows = [{"TEXT": r["TEXT"], "label": r["label"]} for r in topic_rows()]
    model = train_from_csv(write_csv(tmp_path / "train.csv", rows), tmp_path / "m")
    (scores,) = model.score(["东北人全是流氓"])
    assert model.categories == ["A2_i"]
    assert scores.categories == {"A2_i": scores.offensive}
    assert scores.offensive >= 0.5


def test_a_topic_may_name_a_platform_risk_code(tmp_path: Path) -> None:
    rows = topic_rows()
    for row in rows:
        if row["topic"] == "region":
            row["topic"] = "A2_g"
    model = train_from_csv(write_csv(tmp_path / "train.csv", rows), tmp_path / "m")
    assert sorted(model.categories) == ["A2_a", "A2_e", "A2_g"]


def test_data_with_a_single_topic_scores_offensive_text_under_that_topic(tmp_path: Path) -> None:
    rows = [r for r in topic_rows() if r["topic"] == "gender"]
    model = train_from_csv(write_csv(tmp_path / "train.csv", rows), tmp_path / "m")
    (scores,) = model.score(["女人就是蠢只配做饭"])
    assert model.categories == ["A2_e"]
    assert scores.categories == {"A2_e": scores.offensive}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"text": "a", "topic": "race"}], "no 'LABEL' column"),
        ([{"label": "1", "topic": "race"}], "no 'TEXT' column"),
        ([{"TEXT": "a", "label": "yes"}], "label must be 0 or 1"),
        ([{"TEXT": f"t{i}", "label": "1"} for i in range(20)], "at least 5 rows of each"),
    ],
)
def test_unusable_training_csv_is_refused_with_a_reason(
    tmp_path: Path, rows: list[dict[str, str]], message: str
) -> None:
    with pytest.raises(TrainingDataError, match=message):
        train_from_csv(write_csv(tmp_path / "bad.csv", rows), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_loading_something_that_is_not_a_model_raises(tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a"):
        load_model(tmp_path)
    with pytest.raises(OSError):
        load_model(tmp_path / "absent")


def test_default_model_is_cached_on_disk_and_loaded_once_per_process(cold_model: Model) -> None:
    assert default_model() is cold_model
    cached = [p for p in cache_dir().glob("train-*") if (p / "params.json").is_file()]
    assert cached, "the trained default model is kept in the cache directory"
    reloaded = load_model(cached[0])
    assert reloaded.params["trained_on"]["rows"] == len(read_csv(TRAIN_CSV).texts)


def test_cache_directory_follows_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENMAAS_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env" / "moderation"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg" / "moderation"


def test_default_model_reaches_f1_of_085_on_cold_dev(cold_model: Model) -> None:
    dev = read_csv(DEV_CSV)
    metrics = cold_model.evaluate(dev.texts, dev.labels)
    assert metrics.f1 >= 0.85, metrics
    assert metrics.precision >= 0.85 and metrics.recall >= 0.80, metrics


def test_classifier_checker_is_registered_and_reports_a2_scores(cold_model: Model) -> None:
    checker_class = checkers().get("classifier")
    assert checker_class is ClassifierChecker
    result = ClassifierChecker(cold_model).check("河南人都是骗子，偷井盖的")
    assert result.checker == "classifier"
    assert result.scores["A2_d"] >= 0.5
    assert result.detail["offensive"] == result.scores["A2_d"]


def test_classifier_checker_without_training_data_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ClassifierChecker(train_csv=tmp_path / "absent.csv")


def test_default_pipeline_with_the_classifier_reaches_f1_of_080_on_cold_dev(
    cold_model: Model,
) -> None:
    # given the default pipeline (lexicon, patterns, PII and the classifier)
    pipeline = default_pipeline()
    assert "classifier" in [checker.name for checker in pipeline.checkers]
    # when it flags a fixed sample of COLD's dev split (every 4th row, to stay fast)
    dev = read_csv(DEV_CSV)
    texts, labels = dev.texts[::4], np.asarray(dev.labels[::4], dtype=bool)
    flagged = np.asarray([pipeline.run(text).flagged for text in texts])
    # then precision and recall of "flagged" against "offensive" give F1 >= 0.80
    hits = int(np.sum(flagged & labels))
    precision, recall = hits / max(int(flagged.sum()), 1), hits / int(labels.sum())
    assert 2 * precision * recall / (precision + recall) >= 0.80, (precision, recall)
