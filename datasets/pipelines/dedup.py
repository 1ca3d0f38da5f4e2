"""Exact and near-duplicate removal; the first row of each duplicate group is kept."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from datasets.pipelines.base import Row, Step, dump_json, param, selected
from datasets.pipelines.minhash import BandIndex, MinHasher
from datasets.text import text_of

_SPACES = re.compile(r"\s+")
BATCH = 2048


def normalise(value: Any) -> Any:
    """Every string leaf lower-cased with runs of whitespace made one space, trimmed."""
    if isinstance(value, str):
        return _SPACES.sub(" ", value).strip().lower()
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item) for item in value]
    return value


@dataclass(frozen=True)
class DedupExactParams:
    fields: tuple[str, ...] | None = None
    normalize: bool = False


class DedupExact(Step[DedupExactParams]):
    """Drops a row whose compared part (whole row, or ``fields``) equals an earlier one's,
    optionally ignoring case and whitespace. Holds a 16-byte digest per distinct row."""

    name = "dedup_exact"
    Params = DedupExactParams

    def apply(self, rows: Iterator[Row]) -> Iterator[Row]:
        seen: set[bytes] = set()
        for row in rows:
            value = selected(row.data, self.params.fields)
            if self.params.normalize:
                value = normalise(value)
            digest = hashlib.blake2b(dump_json(value, sort_keys=True), digest_size=16).digest()
            if digest in seen:
                self.drop(row)
            else:
                seen.add(digest)
                yield row


@dataclass(frozen=True)
class DedupNearParams:
    threshold: float = param(0.8, min=0.05, max=1.0)
    num_perm: int = param(128, min=16, max=1024)
    ngram: int = param(5, min=1, max=32)
    fields: tuple[str, ...] | None = None
    seed: int = param(1, min=0, max=2**32 - 1)


class DedupNear(Step[DedupNearParams]):
    """Drops a row whose estimated Jaccard similarity (character ``ngram`` shingles of
    its lower-cased, whitespace-normalised text) to an earlier kept row reaches
    ``threshold``, as MinHash LSH estimates it: a probabilistic test, tuned so that
    misses and false hits around the threshold are equally weighted. Rows are hashed in
    batches of :data:`BATCH`; the index holds 8 bytes per kept row and LSH band."""

    name = "dedup_near"
    Params = DedupNearParams

    def apply(self, rows: Iterator[Row]) -> Iterator[Row]:
        p = self.params
        hasher = MinHasher(p.num_perm, p.ngram, p.seed)
        index = BandIndex(p.threshold, p.num_perm)
        while batch := list(islice(rows, BATCH)):
            texts = [self._text(row) for row in batch]
            duplicate = index.add(hasher.signatures(texts))
            for row, is_duplicate in zip(batch, duplicate.tolist(), strict=True):
                if is_duplicate:
                    self.drop(row)
                else:
                    yield row

    def _text(self, row: Row) -> str:
        return _SPACES.sub(" ", text_of(selected(row.data, self.params.fields))).strip().lower()
