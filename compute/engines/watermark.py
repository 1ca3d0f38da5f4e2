"""The green-list text watermark (Kirchenbauer et al. 2023, "A Watermark for Large
Language Models"): one module for the engine that plants it and the detector that finds it.

At every decode step the vocabulary is split by a keyed hash of the **previous token**: a
fraction ``gamma`` of the token ids is "green", and the engine adds ``delta`` to their
logits before sampling. Text written without the key lands on green tokens at the rate
``gamma``; watermarked text far more often. The detector re-tokenizes a text, counts the
green tokens among the ``T`` it scores and reports ``z = (green - gamma*T) /
sqrt(T*gamma*(1-gamma))``.

Green-list membership is ``mix((token * GOLDEN + seed) mod 2**32) < gamma * 2**32`` where
``seed`` is a keyed BLAKE2b of the previous token id (one hash per step, in Python) and
``mix`` is a 32-bit integer finaliser written with ``*``, ``&``, ``^`` and ``>>`` only: the
same expression runs on a Python int (the detector, one token at a time) and on an int64
torch tensor of every token id (the engine, one vectorised pass over the vocabulary; no
per-step permutation). Every intermediate stays below 2**63, so int64 never overflows.

Nothing here imports torch: the engine passes a tensor in, the portal passes ints.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Any

DEFAULT_GAMMA = 0.25
DEFAULT_DELTA = 2.0
MIN_GAMMA, MAX_GAMMA = 0.05, 0.95
MAX_DELTA = 20.0
KEY_ENV = "OPENMAAS_WATERMARK_KEY"  # the engine reads its key here, never from argv

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1  # odd: token -> token * _GOLDEN mod 2**32 is a bijection
_MULT = 0x045D9F3B  # < 2**27: (x < 2**32) * _MULT < 2**59
_SPACE = 1 << 32


def _hash(ids: Any, seed: int) -> Any:
    """``mix((ids * GOLDEN + seed) mod 2**32)``, where ``mix`` is a 32-bit integer
    finaliser (two multiply-xorshift rounds), for an int or an int64 tensor of ids.

    Augmented assignments: on a tensor they work in place on the one new tensor made by
    the first product (a fifth faster over a large vocabulary), on an int they rebind.
    """
    x = ids * _GOLDEN
    x += seed
    x &= _MASK
    for _ in range(2):
        x ^= x >> 16
        x *= _MULT
        x &= _MASK
    x ^= x >> 16
    return x


def key_bytes(secret: str) -> bytes:
    """The 32-byte hashing key of a deployment's watermark secret (any length)."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class Watermark:
    """A watermark: the secret ``key`` (see :func:`key_bytes`), the green fraction
    ``gamma`` and the logit bias ``delta``. Raises ValueError for values out of range."""

    key: bytes
    gamma: float = DEFAULT_GAMMA
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a watermark needs a key")
        if not MIN_GAMMA <= self.gamma <= MAX_GAMMA:
            raise ValueError(f"gamma must be in [{MIN_GAMMA}, {MAX_GAMMA}], got {self.gamma}")
        if not 0 < self.delta <= MAX_DELTA:
            raise ValueError(f"delta must be in (0, {MAX_DELTA}], got {self.delta}")

    @property
    def threshold(self) -> int:
        """Hashes below this are green: ``gamma`` of the 2**32 possible values."""
        return int(self.gamma * _SPACE)

    def seed(self, prev: int) -> int:
        """The green list's seed after token ``prev``: 32 bits of a keyed BLAKE2b."""
        digest = hashlib.blake2b(
            int(prev).to_bytes(8, "little", signed=True), key=self.key, digest_size=4
        ).digest()
        return int.from_bytes(digest, "little")

    def green(self, prev: int, ids: Any) -> Any:
        """Whether token ``ids`` are green after ``prev``: a bool for an int, a bool
        tensor for an int64 tensor of ids (``torch.arange(vocab)`` on the engine)."""
        return _hash(ids, self.seed(prev)) < self.threshold


@dataclass(frozen=True)
class Score:
    """What the detector measured over a token sequence."""

    tokens_scored: int
    green: int
    z_score: float

    @property
    def green_fraction(self) -> float:
        return self.green / self.tokens_scored if self.tokens_scored else 0.0


def score(watermark: Watermark, token_ids: list[int]) -> Score:
    """Count green tokens over the (previous, token) pairs of ``token_ids``; the first
    token has no known predecessor and is not scored.

    A pair seen before is scored once (the paper's "ignore repeated n-grams" with n = 2):
    repeated phrases would otherwise count the same evidence again and inflate ``z`` for
    human text that repeats itself, as much as for watermarked text.
    """
    seen: set[tuple[int, int]] = set()
    green = 0
    for prev, token in itertools.pairwise(token_ids):
        if (prev, token) in seen:
            continue
        seen.add((prev, token))
        green += bool(watermark.green(prev, token))
    return Score(len(seen), green, z_score(green, len(seen), watermark.gamma))


def z_score(green: int, scored: int, gamma: float) -> float:
    """``(green - gamma*T) / sqrt(T*gamma*(1-gamma))``; 0 when nothing was scored."""
    if scored <= 0:
        return 0.0
    return (green - gamma * scored) / math.sqrt(scored * gamma * (1 - gamma))
