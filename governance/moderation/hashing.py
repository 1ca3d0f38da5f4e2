"""Hashed character n-grams computed with numpy, equal to scikit-learn's output.

:class:`CharNgramHasher` gives the same sparse matrix as
``HashingVectorizer(analyzer="char", ...)`` with the default decoder, preprocessor and
token steps — same indices, same float64 values, bit for bit — without building and
hashing every n-gram as a Python string. scikit-learn's steps, which this reproduces:

1. lowercase with ``str.lower`` (when ``lowercase``), then collapse every run of two or
   more whitespace characters (``re`` ``\\s``) into one space;
2. every character n-gram for ``n`` in ``ngram_range`` with ``n`` ≤ the text's length;
3. each n-gram's UTF-8 bytes → MurmurHash3 (x86, 32 bit, seed 0) as a signed int32
   ``h``; the column is ``abs(h) % n_features`` (``abs(-2**31)`` taken as ``2**31 - 1 -
   (n_features - 1)``, as scikit-learn does) and the value ``1``, or ``sign(h)`` with
   ``alternate_sign``;
4. duplicates summed and columns sorted per row, then each row divided by its L2 (or
   L1) norm; an all-zero row is left as it is.

The values before the division are small integers, so their sums and norms are exact in
float64 whatever the order of addition: the division is the only rounding step and it
is the same one. A short text's n-grams are hashed one call each with scikit-learn's own
``murmurhash3_32``; a longer text's all at once by :func:`_murmur3` in numpy (numpy's
cost per operation outweighs the per-call cost below :data:`SHORT` characters). Bytes go
to scikit-learn itself, which decodes them; a lone surrogate, which UTF-8 cannot encode,
raises ``UnicodeEncodeError`` as it does there. Pure: no Django.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from scipy import sparse


@lru_cache(maxsize=1)
def _murmurhash3_32() -> Any:
    """scikit-learn's MurmurHash3, imported on first use: importing scikit-learn takes a
    couple of seconds, which every process that merely loads the URLs would pay."""
    from sklearn.utils import murmurhash3_32

    return murmurhash3_32


def preload() -> None:
    """Import what hashing needs now (a serving process at start-up, so that its first
    classification does not import for seconds while holding the interpreter)."""
    import scipy.sparse  # noqa: F401

    _murmurhash3_32()


# scikit-learn's _VectorizerMixin._white_spaces.
_WHITE_SPACES = re.compile(r"\s\s+")

_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)
_M = np.uint32(5)
_N = np.uint32(0xE6546B64)
_F1 = np.uint32(0x85EBCA6B)
_F2 = np.uint32(0xC2B2AE35)
# Up to this many characters, hashing each n-gram in a call costs less than numpy's
# fixed cost per operation (measured: equal at about 70 ASCII or 95 CJK characters).
SHORT = 100
_ZERO = np.zeros(1, dtype=np.int64)
_NO_COLUMNS = np.zeros(0, dtype=np.int64)
_NO_VALUES = np.zeros(0, dtype=np.float64)


class CharNgramHasher:
    """``HashingVectorizer(analyzer="char", ngram_range=ngram_range, n_features=...,
    lowercase=..., alternate_sign=..., norm=..., dtype=float64)``'s ``transform``.

    Raises ``ValueError`` for parameters it does not reproduce (see :func:`supports`).
    """

    def __init__(
        self,
        ngram_range: tuple[int, int],
        n_features: int,
        *,
        lowercase: bool = True,
        alternate_sign: bool = True,
        norm: str | None = "l2",
    ) -> None:
        low, high = ngram_range
        if not 1 <= low <= high or not 1 <= n_features < 2**31 or norm not in ("l1", "l2", None):
            raise ValueError("Unsupported hashing parameters.")
        self.ngram_range = (low, high)
        self.n_features = n_features
        self.lowercase = lowercase
        self.alternate_sign = alternate_sign
        self.norm = norm
        # Texts up to this many characters hash n-gram by n-gram (see _hashes_python).
        self.short = SHORT
        self._padding = bytes(4 * high)  # the most UTF-8 bytes an n-gram can have
        self._reference: Any = None
        # A hasher is made to be used: import what it needs now (in a model loader's
        # thread, say), not at its first text.
        preload()

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """The (len(texts), n_features) float64 CSR matrix scikit-learn would return."""
        texts = list(texts)
        if not texts:
            raise ValueError("Cannot vectorize empty sequence.")
        if not all(isinstance(t, str) for t in texts):  # bytes: scikit-learn decodes them
            return self._sklearn(texts)
        from scipy import sparse  # imported on first use: it costs a process seconds

        rows = [self.row(t) for t in texts]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r[0]) for r in rows], out=indptr[1:])
        index_type = np.int32 if indptr[-1] <= np.iinfo(np.int32).max else np.int64
        # A matrix, not an array: what HashingVectorizer returns by default.
        matrix = sparse.csr_matrix(
            (
                np.concatenate([r[1] for r in rows]),
                np.concatenate([r[0] for r in rows]).astype(index_type),
                indptr.astype(index_type),
            ),
            shape=(len(rows), self.n_features),
        )
        matrix.has_canonical_format = True  # sorted, no duplicates: built that way
        return matrix

    def row(self, text: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """One text's row: its columns, ascending and distinct, and their values. Raises
        ``UnicodeEncodeError`` for a lone surrogate, as scikit-learn does."""
        text = _WHITE_SPACES.sub(" ", text.lower() if self.lowercase else text)
        length = len(text)
        if length < self.ngram_range[0]:
            return _NO_COLUMNS, _NO_VALUES
        short = length <= self.short
        hashed = self._hashes_python(text) if short else self._hashes_numpy(text)
        columns = np.abs(hashed.astype(np.int64))
        # abs(-2**31) % n equals scikit-learn's (2**31 - 1 - (n - 1)) % n for that case.
        columns %= self.n_features
        if self.alternate_sign:
            return self._signed(columns, hashed >= 0)
        columns.sort()
        # Runs of equal columns: where each starts and how long it is.
        edges = np.flatnonzero(columns[1:] != columns[:-1]) + 1
        starts = np.concatenate((_ZERO, edges))
        counts = np.concatenate((edges, [len(columns)])) - starts
        return columns[starts], self._normalized(counts)

    def _hashes_python(self, text: str) -> NDArray[np.int32]:
        """The signed hash of every n-gram, one call of scikit-learn's own MurmurHash3 per
        n-gram (cheaper than numpy's fixed cost per operation for a short text)."""
        low, high = self.ngram_range
        length = len(text)
        grams = list(text) if low == 1 else []
        for n in range(max(low, 2), min(high, length) + 1):
            grams += [text[i : i + n] for i in range(length - n + 1)]
        return np.fromiter(map(_murmurhash3_32(), grams), dtype=np.int32, count=len(grams))

    def _hashes_numpy(self, text: str) -> NDArray[np.int32]:
        """The signed hash of every n-gram, all at once (see :func:`_murmur3`)."""
        low, high = self.ngram_range
        length = len(text)
        encoded = text.encode("utf-8")
        data = np.frombuffer(encoded + self._padding, dtype=np.uint8)
        if len(encoded) == length:
            offsets = np.arange(length + 1)
        else:  # a character starts at every byte that is not a continuation byte
            offsets = np.flatnonzero((data & 0xC0) != 0x80)
        top = min(high, length)
        sizes = np.concatenate(
            [offsets[n : length + 1] - offsets[: length - n + 1] for n in range(low, top + 1)]
        )
        width = (int(sizes.max()) + 3) // 4 * 4
        # The bytes from each character's start, then each n-gram's: the rows of its
        # first character, for every n in turn; bytes past its size zeroed.
        from_char = data[offsets[:length, None] + np.arange(width)]
        window = np.concatenate([from_char[: length - n + 1] for n in range(low, top + 1)])
        words = window.view("<u4")
        words &= _word_masks(width)[sizes]
        return _murmur3(words, sizes).view(np.int32)

    def _signed(
        self, columns: NDArray[np.int64], positive: NDArray[np.bool_]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        unique, inverse = np.unique(columns, return_inverse=True)
        summed = np.bincount(inverse, weights=np.where(positive, 1.0, -1.0))
        return unique, self._normalized(summed)

    def _normalized(self, values: NDArray[Any]) -> NDArray[np.float64]:
        """``values`` (whole numbers) divided by their norm, as scikit-learn does; the
        sum is exact, so its order does not matter."""
        values = values.astype(np.float64)
        if self.norm == "l2":
            total = math.sqrt(float(values @ values))
        elif self.norm == "l1":
            total = float(np.abs(values).sum())
        else:
            return values
        if total != 0.0:
            values /= total
        return values

    def _sklearn(self, texts: list[Any]) -> sparse.csr_matrix:
        if self._reference is None:
            from sklearn.feature_extraction.text import HashingVectorizer

            self._reference = HashingVectorizer(
                analyzer="char",
                ngram_range=self.ngram_range,
                n_features=self.n_features,
                lowercase=self.lowercase,
                alternate_sign=self.alternate_sign,
                norm=self.norm,
                dtype=np.float64,
            )
        result: sparse.csr_matrix = self._reference.transform(texts)
        return result


def supports(params: dict[str, Any]) -> bool:
    """Whether :class:`CharNgramHasher` reproduces a vectorizer with ``params`` (the
    keys of the classifier's ``VECTORIZER``; others must be absent or default)."""
    known = {"analyzer", "ngram_range", "n_features", "lowercase", "alternate_sign", "norm"}
    if set(params) - known or params.get("analyzer", "word") != "char":
        return False
    try:
        from_params(params)
    except (KeyError, TypeError, ValueError):
        return False
    return True


def from_params(params: dict[str, Any]) -> CharNgramHasher:
    """The hasher for a vectorizer's ``params``; raises ``ValueError`` (or ``KeyError``)
    when they are not ones it reproduces."""
    low, high = (int(n) for n in params["ngram_range"])
    return CharNgramHasher(
        (low, high),
        int(params["n_features"]),
        lowercase=bool(params.get("lowercase", True)),
        alternate_sign=bool(params.get("alternate_sign", True)),
        norm=params.get("norm", "l2"),
    )


def _murmur3(words: NDArray[np.uint32], sizes: NDArray[np.int64]) -> NDArray[np.uint32]:
    """MurmurHash3_x86_32 with seed 0 of each row's first ``sizes`` bytes, given as
    little-endian 32-bit ``words`` with the bytes past the size zeroed.

    A zero block mixes to zero, so the partial block is exactly the tail step and a block
    past the end changes nothing; only whole blocks also rotate and scale the state."""
    longest = int(sizes.max())
    mixed = _rotl(words * _C1, 15) * _C2  # every block's k at once
    hashed = np.zeros(len(sizes), dtype=np.uint32)
    for block in range(words.shape[1]):
        hashed ^= mixed[:, block]
        if longest >= 4 * (block + 1):
            whole = _rotl(hashed, 13) * _M + _N
            hashed = np.where(sizes >= 4 * (block + 1), whole, hashed)
    hashed ^= sizes.astype(np.uint32)
    hashed ^= hashed >> np.uint32(16)
    hashed *= _F1
    hashed ^= hashed >> np.uint32(13)
    hashed *= _F2
    hashed ^= hashed >> np.uint32(16)
    return hashed


@lru_cache(maxsize=8)
def _word_masks(width: int) -> NDArray[np.uint32]:
    """Row ``size`` (0..width): per 32-bit block, the mask that keeps the bytes before
    ``size``."""
    masks = np.zeros((width + 1, width // 4), dtype=np.uint32)
    for size in range(width + 1):
        for block in range(width // 4):
            kept = min(max(size - 4 * block, 0), 4)
            masks[size, block] = (1 << (8 * kept)) - 1
    return masks


def _rotl(x: NDArray[np.uint32], r: int) -> NDArray[np.uint32]:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))
