"""Statistics of a dataset version, read from its Parquet viewer copy in batches: rows,
characters and tokens per field (and per role for conversations), length histograms,
exact duplicates and the language mix."""

from __future__ import annotations

import hashlib
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq

from datasets.formats.tokens import TokenCounter
from datasets.formats.viewer_copy import JSON_COLUMNS_KEY, ROW_COLUMN
from datasets.text import LANGUAGES, language_of, text_of

BINS = 20
BATCH_ROWS = 4096
PROGRESS_INTERVAL = 0.1
# (list key, role key, text key) of the turns of conversation layouts.
TURNS = {"chat": ("messages", "role", "content"), "sharegpt": ("conversations", "from", "value")}


class _Summary:
    """Sum, mean, min and max of a stream of counts."""

    def __init__(self) -> None:
        self.count = self.total = 0
        self.low: int | None = None
        self.high: int | None = None

    def add(self, value: int) -> None:
        self.count += 1
        self.total += value
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    def result(self) -> dict[str, Any]:
        mean = self.total / self.count if self.count else 0.0
        return {"sum": self.total, "mean": mean, "min": self.low or 0, "max": self.high or 0}


def histogram(values: array[int]) -> dict[str, list[Any]]:
    """`BINS` equal-width bins from the smallest to the largest value."""
    if not values:
        return {"bin_edges": [], "hist": []}
    counts, edges = np.histogram(np.frombuffer(values, dtype=np.int64), bins=BINS)
    return {"bin_edges": [float(edge) for edge in edges], "hist": [int(c) for c in counts]}


def _turns(fmt: str | None, row: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(role, text)`` of each turn of a chat or ShareGPT row."""
    if fmt not in TURNS:
        return
    list_key, role_key, text_key = TURNS[fmt]
    turns = row.get(list_key)
    for turn in turns if type(turns) is list else ():
        if type(turn) is dict:
            role = turn.get(role_key, turn.get("role"))
            yield str(role), text_of(turn.get(text_key, turn.get("content")))


class _Statistics:
    """Accumulates statistics batch by batch; memory grows by 24 bytes a row (two row
    lengths for the histograms, a 128-bit hash for duplicates), never by row content."""

    def __init__(self, fmt: str | None, tokens: TokenCounter | None) -> None:
        self.fmt, self.tokens = fmt, tokens
        self.rows = 0
        self.field_chars: dict[str, _Summary] = {}
        self.field_tokens: dict[str, _Summary] = {}
        self.roles: Counter[str] = Counter()
        self.role_tokens: dict[str, _Summary] = {}
        self.row_chars: array[int] = array("q")
        self.row_tokens: array[int] = array("q")
        self.hashes = bytearray()
        self.languages: Counter[str] = Counter(dict.fromkeys(LANGUAGES, 0))

    def add(self, rows: list[dict[str, Any]], text_fields: list[str]) -> None:
        self.rows += len(rows)
        for row in rows:
            text = text_of(row)
            self.row_chars.append(len(text))
            self.languages[language_of(text)] += 1
            digest = hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=16)
            self.hashes += digest.digest()
        self._add_fields(rows, text_fields)
        self._add_turns(rows)

    def _add_fields(self, rows: list[dict[str, Any]], text_fields: list[str]) -> None:
        row_tokens = [0] * len(rows)
        for field in text_fields:
            # Rows without the field (null in the copy) do not count towards its sizes.
            present = [
                (i, text_of(row[field])) for i, row in enumerate(rows) if row[field] is not None
            ]
            chars = self.field_chars.setdefault(field, _Summary())
            for _, text in present:
                chars.add(len(text))
            if self.tokens is not None and present:
                summary = self.field_tokens.setdefault(field, _Summary())
                counts = self.tokens.count_batch([text for _, text in present])
                for (index, _), count in zip(present, counts, strict=True):
                    summary.add(count)
                    row_tokens[index] += count
        if self.tokens is not None:
            self.row_tokens.extend(row_tokens)

    def _add_turns(self, rows: list[dict[str, Any]]) -> None:
        turns = [turn for row in rows for turn in _turns(self.fmt, row)]
        self.roles.update(role for role, _ in turns)
        if self.tokens is not None and turns:
            counts = self.tokens.count_batch([text for _, text in turns])
            for (role, _), count in zip(turns, counts, strict=True):
                self.role_tokens.setdefault(role, _Summary()).add(count)

    def duplicates(self) -> int:
        if not self.hashes:
            return 0
        digests = np.frombuffer(bytes(self.hashes), dtype=np.dtype("V16"))
        return int(len(digests) - len(np.unique(digests)))

    def result(self) -> dict[str, Any]:
        fields = {name: {"chars": summary.result()} for name, summary in self.field_chars.items()}
        for name, summary in self.field_tokens.items():
            fields[name]["tokens"] = summary.result()
        histograms = {"chars": histogram(self.row_chars)}
        if self.tokens is not None:
            histograms["tokens"] = histogram(self.row_tokens)
        result: dict[str, Any] = {
            "rows": self.rows,
            "format": self.fmt,
            "fields": fields,
            "histograms": histograms,
            "exact_duplicates": self.duplicates(),
            "languages": dict(self.languages),
        }
        if self.fmt in TURNS:
            result["roles"] = dict(self.roles)
            if self.tokens is not None:
                result["role_tokens"] = {r: s.result() for r, s in self.role_tokens.items()}
        return result


def _rows(batch: Any, json_columns: set[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = batch.drop_columns([ROW_COLUMN]).to_pylist()
    for row in rows:
        for name in json_columns:
            if row.get(name) is not None:
                row[name] = orjson.loads(row[name])
    return rows


def compute_statistics(
    parquet: Path,
    fmt: str | None,
    *,
    tokens: TokenCounter | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Statistics of the viewer copy at ``parquet`` (written by `validate_file`) for a
    file of format ``fmt``; token counts only when ``tokens`` is given. ``progress``
    gets ``(rows_done, rows_total)`` at most ~10 times a second. Raises
    `pyarrow.ArrowException` or `OSError` when the copy cannot be read."""
    source = pq.ParquetFile(parquet)
    metadata = source.schema_arrow.metadata or {}
    json_columns = set(orjson.loads(metadata.get(JSON_COLUMNS_KEY, b"[]")))
    text_fields = [
        field.name
        for field in source.schema_arrow
        if field.name != ROW_COLUMN and (field.name in json_columns or field.type == "string")
    ]
    stats, total, last = _Statistics(fmt, tokens), source.metadata.num_rows, 0.0
    for batch in source.iter_batches(batch_size=BATCH_ROWS):
        stats.add(_rows(batch, json_columns), text_fields)
        if progress is not None and time.monotonic() - last >= PROGRESS_INTERVAL:
            last = time.monotonic()
            progress(stats.rows, total)
    if progress is not None:
        progress(stats.rows, total)
    return stats.result()
