"""The moderation classifier: character n-grams and a linear model, trained from a CSV.

A model is two files, no pickle: ``weights.npz`` (the offensive/safe weights and, when
the data named topics, the topic weights) and ``params.json`` (the vectorizer's
parameters, the topics' categories, the threshold and the measurements). The features
are scikit-learn's stateless ``HashingVectorizer``'s, rebuilt from the parameters on
load and computed by :mod:`~governance.moderation.hashing` (the same values, at a
fraction of the CPU), so inference is a sparse dot product and a sigmoid.

Training data is a CSV with ``TEXT`` and ``label`` (1 = offensive) columns and an
optional ``topic`` column (the COLD layout). An offensive text's category comes from
its topic: race → ``A2_a``, gender → ``A2_e``, region → ``A2_d`` (more in
:data:`TOPIC_CATEGORIES`; a topic may also be a platform risk code), anything else →
``A2_i``. The decision threshold is chosen for F1 on a held-out fifth of the training
rows and folded into the intercept, so a score of 0.5 is the operating point.

The default model is trained from ``governance/data/cold/train.csv`` on first use and
cached on disk (``OPENMAAS_CACHE_DIR`` or the system temp dir), keyed by the data's
hash; each process loads it once. A model trained by the platform from an admin's
dataset replaces it once activated: the governance service downloads its files into a
directory and names it with :func:`use_model_dir`, and every ``ClassifierChecker()``
built after that loads it instead (:func:`generation` tells pipeline holders to
rebuild). Training data may also be JSON Lines (:func:`read_labelled`). Pure: no Django.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from governance.moderation import hashing
from governance.moderation.hashing import CharNgramHasher
from governance.moderation.taxonomy import RISKS
from governance.moderation.types import CheckResult

FORMAT = "openmaas-moderation-classifier/1"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_TRAIN_CSV = DATA_DIR / "cold" / "train.csv"
WEIGHTS = "weights.npz"
PARAMS = "params.json"

TOPIC_CATEGORIES: dict[str, str] = {
    "race": "A2_a",
    "ethnicity": "A2_a",
    "religion": "A2_b",
    "nationality": "A2_c",
    "country": "A2_c",
    "region": "A2_d",
    "gender": "A2_e",
    "age": "A2_f",
    "occupation": "A2_g",
    "health": "A2_h",
}
OTHER_CATEGORY = "A2_i"

# Chosen by F1 on a held-out part of COLD's training split (dev.csv only reports).
VECTORIZER: dict[str, Any] = {
    "analyzer": "char",
    "ngram_range": [1, 3],
    "n_features": 2**18,
    "lowercase": True,
    "alternate_sign": False,
    "norm": "l2",
}
ALPHA = 1e-5
HOLDOUT = 0.2
SEED = 0


class TrainingDataError(ValueError):
    """The training CSV cannot be used (missing columns, bad labels, one class only)."""


@dataclass(frozen=True)
class Scores:
    """One text's classifier output: P(offensive) at the calibrated scale (0.5 = the
    threshold) and the platform category scores it implies."""

    offensive: float
    categories: dict[str, float]


@dataclass(frozen=True)
class Metrics:
    """Binary offensive-vs-not quality at the model's threshold."""

    precision: float
    recall: float
    f1: float
    support: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }


