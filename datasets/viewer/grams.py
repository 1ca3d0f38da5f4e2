"""A per-block prefilter of the search index: which blocks of rows may contain a text.

Each block of ``BLOCK_ROWS`` rows gets a Bloom-style bitset (one hash) of the characters
and character bigrams of its lowercased text. A block whose bitset lacks a bit of some
gram of the query cannot contain the query, so it is never scanned; a block that has
them all may (hash collisions only add blocks, never drop one), so answers stay exact.
Rare queries then scan a few blocks instead of the whole split.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

BLOCK_ROWS = 2048
BITS_LOG2 = 18
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(64 - BITS_LOG2)
_SECOND = np.uint64(21)  # code points fit in 21 bits: (a << 21) | b is unique per pair


def code_points(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as uint64."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def gram_bits(points: np.ndarray) -> np.ndarray:
    """The bit numbers (0 .. 2**BITS_LOG2 - 1) of every character and bigram of
    ``points`` (repeated when a gram is). A character is hashed as the pair (c, 0),
    which no bigram of text is."""
    pairs = np.concatenate([points << _SECOND, (points[:-1] << _SECOND) | points[1:]])
    return (pairs * _MULTIPLIER) >> _SHIFT


def block_bitset(texts: pa.Array) -> np.ndarray:
    """The packed bitset (uint8, 2**BITS_LOG2 / 8 bytes) of the grams of ``texts``.
    The texts are hashed as one run: the bigrams across two rows only add bits."""
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[texts.offset :][: len(texts) + 1]
    data = b"" if data_buffer is None else data_buffer.to_pybytes()[offsets[0] : offsets[-1]]
    bits = np.zeros(1 << BITS_LOG2, dtype=bool)
    if data:
        bits[gram_bits(code_points(data.decode()))] = True
    return np.packbits(bits, bitorder="little")


def candidate_blocks(bitsets: np.ndarray, needle: str) -> np.ndarray:
    """The numbers, ascending, of the blocks (rows of ``bitsets``) that may contain
    ``needle`` (already lowercased like the indexed text)."""
    wanted = gram_bits(code_points(needle))
    have = (bitsets[:, wanted >> np.uint64(3)] >> (wanted & np.uint64(7)).astype(np.uint8)) & 1
    return np.flatnonzero(have.all(axis=1))
