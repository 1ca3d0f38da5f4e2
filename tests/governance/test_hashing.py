"""The numpy n-gram hasher gives scikit-learn's ``HashingVectorizer`` features bit for bit,
and the classifier scores computed from them row by row equal the sparse-product scores."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.moderation import hashing
from governance.moderation.classifier import (
    DATA_DIR,
    VECTORIZER,
    Model,
    _sigmoid,
    _topic_share,
    default_model,
    make_vectorizer,
    read_csv,
    reference_vectorizer,
)
from governance.moderation.hashing import CharNgramHasher

# Hashing n-gram by n-gram, all at once, and the default split between the two.
PATHS = {"numpy": 0, "per n-gram": 10**9, "default": hashing.SHORT}
VARIANTS: list[dict[str, Any]] = [
    VECTORIZER,
    {**VECTORIZER, "alternate_sign": True},
    {**VECTORIZER, "ngram_range": [2, 5], "n_features": 1000, "norm": "l1"},
    {**VECTORIZER, "lowercase": False, "norm": None},
]


def sample_texts() -> list[str]:
    """A few hundred texts: COLD dev rows, emoji, ASCII, mixed scripts, whitespace runs,
    texts shorter than an n-gram, long ones and random code points of every UTF-8 size."""
    rows = read_csv(DATA_DIR / "cold" / "dev.csv").texts
    rng = random.Random(7)
    texts = rows[:150] + rng.sample(rows, 50)
    texts += [
        "",
        " ",
        "a",
        "ab",
        "Ab  \t\n\u3000 CD",
        "😀👍🏽🇨🇳 表情 emoji！",
        "ＦＵＬＬ　ｗｉｄｔｈ　全角",
        "İstanbul ΣΑΣ straße",
        "e\u0301 café",
        "The quick brown fox jumps over the lazy dog. " * 30,
        "这个人真是太过分了，" * 60,
    ]
    planes = [(0x20, 0x7F), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x10000), (0x10000, 0x110000)]
    for _ in range(150):
        size = rng.choice([rng.randrange(1, 40), rng.randrange(40, 400)])
        chars = []
        for _ in range(size):
            low, high = rng.choice([*planes, (0x20, 0x21), (0x0A, 0x0B)])
            chars.append(chr(rng.randrange(low, high)))
        texts.append("".join(chars))
    return texts


def same_matrix(expected: Any, actual: Any) -> bool:
    return (
        type(expected) is type(actual)
        and expected.shape == actual.shape
        and np.array_equal(expected.indptr, actual.indptr)
        and np.array_equal(expected.indices, actual.indices)
        and expected.indices.dtype == actual.indices.dtype
        and expected.data.dtype == actual.data.dtype
        and expected.data.tobytes() == actual.data.tobytes()
    )


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("params", VARIANTS, ids=lambda p: "-".join(map(str, p.values())))
def test_hashed_features_equal_scikit_learns_bit_for_bit(
    texts: list[str], params: dict[str, Any], path: str
) -> None:
    hasher = hashing.from_params(params)
    hasher.short = PATHS[path]
    expected = reference_vectorizer(params).transform(texts)
    assert same_matrix(expected, hasher.transform(texts))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from(list(PATHS.values())))
def test_any_text_hashes_as_scikit_learn_does(text: str, short: int) -> None:
    hasher = hashing.from_params(VECTORIZER)
    hasher.short = short
    expected = reference_vectorizer(VECTORIZER).transform([text])
    assert same_matrix(expected, hasher.transform([text]))


def test_the_shipped_parameters_use_the_numpy_hasher() -> None:
    assert hashing.supports(VECTORIZER)
    assert isinstance(make_vectorizer(VECTORIZER), CharNgramHasher)
    assert not hashing.supports({**VECTORIZER, "analyzer": "char_wb"})
    assert not hashing.supports({**VECTORIZER, "norm": "max"})
    assert not hashing.supports({**VECTORIZER, "ngram_range": [3, 1]})


def test_a_lone_surrogate_raises_as_scikit_learn_does() -> None:
    with pytest.raises(UnicodeEncodeError):
        reference_vectorizer(VECTORIZER).transform(["bad \ud800"])
    for short in PATHS.values():
        hasher = hashing.from_params(VECTORIZER)
        hasher.short = short
        with pytest.raises(UnicodeEncodeError):
            hasher.transform(["bad \ud800"])


def test_bytes_are_left_to_scikit_learn_which_decodes_them() -> None:
    hasher = hashing.from_params(VECTORIZER)
    expected = reference_vectorizer(VECTORIZER).transform(["你好 world"])
    encoded: list[Any] = ["你好 world".encode()]
    assert same_matrix(expected, hasher.transform(encoded))


@pytest.fixture(scope="module")
def cold_model() -> Model:
    return default_model()


def sparse_scores(model: Model, texts: list[str]) -> tuple[Any, Any]:
    """The offensive and topic logits as computed before: the sparse matrix times the
    weights."""
    features = reference_vectorizer(model.params["vectorizer"]).transform(texts)
    offensive = np.asarray(features @ model.weights + model.bias)
    assert model.topic_weights is not None
    topics = np.asarray(features @ model.topic_weights + model.topic_bias)
    return offensive, topics


def test_scores_equal_the_sparse_products_to_the_bit(cold_model: Model, texts: list[str]) -> None:
    offensive, topics = sparse_scores(cold_model, texts)
    got_offensive, got_topics = cold_model._logits(texts, topics=True)
    assert got_offensive.tobytes() == offensive.tobytes()
    assert got_topics is not None and got_topics.tobytes() == topics.tobytes()
    for i, text in enumerate(texts[:: len(texts) // 60]):  # one text at a time, as check()
        one, one_topics = cold_model._logits([text], topics=True)
        row = i * (len(texts) // 60)
        assert one.tobytes() == offensive[row : row + 1].tobytes()
        assert one_topics is not None
        assert one_topics.tobytes() == topics[row : row + 1].tobytes()


def test_checker_scores_equal_those_of_the_sparse_products(
    cold_model: Model, texts: list[str]
) -> None:
    offensive, topics = sparse_scores(cold_model, texts)
    expected_p = _sigmoid(offensive)
    shares = _topic_share(topics)
    for i, scores in enumerate(cold_model.score(texts)):
        assert scores.offensive == round(float(expected_p[i]), 6)
        expected = {
            c: round(float(expected_p[i] * w), 6)
            for c, w in zip(cold_model.categories, shares[i], strict=True)
        }
        assert scores.categories == expected
    assert np.array_equal(cold_model.offensive(texts), expected_p)


def test_sigmoid_equals_the_clipped_formula_to_the_bit() -> None:
    rng = np.random.default_rng(0)
    special = [np.nan, np.inf, -np.inf, 50.0, -50.0, 0.0, -0.0, 49.999999, 1e-300]
    for size in (1, 3, 1000):
        x = np.concatenate([rng.normal(0, 20, size), special])
        expected = 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))
        assert _sigmoid(x).tobytes() == expected.tobytes()