@dataclass
class Model:
    """A trained classifier: hashed char n-grams → P(offensive) (``weights``, one per
    feature), and P(topic | text) over ``categories`` when the training data had topics
    (``topic_weights``, features × topics)."""

    params: dict[str, Any]
    weights: NDArray[np.float64]
    bias: float
    topic_weights: NDArray[np.float64] | None = None
    topic_bias: NDArray[np.float64] | None = None
    _vectorizer: Any = field(default=None, repr=False, compare=False)
    _stacked: Any = field(default=None, repr=False, compare=False)

    @property
    def categories(self) -> list[str]:
        """The category of each topic row (``[OTHER_CATEGORY]`` without topics)."""
        return list(self.params.get("categories") or [OTHER_CATEGORY])

    def vectorizer(self) -> Any:
        """The transformer of texts into features (see :func:`make_vectorizer`)."""
        if self._vectorizer is None:
            self._vectorizer = make_vectorizer(self.params["vectorizer"])
        return self._vectorizer

    def offensive(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """P(offensive) of each text, calibrated so that 0.5 is the threshold."""
        return _sigmoid(self._logits(texts, topics=False)[0])

    def score(self, texts: Sequence[str]) -> list[Scores]:
        """Each text's scores. The most likely topic's category gets P(offensive), the
        others that scaled by their probability relative to it, so the flag decision is
        the binary model's and the categories rank the topics."""
        logits, topic_logits = self._logits(texts, topics=True)
        offensive: list[float] = _sigmoid(logits).tolist()
        # Python floats multiply as numpy's float64 do, without a numpy scalar per step.
        shares: list[list[float]] = (
            _topic_share(topic_logits).tolist()
            if topic_logits is not None
            else [[1.0]] * len(offensive)
        )
        categories = self.categories
        out = []
        for p, share in zip(offensive, shares, strict=True):
            per = {c: round(p * w, 6) for c, w in zip(categories, share, strict=True)}
            out.append(Scores(round(p, 6), per))
        return out

    def _logits(
        self, texts: Sequence[str], *, topics: bool
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """The offensive logit of each text and, with ``topics`` and a topic model, the
        topic logits (texts × topics): the features' products with the weights plus the
        biases.

        Row by row when the vectorizer is a :class:`CharNgramHasher`: each product is
        then summed in column order, one term after another, as scipy's sparse product
        does, so the result is the same float; otherwise through the sparse matrix."""
        texts = list(texts)
        has_topics = topics and self.topic_weights is not None and self.topic_bias is not None
        vectorizer = self.vectorizer()
        if not isinstance(vectorizer, CharNgramHasher) or not all(
            isinstance(t, str) for t in texts
        ):
            features = vectorizer.transform(texts)
            offensive = np.asarray(features @ self.weights + self.bias)
            if not has_topics:
                return offensive, None
            return offensive, np.asarray(features @ self.topic_weights + self.topic_bias)
        rows = [vectorizer.row(text) for text in texts]
        if not has_topics or self.topic_weights is None:
            weights = self.weights
            return np.array([_row_dot(v, weights.take(c)) for c, v in rows]) + self.bias, None
        if self._stacked is None:
            # Both models' weights of a feature side by side (features × 1 + topics): a
            # text's gather reads one short row per n-gram, not one scattered value per
            # n-gram and model (a 1 KB text: 3 times faster).
            self._stacked = np.ascontiguousarray(
                np.column_stack([self.weights, self.topic_weights])
            )
        stacked = self._stacked
        both = np.array([_row_dots(v, stacked.take(c, axis=0)) for c, v in rows])
        return both[:, 0] + self.bias, both[:, 1:] + self.topic_bias

    def evaluate(self, texts: Sequence[str], labels: Sequence[int]) -> Metrics:
        """Precision, recall and F1 of "offensive" at the model's threshold."""
        predicted = self.offensive(list(texts)) >= 0.5
        return _metrics(np.asarray(labels, dtype=bool), predicted)

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``weights.npz`` and ``params.json`` into ``out_dir`` (created)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # float32 on disk halves the file; scores differ in the 7th digit at most.
        arrays: dict[str, Any] = {"weights": self.weights.astype(np.float32), "bias": self.bias}
        if self.topic_weights is not None and self.topic_bias is not None:
            arrays["topic_weights"] = self.topic_weights.astype(np.float32)
            arrays["topic_bias"] = self.topic_bias
        np.savez_compressed(out / WEIGHTS, **arrays)
        (out / PARAMS).write_text(json.dumps(self.params, indent=2, ensure_ascii=False) + "\n")
        return out


def load_model(model_dir: str | os.PathLike[str]) -> Model:
    """The model saved in ``model_dir``. Raises ``OSError`` when its files are missing
    and ``ValueError`` when they are not a model of this format."""
    path = Path(model_dir)
    params = json.loads((path / PARAMS).read_text())
    if not isinstance(params, dict) or params.get("format") != FORMAT:
        raise ValueError(f"{path / PARAMS} is not a {FORMAT} model.")
    with np.load(path / WEIGHTS, allow_pickle=False) as arrays:
        weights = arrays["weights"].astype(np.float64)
        n_features = int(params["vectorizer"]["n_features"])
        if weights.shape != (n_features,):
            raise ValueError(f"{path / WEIGHTS}: weights do not match n_features.")
        topic = "topic_weights" in arrays.files
        if topic and arrays["topic_weights"].shape != (n_features, len(params["categories"])):
            raise ValueError(f"{path / WEIGHTS}: topic weights do not match the categories.")
        return Model(
            params,
            weights,
            float(arrays["bias"]),
            np.ascontiguousarray(arrays["topic_weights"], dtype=np.float64) if topic else None,
            arrays["topic_bias"].astype(np.float64) if topic else None,
        )


# --- training -------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledData:
    """Rows of a training CSV: texts, 0/1 labels and topics ("" where none)."""

    texts: list[str]
    labels: list[int]
    topics: list[str]
    sha256: str


def read_csv(path: str | os.PathLike[str]) -> LabelledData:
    """The labelled rows of ``path``: a UTF-8 CSV (a BOM is fine) with ``TEXT`` and
    ``label`` columns, optionally ``topic``; header names are case-insensitive. Raises
    :class:`TrainingDataError` on a missing column or a label other than 0/1."""
    raw = Path(path).read_bytes()
    rows = csv.DictReader(raw.decode("utf-8-sig").splitlines())
    columns = {name.strip().lower(): name for name in rows.fieldnames or [] if name}
    for needed in ("text", "label"):
        if needed not in columns:
            raise TrainingDataError(f"{path}: no '{needed.upper()}' column.")
    texts, labels, topics = [], [], []
    for number, row in enumerate(rows, start=2):
        label = (row.get(columns["label"]) or "").strip()
        if label not in ("0", "1"):
            raise TrainingDataError(f"{path}: line {number}: label must be 0 or 1.")
        texts.append(row.get(columns["text"]) or "")
        labels.append(int(label))
        topics.append((row.get(columns.get("topic", "")) or "").strip().lower())
    return LabelledData(texts, labels, topics, hashlib.sha256(raw).hexdigest())


def read_jsonl(path: str | os.PathLike[str]) -> LabelledData:
    """The labelled rows of a JSON Lines file: one object per line with ``text`` and
    ``label`` (0/1, as a number, a string or a boolean) keys, optionally ``topic``; key
    names are case-insensitive and blank lines are skipped. Raises
    :class:`TrainingDataError` naming the line of the first bad row."""
    raw = Path(path).read_bytes()
    texts, labels, topics = [], [], []
    for number, line in enumerate(raw.decode("utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TrainingDataError(f"{path}: line {number}: not JSON ({exc}).") from exc
        if not isinstance(row, dict):
            raise TrainingDataError(f"{path}: line {number}: not a JSON object.")
        fields = {str(key).strip().lower(): value for key, value in row.items()}
        text, label = fields.get("text"), _label(fields.get("label"))
        if not isinstance(text, str) or label is None:
            raise TrainingDataError(
                f"{path}: line {number}: needs a string 'text' and a 0/1 'label'."
            )
        texts.append(text)
        labels.append(label)
        topics.append(str(fields.get("topic") or "").strip().lower())
    return LabelledData(texts, labels, topics, hashlib.sha256(raw).hexdigest())


def _label(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | str) and str(value).strip() in ("0", "1"):
        return int(str(value).strip())
    return None


def read_labelled(path: str | os.PathLike[str]) -> LabelledData:
    """:func:`read_jsonl` for ``.jsonl``/``.ndjson`` files, :func:`read_csv` otherwise."""
    if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
        return read_jsonl(path)
    return read_csv(path)


def subset(data: LabelledData, rows: Iterable[int]) -> LabelledData:
    """The given rows of ``data`` (same source hash)."""
    picked = list(rows)
    return LabelledData(
        [data.texts[i] for i in picked],
        [data.labels[i] for i in picked],
        [data.topics[i] for i in picked],
        data.sha256,
    )


def train_and_measure(data: LabelledData, *, holdout: float = HOLDOUT) -> tuple[Model, Metrics]:
    """A model fitted on a stratified ``1 - holdout`` of ``data`` (seeded) and its
    metrics on the rest, which it never saw: the shipped model is the measured one.
    Raises :class:`TrainingDataError` when either part would lack a label."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(np.asarray(data.labels, dtype=np.int64), minlength=2)
    if min(counts) < 10:
        raise TrainingDataError("Training needs at least 10 rows of each label (0 and 1).")
    fit_rows, held_rows = train_test_split(
        np.arange(len(data.labels)), test_size=holdout, stratify=data.labels, random_state=SEED
    )
    model = train(subset(data, fit_rows))
    held = subset(data, held_rows)
    metrics = model.evaluate(held.texts, held.labels)
    model.params["eval"] = {**metrics.as_dict(), "split": "held-out", "holdout": holdout}
    return model, metrics


def topic_category(topic: str) -> str:
    """The platform category of an offensive text about ``topic``."""
    if topic in TOPIC_CATEGORIES:
        return TOPIC_CATEGORIES[topic]
    code = topic[:1].upper() + topic[1:]
    return code if code in RISKS else OTHER_CATEGORY


def train(data: LabelledData, *, alpha: float = ALPHA) -> Model:
    """A model fitted on ``data``; its threshold maximises F1 on a held-out fifth of it
    (the final fit uses every row). Raises :class:`TrainingDataError` when both labels
    are not present."""
    labels = np.asarray(data.labels)
    if len(set(data.labels)) < 2 or min(np.bincount(labels)) < 5:
        raise TrainingDataError("Training needs at least 5 rows of each label (0 and 1).")
    started = time.perf_counter()
    vectorizer = make_vectorizer(VECTORIZER)
    features = vectorizer.transform(data.texts)
    threshold = _tuned_threshold(features, labels, alpha)
    weights, bias = _fit_binary(features, labels, alpha)
    bias -= _logit(threshold)
    categories = [topic_category(topic) for topic in data.topics]
    topic_fit = _fit_topics(features, labels, categories, alpha)
    params: dict[str, Any] = {
        "format": FORMAT,
        "vectorizer": VECTORIZER,
        "model": "SGDClassifier(loss='log_loss')",
        "alpha": alpha,
        "threshold": threshold,
        "categories": topic_fit[0] if topic_fit else _only_category(labels, categories),
        "trained_on": {"rows": len(data.texts), "sha256": data.sha256},
        "training_seconds": round(time.perf_counter() - started, 2),
    }
    if topic_fit:
        return Model(params, weights, bias, topic_fit[1], topic_fit[2])
    return Model(params, weights, bias)


def train_from_csv(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    eval_csv: str | os.PathLike[str] | None = None,
) -> Model:
    """Train on the labelled CSV at ``path`` (see :func:`read_csv`), save the model in
    ``out_dir`` and return it; with ``eval_csv``, its metrics on that file are recorded
    in ``params.json`` under ``"eval"``."""
    model = train(read_csv(path))
    if eval_csv is not None:
        held = read_csv(eval_csv)
        model.params["eval"] = model.evaluate(held.texts, held.labels).as_dict()
    model.save(out_dir)
    return model


def make_vectorizer(params: dict[str, Any]) -> Any:
    """A stateless transformer of texts into features equal to scikit-learn's
    ``HashingVectorizer`` with ``params``: :class:`CharNgramHasher` where it reproduces
    them (the shipped parameters), else ``HashingVectorizer`` itself."""
    if hashing.supports(params):
        return hashing.from_params(params)
    return reference_vectorizer(params)


def reference_vectorizer(params: dict[str, Any]) -> Any:
    """scikit-learn's stateless ``HashingVectorizer`` with ``params``."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        analyzer=params["analyzer"],
        ngram_range=tuple(params["ngram_range"]),
        n_features=int(params["n_features"]),
        lowercase=bool(params["lowercase"]),
        alternate_sign=bool(params["alternate_sign"]),
        norm=params["norm"],
        dtype=np.float64,
    )


def _sgd(alpha: float) -> Any:
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", alpha=alpha, max_iter=50, tol=1e-4, random_state=SEED)


def _fit(model: Any, features: Any, targets: Any) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    # A few epochs short of SGD's tolerance change nothing measurable; not worth a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(features, targets)


def _fit_binary(features: Any, labels: Any, alpha: float) -> tuple[NDArray[np.float64], float]:
    model = _fit(_sgd(alpha), features, labels)
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


def _fit_topics(
    features: Any, labels: Any, categories: list[str], alpha: float
) -> tuple[list[str], NDArray[np.float64], NDArray[np.float64]] | None:
    """P(category | offensive text), trained on the offensive rows; None with fewer
    than two categories among them."""
    offensive = np.flatnonzero(labels == 1)
    targets = [categories[i] for i in offensive]
    classes = sorted(set(targets))
    if len(classes) < 2:
        return None
    model = _fit(_sgd(alpha), features[offensive], targets)
    weights = np.asarray(model.coef_, dtype=np.float64)
    bias = np.asarray(model.intercept_, dtype=np.float64)
    if len(classes) == 2:  # a binary model's single row scores the second class
        weights = np.vstack([-weights[0] / 2, weights[0] / 2])
        bias = np.array([-bias[0] / 2, bias[0] / 2])
    # (features, topics) and contiguous: a sparse row times its transpose view is slow.
    return [str(c) for c in model.classes_], np.ascontiguousarray(weights.T), bias


def _only_category(labels: Any, categories: list[str]) -> list[str]:
    """The one category of every offensive row (``A2_i`` when they have none)."""
    found = {categories[i] for i in np.flatnonzero(labels == 1)}
    return sorted(found) if len(found) == 1 else [OTHER_CATEGORY]


def _tuned_threshold(features: Any, labels: Any, alpha: float) -> float:
    """The threshold with the best F1 on a held-out stratified fifth of the rows."""
    from sklearn.model_selection import train_test_split

    fit_rows, held_rows = train_test_split(
        np.arange(len(labels)), test_size=HOLDOUT, stratify=labels, random_state=SEED
    )
    weights, bias = _fit_binary(features[fit_rows], labels[fit_rows], alpha)
    probs = _sigmoid(features[held_rows] @ weights + bias)
    truth = labels[held_rows].astype(bool)
    candidates = np.round(np.arange(0.2, 0.81, 0.01), 2)
    best = max(candidates, key=lambda t: (_metrics(truth, probs >= t).f1, -abs(t - 0.5)))
    return float(best)


def _metrics(truth: NDArray[np.bool_], predicted: NDArray[np.bool_]) -> Metrics:
    hits = int(np.sum(truth & predicted))
    precision = hits / max(int(predicted.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return Metrics(round(precision, 4), round(recall, 4), round(f1, 4), int(truth.size))


def _sigmoid(x: Any) -> NDArray[np.float64]:
    # maximum/minimum: np.clip's values (NaN included) without its dispatch cost.
    clipped = np.minimum(np.maximum(np.asarray(x, dtype=np.float64), -50.0), 50.0)
    return np.asarray(1.0 / (1.0 + np.exp(-clipped)))


def _softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def _topic_share(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each topic's probability relative to the most likely one's."""
    probs = _softmax(np.asarray(logits))
    return probs / probs.max(axis=1, keepdims=True)


def _row_dot(values: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    """``sum(values[i] * weights[i])`` in order, added one at a time from 0.0: what
    scipy's CSR product computes, to the bit."""
    if not len(values):
        return 0.0
    # + 0.0: a sum of zeros that starts at 0.0 is +0.0 even where the products are -0.0.
    return float(np.cumsum(values * weights)[-1]) + 0.0


def _row_dots(values: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`_row_dot` of ``values`` with each column of ``weights`` (len(values) ×
    columns, a copy that this overwrites)."""
    if not len(values):
        return np.zeros(weights.shape[1])
    weights *= values[:, None]
    return np.asarray(np.cumsum(weights, axis=0)[-1] + 0.0)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- the default model ----------------------------------------------------------------

_lock = threading.Lock()
_loaded: dict[tuple[Path, Path], Model] = {}


def cache_dir(base: str | os.PathLike[str] | None = None) -> Path:
    """Where trained default models are kept: ``base``, else ``$OPENMAAS_CACHE_DIR``,
    else ``openmaas-cache`` in the system temp dir; always under ``moderation/``."""
    root = base or os.environ.get("OPENMAAS_CACHE_DIR")
    if not root:
        return Path(tempfile.gettempdir()) / "openmaas-cache" / "moderation"
    return Path(root) / "moderation"


def default_model(
    *, train_csv: str | os.PathLike[str] | None = None, cache: str | os.PathLike[str] | None = None
) -> Model:
    """The model trained from ``train_csv`` (COLD's training split by default): loaded
    once per process from the cache, trained and cached there first if absent. Raises
    ``OSError`` when neither a cached model nor the CSV exists."""
    source = Path(train_csv or DEFAULT_TRAIN_CSV)
    key = (source.resolve(), cache_dir(cache))
    with _lock:
        model = _loaded.get(key)
        if model is None:
            model = _load_or_train(source, _cached_path(source, cache))
            _loaded[key] = model
        return model


def _cached_path(source: Path, cache: str | os.PathLike[str] | None) -> Path:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    version = hashlib.sha256(
        json.dumps([FORMAT, VECTORIZER, ALPHA, HOLDOUT, SEED]).encode()
    ).hexdigest()[:8]
    return cache_dir(cache) / f"{source.stem}-{digest}-{version}"


def _load_or_train(source: Path, target: Path) -> Model:
    try:
        return load_model(target)
    except (OSError, ValueError, KeyError):
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".training-", dir=target.parent))
    try:
        model = train_from_csv(source, staging)
        # Another process may have finished first: either copy is the same model.
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


# --- a trained model named by the platform ---------------------------------------------

_configured: Path | None = None
_generation = 0


def use_model_dir(model_dir: str | os.PathLike[str] | None) -> bool:
    """Make the model saved in ``model_dir`` (None: the shipped default) the one every
    ``ClassifierChecker()`` built from now on loads; True when that changed (and
    :func:`generation` moved)."""
    global _configured, _generation
    path = Path(model_dir).resolve() if model_dir is not None else None
    with _lock:
        if path == _configured:
            return False
        _configured = path
        _generation += 1
        # Only the configured saved model stays loaded (the default models are kept).
        for key in [k for k in _loaded if k[0] == k[1] and k[0] != path]:
            del _loaded[key]
        return True


def configured_model_dir() -> Path | None:
    """The directory :func:`use_model_dir` named, or None for the shipped default."""
    return _configured


def generation() -> int:
    """A counter that moves whenever :func:`use_model_dir` changes the model; holders of
    a built pipeline rebuild it when it differs from the value they built it at."""
    return _generation


def saved_model(model_dir: str | os.PathLike[str]) -> Model:
    """:func:`load_model`, once per process per directory (a saved model never changes:
    the platform writes each version to a directory of its own)."""
    path = Path(model_dir).resolve()
    with _lock:
        model = _loaded.get((path, path))
        if model is None:
            model = load_model(path)
            _loaded[(path, path)] = model
        return model


class ClassifierChecker:
    """The ``classifier`` checker: ``model``, else the saved model in ``model_dir``, else
    the one :func:`use_model_dir` configured, else the default model, scoring A2 risks.

    Construction is cheap; the model loads (or is trained, once) on the first check.
    Raises ``OSError`` when no model can be had (no saved model, no cache and no
    training CSV).
    """

    name: ClassVar[str] = "classifier"
    cost: ClassVar[int] = 10

    def __init__(
        self,
        model: Model | None = None,
        *,
        train_csv: str | os.PathLike[str] | None = None,
        model_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._model = model
        self._train_csv = Path(train_csv or DEFAULT_TRAIN_CSV)
        if model is None and model_dir is None and train_csv is None:
            model_dir = configured_model_dir()
        self._model_dir = Path(model_dir) if model_dir is not None else None
        if self._model_dir is not None and model is None:
            if not (self._model_dir / PARAMS).is_file():
                raise FileNotFoundError(f"No classifier model in {self._model_dir}.")
        elif model is None and not self._train_csv.is_file():
            raise FileNotFoundError(f"No classifier training data at {self._train_csv}.")

    @property
    def model(self) -> Model:
        if self._model is None:
            if self._model_dir is not None:
                self._model = saved_model(self._model_dir)
            else:
                self._model = default_model(train_csv=self._train_csv)
        return self._model

    def check(self, text: str) -> CheckResult:
        """P(offensive) spread over the A2 categories (see :meth:`Model.score`)."""
        return self.check_many([text])[0]

    def check_many(self, texts: Iterable[str]) -> list[CheckResult]:
        """:meth:`check` for many texts in one vectorised pass."""
        model = self.model
        return [
            CheckResult(
                checker=self.name,
                scores=scores.categories,
                detail={"offensive": scores.offensive, "threshold": 0.5},
            )
            for scores in model.score(list(texts))
        ]
