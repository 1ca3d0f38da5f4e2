"""The search index of a split: a side file next to its Parquet, built once (at ingest or
on the first search) and memory-mapped by every query.

It is an uncompressed Arrow IPC file holding every column of the split plus ``__pos__``
(the 0-based position) and ``__text__`` (the row's text lowercased: string cells and the
string leaves of JSON cells, joined by newlines). A case-insensitive substring search is
then one vectorised ``contains`` over in-memory text (no per-query lowercasing, no
decompression, no JSON syntax to match), and the rows of a result page, scattered over the
split, are zero-copy slices instead of whole Parquet row groups decoded for a few rows.

Its record batches are the blocks of ``grams``: ``<file>.search.grams`` (a NumPy file,
memory-mapped too) holds one gram bitset per batch, so a search scans only the batches
that may contain its text. It is renamed into place before the Arrow file, whose metadata
names its size, so a current Arrow file always has its current bitsets.
"""

from __future__ import annotations

import fcntl
import functools
import os
import uuid
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
from datasets.viewer.grams import BLOCK_ROWS, block_bitset
from datasets.viewer.layout import Layout, layout_of

POS_COLUMN = "__pos__"
TEXT_COLUMN = "__text__"
SOURCE_KEY = b"openmaas.source"
BUILD_KEY = b"openmaas.build"


def index_path(path: Path) -> Path:
    """Where the search index of the split file ``path`` lives."""
    return path.with_name(path.name + ".search.arrow")


def grams_path(path: Path) -> Path:
    """Where the gram bitsets of the split file ``path``'s search index live."""
    return path.with_name(path.name + ".search.grams")


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


def _write_grams(bitsets: list[np.ndarray], tmp: Path, metadata: dict[bytes, bytes]) -> None:
    """Save ``bitsets`` (one per block) at ``tmp`` as a one-column Arrow file."""
    width = bitsets[0].size
    column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(bitsets), [None, pa.py_buffer(np.stack(bitsets))]
    )
    table = pa.table({"bitset": column}).replace_schema_metadata(metadata)
    with pa.ipc.new_file(str(tmp), table.schema) as writer:
        writer.write_table(table)


def _write_blocks(path: Path, tmp: Path, metadata: dict[bytes, bytes]) -> list[np.ndarray]:
    """Write the index's blocks to ``tmp``; returns their gram bitsets."""
    layout = layout_of(path)
    first, bitsets, writer = 0, [], None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BLOCK_ROWS):
        full = _with_text(batch, layout, first)
        if writer is None:
            writer = pa.ipc.new_file(str(tmp), full.schema.with_metadata(metadata))
        writer.write_batch(full)
        bitsets.append(block_bitset(full.column(TEXT_COLUMN)))
        first += batch.num_rows
    if writer is None:
        raise ValueError(f"{path} has no rows to index")
    writer.close()
    return bitsets


def _write(path: Path, target: Path) -> None:
    # Both files carry one build id; the bitsets are renamed into place first, so a
    # current Arrow file always finds its own bitsets next to it.
    metadata = {SOURCE_KEY: _source_tag(path), BUILD_KEY: uuid.uuid4().hex.encode()}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    grams_tmp = tmp.with_name(tmp.name + ".grams")
    try:
        _write_grams(_write_blocks(path, tmp, metadata), grams_tmp, metadata)
        os.replace(grams_tmp, grams_path(path))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        grams_tmp.unlink(missing_ok=True)


def build_search_index(path: Path) -> Path:
    """Build (or keep, if current) the search index of the split file ``path`` and return
    its path. Safe to call from several processes at once: one builds, the others wait and
    reuse it. Took 16 s (Arrow file) + ~30 s (gram bitsets) per million chat rows on a
    busy 2-core box; call it at ingest."""
    target = index_path(path)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if open_index(path) is None:
            _write(path, target)
    return target


@dataclass(frozen=True)
class SearchIndex:
    """A memory-mapped index: ``table`` (its batches = blocks), the first position of
    each block, and each block's gram bitset (one row of ``bitsets``)."""

    table: pa.Table
    batches: list[pa.RecordBatch]
    starts: np.ndarray
    bitsets: np.ndarray

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

    def blocks(self, blocks: Sequence[int], columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of ``blocks``, in that order, with ``columns`` or all (zero-copy)."""
        parts = [self.batches[b] for b in blocks]
        if columns is not None:
            parts = [part.select(list(columns)) for part in parts]
        return pa.Table.from_batches(parts)


def open_index(path: Path) -> SearchIndex | None:
    """The memory-mapped index of ``path``, or None when it is missing or stale."""
    try:
        index = _open(*_version(index_path(path)), *_version(grams_path(path)))
    except FileNotFoundError:
        return None
    if index is None or index.table.schema.metadata.get(SOURCE_KEY) != _source_tag(path):
        return None
    return index


def _version(path: Path) -> tuple[Path, int, int]:
    stat = path.stat()
    return path, stat.st_mtime_ns, stat.st_size


def _read(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


@functools.lru_cache(maxsize=32)
def _open(
    target: Path, mtime_ns: int, size: int, grams: Path, grams_mtime_ns: int, grams_size: int
) -> SearchIndex | None:
    """The index in ``target`` with the bitsets in ``grams``; None if they are not one
    build's (a crash between the two renames)."""
    table, bitsets = _read(target), _read(grams)
    if (table.schema.metadata or {}).get(BUILD_KEY) != (bitsets.schema.metadata or {}).get(
        BUILD_KEY
    ):
        return None
    column = bitsets.column("bitset").combine_chunks()
    width = column.type.byte_width
    matrix = np.frombuffer(column.buffers()[1], np.uint8).reshape(len(column), width)
    batches = table.to_batches()
    sizes = [batch.num_rows for batch in batches]
    return SearchIndex(table, batches, np.cumsum([0, *sizes[:-1]], dtype=np.int64), matrix)
