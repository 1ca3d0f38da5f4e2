"""MinHash signatures of character shingles, computed for a batch of texts at once, and a
compact LSH band index for streaming near-duplicate detection.

Why not ``datasketch.MinHash`` per row: it hashes every shingle with SHA-1 in Python and
applies the permutations row by row, and ``MinHashLSH`` keeps a dict of sets per band —
several hundred bytes per row and band. Here a batch's shingles are hashed with numpy
(a polynomial over code points, mixed with the MurmurHash3 finaliser), permuted as
``a*h + b mod 2**32`` with odd ``a`` (a bijection, as in datasketch's ``affine32``
scheme), and each row's bands are folded to one 64-bit key kept in sorted numpy runs:
8 bytes per row and band. ``tests/bench/datasets_dedup.py`` compares the two.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import numpy.typing as npt

U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]

_POLY = np.uint64(0x100000001B3)
# Rows of one batch are permuted in chunks of this many shingles to stay in cache.
_CHUNK = 4096


def fmix64(x: U64) -> U64:
    """MurmurHash3's 64-bit finaliser (a bijection that spreads every input bit)."""
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def _seeded_words(label: str, count: int) -> U64:
    # hashlib rather than a numpy generator: the same seed gives the same permutations
    # on every numpy version, so a pipeline re-run keeps the same rows.
    raw = hashlib.shake_128(label.encode()).digest(8 * count)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


class MinHasher:
    """Signatures over character ``ngram`` shingles; a text shorter than ``ngram`` is
    one shingle. Deterministic for a given ``(num_perm, ngram, seed)``."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1) -> None:
        self.num_perm, self.ngram = num_perm, ngram
        words = _seeded_words(f"minhash:{seed}", 2 * num_perm)
        self._a = (words[:num_perm] | np.uint64(1)).astype(np.uint32)
        self._b = words[num_perm:].astype(np.uint32)

    def signatures(self, texts: list[str]) -> U32:
        """A ``(len(texts), num_perm)`` array of minimum permuted shingle hashes."""
        hashes, counts = self._shingle_hashes(texts)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        first = 0
        while first < len(texts):
            last = int(np.searchsorted(starts, starts[first] + _CHUNK, side="right"))
            last = max(last, first + 1)
            low, high = starts[first], starts[last - 1] + counts[last - 1]
            permuted = hashes[low:high, None] * self._a
            permuted += self._b
            out[first:last] = np.minimum.reduceat(permuted, starts[first:last] - low, axis=0)
            first = last
        return out

    def _shingle_hashes(self, texts: list[str]) -> tuple[U32, npt.NDArray[np.int64]]:
        """Each text's shingle hashes, concatenated, and how many each text has."""
        n = self.ngram
        # n NULs after each text: every shingle starts inside its own text's segment.
        joined = ("\0" * n).join(texts) + "\0" * n
        codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        windows = len(codes) - n + 1
        rolled = codes[:windows].copy()
        for offset in range(1, n):
            rolled *= _POLY
            rolled += codes[offset : offset + windows]
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        counts = np.maximum(lengths - n + 1, 1)
        segment = np.concatenate(([0], np.cumsum(lengths + n)[:-1]))
        first_shingle = np.concatenate(([0], np.cumsum(counts)[:-1]))
        positions = np.arange(int(counts.sum())) + np.repeat(segment - first_shingle, counts)
        return fmix64(rolled[positions]).astype(np.uint32), counts


@lru_cache(maxsize=64)
def lsh_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` minimising the equally weighted false-positive and
    false-negative areas of the S-curve ``1 - (1 - s**rows)**bands`` around ``threshold``
    (the criterion datasketch's ``MinHashLSH`` uses)."""
    below = np.linspace(0.0, threshold, 201)
    above = np.linspace(threshold, 1.0, 201)
    best, shape = float("inf"), (1, num_perm)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - below**rows) ** bands, below)
            fn = np.trapezoid((1 - above**rows) ** bands, above)
            if fp + fn < best:
                best, shape = float(fp + fn), (bands, rows)
    return shape


class BandIndex:
    """Streaming "query, then insert" over LSH bands: a row is a near duplicate when one
    of its band keys equals a band key of an earlier kept row."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        self.bands, self.rows = lsh_shape(threshold, num_perm)
        self._salt = _seeded_words("bands", self.bands)
        self._runs: list[U64] = []  # sorted, sizes roughly halving: O(log n) runs

    def keys(self, signatures: U32) -> U64:
        """A ``(len(signatures), bands)`` array of 64-bit band keys."""
        used = signatures[:, : self.bands * self.rows].astype(np.uint64)
        parts = used.reshape(len(signatures), self.bands, self.rows)
        folded = np.broadcast_to(self._salt, parts.shape[:2]).copy()
        for column in range(self.rows):
            folded = fmix64(folded ^ parts[:, :, column])
        return folded

    def add(self, signatures: U32) -> npt.NDArray[np.bool_]:
        """For each row in order, whether it is a near duplicate of an earlier kept row
        (this batch's included); the rows that are not are kept in the index."""
        keys = self.keys(signatures)
        duplicate = self._seen(keys)
        fresh: set[int] = set()
        for index, row_keys in enumerate(keys.tolist()):
            if duplicate[index] or not fresh.isdisjoint(row_keys):
                duplicate[index] = True
            else:
                fresh.update(row_keys)
        if fresh:
            self._insert(np.fromiter(fresh, dtype=np.uint64, count=len(fresh)))
        return duplicate

    def _seen(self, keys: U64) -> npt.NDArray[np.bool_]:
        flat = keys.ravel()
        hit = np.zeros(flat.shape, dtype=np.bool_)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, flat), len(run) - 1)
            hit |= run[at] == flat
        return np.asarray(hit.reshape(keys.shape).any(axis=1))

    def _insert(self, keys: U64) -> None:
        self._runs.append(np.sort(keys))
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer = self._runs.pop()
            self._runs[-1] = np.union1d(self._runs[-1], newer)

    @property
    def size(self) -> int:
        """Band keys held (8 bytes each)."""
        return sum(len(run) for run in self._runs)
