"""The search index of a split: a side file next to its Parquet, built once (at ingest or
on the first search) and memory-mapped by every query.

It is an uncompressed Arrow IPC file holding every column of the split plus ``__pos__``
(the 0-based position) and ``__text__`` (the row's text lowercased: string cells and the
string leaves of JSON cells, joined by newlines). A case-insensitive substring search is
then one vectorised ``contains`` over in-memory text (no per-query lowercasing, no
decompression, no JSON syntax to match), and the rows of a result page, scattered over the
split, are zero-copy slices instead of whole Parquet row groups decoded for a few rows.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datasets.text import text_of
from datasets.viewer.layout import Layout, layout_of

POS_COLUMN = "__pos__"
TEXT_COLUMN = "__text__"
SOURCE_KEY = b"openmaas.source"
BATCH_ROWS = 8192


def index_path(path: Path) -> Path:
    """Where the search index of the split file ``path`` lives."""
    return path.with_name(path.name + ".search.arrow")


def _source_tag(path: Path) -> bytes:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}".encode()


def _row_texts(batch: pa.RecordBatch, layout: Layout) -> list[str]:
    columns = []
    for name in layout.text_columns:
        values = batch.column(name).to_pylist()
        if layout.columns[name] == "json":
            values = [None if v is None else text_of(orjson.loads(v)) for v in values]
        columns.append(values)
    return ["\n".join(v for v in cells if v) for cells in zip(*columns, strict=True)]


def _with_text(batch: pa.RecordBatch, layout: Layout, first: int) -> pa.RecordBatch:
    texts = pc.utf8_lower(pa.array(_row_texts(batch, layout), pa.string()))
    positions = pa.array(range(first, first + batch.num_rows), pa.int64())
    arrays = [*batch.columns, positions, texts]
    names = [*batch.schema.names, POS_COLUMN, TEXT_COLUMN]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _write(path: Path, target: Path) -> None:
    layout = layout_of(path)
    source = pq.ParquetFile(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    first, writer = 0, None
    try:
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            full = _with_text(batch, layout, first)
            if writer is None:
                schema = full.schema.with_metadata({SOURCE_KEY: _source_tag(path)})
                writer = pa.ipc.new_file(str(tmp), schema)
            writer.write_batch(full)
            first += batch.num_rows
        if writer is None:
            raise ValueError(f"{path} has no rows to index")
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def build_search_index(path: Path) -> Path:
    """Build (or keep, if current) the search index of the split file ``path`` and return
    its path. Safe to call from several processes at once: one builds, the others wait and
    reuse it. Takes about 10 s per million chat rows; call it at ingest."""
    target = index_path(path)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if open_index(path) is None:
            _write(path, target)
    return target


@dataclass(frozen=True)
class SearchIndex:
    """A memory-mapped index: ``table`` (its batches) and the first position of each."""

    table: pa.Table
    batches: list[pa.RecordBatch]
    starts: np.ndarray

    def records(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """The split's rows at ``positions``, in that order, without the index columns.
        Zero-copy slices: ``Table.take`` would first concatenate the whole index."""
        found = np.searchsorted(self.starts, positions, side="right") - 1
        parts = [
            self.batches[b].slice(p - self.starts[b], 1)
            for b, p in zip(found.tolist(), positions, strict=True)
        ]
        table = pa.Table.from_batches(parts, schema=self.table.schema)
        return table.drop_columns([POS_COLUMN, TEXT_COLUMN]).to_pylist()


def open_index(path: Path) -> SearchIndex | None:
    """The memory-mapped index of ``path``, or None when it is missing or stale."""
    target = index_path(path)
    try:
        stat = target.stat()
    except FileNotFoundError:
        return None
    index = _open(target, stat.st_mtime_ns, stat.st_size)
    if (index.table.schema.metadata or {}).get(SOURCE_KEY) != _source_tag(path):
        return None
    return index


@functools.lru_cache(maxsize=32)
def _open(target: Path, mtime_ns: int, size: int) -> SearchIndex:
    table = pa.ipc.open_file(pa.memory_map(str(target))).read_all()
    batches = table.to_batches()
    sizes = [batch.num_rows for batch in batches]
    return SearchIndex(table, batches, np.cumsum([0, *sizes[:-1]], dtype=np.int64))
