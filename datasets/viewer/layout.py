"""The Parquet layout the viewer reads: one file per split, ``__row__`` (int64, the source
line number), one column per top-level field (string / int64 / double / bool) and JSON
columns (compact JSON text) named in the key-value metadata ``openmaas.json_columns``."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from datasets.viewer.errors import ViewerError

ROW_COLUMN = "__row__"
JSON_COLUMNS_KEY = b"openmaas.json_columns"
# Cells longer than this (UTF-8 bytes) are cut in answers and named in truncated_cells.
MAX_CELL_BYTES = 10_000


@dataclass(frozen=True)
class Layout:
    """The columns of one split file: ``columns`` maps each field (``__row__`` excluded)
    to its kind, one of ``string``, ``int64``, ``float64``, ``bool``, ``json``."""

    columns: Mapping[str, str]
    num_rows: int
    num_bytes: int

    @property
    def features(self) -> list[dict[str, Any]]:
        """HF-shaped features: ``[{"feature_idx", "name", "type": {"dtype", "_type"}}]``."""
        return [
            {"feature_idx": idx, "name": name, "type": {"dtype": kind, "_type": "Value"}}
            for idx, (name, kind) in enumerate(self.columns.items())
        ]

    @property
    def text_columns(self) -> list[str]:
        return [name for name, kind in self.columns.items() if kind in ("string", "json")]


def _kind(field: pa.Field, json_columns: set[str]) -> str:
    kind = field.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "json" if field.name in json_columns else "string"
    if pa.types.is_integer(kind):
        return "int64"
    if pa.types.is_floating(kind):
        return "float64"
    if pa.types.is_boolean(kind):
        return "bool"
    raise ViewerError(f"column {field.name!r} has unsupported type {kind}", code="bad_layout")


def layout_of(path: Path) -> Layout:
    """The layout of the split file at ``path`` (cached while the file is unchanged)."""
    stat = path.stat()
    return _layout(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _layout(path: Path, mtime_ns: int, size: int) -> Layout:
    meta = pq.read_metadata(path)
    schema = meta.schema.to_arrow_schema()
    raw = (schema.metadata or {}).get(JSON_COLUMNS_KEY, b"[]")
    json_columns = set(orjson.loads(raw))
    columns = {f.name: _kind(f, json_columns) for f in schema if f.name != ROW_COLUMN}
    return Layout(columns=columns, num_rows=meta.num_rows, num_bytes=size)


def _cut(text: str) -> str | None:
    """``text`` cut to MAX_CELL_BYTES at a character boundary, or None if it fits."""
    if len(text) * 4 <= MAX_CELL_BYTES:
        return None
    data = text.encode()
    if len(data) <= MAX_CELL_BYTES:
        return None
    return data[:MAX_CELL_BYTES].decode(errors="ignore")


def row_entry(layout: Layout, row_idx: int, record: Mapping[str, Any]) -> dict[str, Any]:
    """One answer row: ``{"row_idx", "line", "row", "truncated_cells"}`` with JSON cells
    decoded and long cells cut (a cut JSON cell stays the cut JSON text)."""
    row: dict[str, Any] = {}
    truncated: list[str] = []
    for name, kind in layout.columns.items():
        value = record[name]
        cut = _cut(value) if isinstance(value, str) else None
        if cut is not None:
            row[name] = cut
            truncated.append(name)
        elif kind == "json" and value is not None:
            row[name] = orjson.loads(value)
        else:
            row[name] = value
    return {
        "row_idx": row_idx,
        "line": record[ROW_COLUMN],
        "row": row,
        "truncated_cells": truncated,
    }
