"""The viewer's Parquet copy of a dataset file, written while it is validated.

One row per parsed row object: ``__row__`` (the source line) then one column per
top-level key. Strings, integers, floats and booleans keep their type; lists, objects
and columns whose values disagree in type hold compact JSON text and are named in the
file's ``openmaas.json_columns`` metadata. Column types are chosen from the first row
group; a later row group that does not fit (a new key, another type) starts a new part
file, and the parts are merged once at the end, so the rare case costs a rewrite and
the common case nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROW_COLUMN = "__row__"
JSON_COLUMNS_KEY = b"openmaas.json_columns"
GROUP_ROWS = 20_000
GROUP_BYTES = 16 * 2**20
_EXACT_FLOAT = 2**53
_SCALARS = frozenset({str, int, float, bool, type(None)})
_ARROW = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64(), "bool": pa.bool_()}


def _kind(values: list[Any]) -> str | None:
    """The narrowest column kind holding every value without loss; ``None`` when every
    value is null (such a column fits any kind)."""
    types = {type(value) for value in values}
    types.discard(type(None))
    if not types:
        return None
    if types == {str}:
        return "string"
    if types == {bool}:
        return "bool"
    if types == {int}:
        return "int64" if all(-(2**63) <= v < 2**63 for v in values if v is not None) else "json"
    if types == {float} or (
        types == {int, float} and all(abs(v) < _EXACT_FLOAT for v in values if type(v) is int)
    ):
        return "double"
    return "json"


def _merge_kinds(old: str, new: str | None) -> str:
    if new is None or old == new:
        return old
    if {old, new} == {"int64", "double"}:
        return "double"
    return "json"


def _as_json(value: Any) -> str | None:
    """JSON text of a cell; bytes hold JSON already (lists and objects become bytes when
    added, so that the buffer keeps no Python object trees)."""
    if value is None:
        return None
    if type(value) is bytes:
        return value.decode()
    return orjson.dumps(value).decode()


def _text_array(values: list[bytes | None]) -> pa.Array:
    """A string array straight from UTF-8 bytes (orjson's output is always UTF-8), built
    from one joined buffer: far cheaper than converting the objects one by one. A row
    group stays far below 2 GiB, so 32-bit offsets hold."""
    present = [value if value is not None else b"" for value in values]
    offsets = np.zeros(len(present) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, present), np.int32, len(present)), out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(present))]
    array = pa.Array.from_buffers(pa.string(), len(present), buffers)
    if values.count(None):
        array = pc.if_else(pa.array([value is not None for value in values]), array, None)
    return array


def _arrow_column(values: list[Any], kind: str) -> pa.Array:
    if kind == "json":
        if all(type(value) is bytes or value is None for value in values):
            return _text_array(values)
        return pa.array([_as_json(value) for value in values], pa.string())
    if kind == "double":
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array(values, _ARROW[kind])


def _schema(kinds: dict[str, str]) -> pa.Schema:
    fields = [pa.field(ROW_COLUMN, pa.int64())]
    fields += [pa.field(name, _ARROW.get(kind, pa.string())) for name, kind in kinds.items()]
    json_columns = [name for name, kind in kinds.items() if kind == "json"]
    return pa.schema(fields, metadata={JSON_COLUMNS_KEY: orjson.dumps(json_columns)})


def _writer(path: Path, kinds: dict[str, str]) -> pq.ParquetWriter:
    # Dictionary pages help repetitive scalar columns; JSON cells are mostly unique,
    # and trying to dictionary-encode them costs time and memory for nothing.
    scalars = [ROW_COLUMN, *(name for name, kind in kinds.items() if kind != "json")]
    return pq.ParquetWriter(path, _schema(kinds), compression="zstd", use_dictionary=scalars)


def _dump(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:  # integers beyond 64 bits, deep nesting
        return json.dumps(value, default=str, ensure_ascii=False).encode()


def _convert(array: pa.Array, old: str, new: str) -> pa.Array:
    if old == new:
        return array
    if new == "double":
        return array.cast(pa.float64())
    return pa.array([_as_json(value) for value in array.to_pylist()], pa.string())


class ParquetCopy:
    """Writes the viewer copy at ``path`` in row groups of up to `GROUP_ROWS` rows or
    `GROUP_BYTES` bytes; `add` rows, then `close` (or `discard` on failure)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kinds: dict[str, str] = {}
        self._parts: list[tuple[Path, dict[str, str]]] = []
        self._writer: pq.ParquetWriter | None = None
        self._lines: list[int] = []
        self._columns: dict[str, list[Any]] = {}
        self._bytes = 0

    def add(self, line: int, row: dict[str, Any], size: int) -> None:
        """Buffers one row (``size``: its bytes in the source, to bound the buffer)."""
        count = len(self._lines)
        self._lines.append(line)
        columns = self._columns
        for key, value in row.items():
            if type(value) not in _SCALARS:
                value = _dump(value)  # JSON bytes: the buffer keeps no object trees
            try:
                columns[key].append(value)
            except KeyError:
                self._new_column(key, count).append(value)
        if len(row) < len(columns):
            for column in columns.values():
                if len(column) == count:
                    column.append(None)
        self._bytes += size
        if count + 1 >= GROUP_ROWS or self._bytes >= GROUP_BYTES:
            self._flush()

    def _new_column(self, key: str, count: int) -> list[Any]:
        name = key if key != ROW_COLUMN else ROW_COLUMN + "_"  # the data's __row__ yields
        return self._columns.setdefault(name, [None] * count)

    def close(self) -> list[str]:
        """Finishes the file; returns its data columns (without ``__row__``)."""
        self._flush()
        if self._writer is None:
            self._start_part({})
        self._finish_parts()
        return list(self.kinds)

    def discard(self) -> None:
        """Removes whatever was written (after a failure or a cancel)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for part, _ in self._parts:
            part.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def _flush(self) -> None:
        if not self._lines:
            return
        batch_kinds = {name: _kind(values) for name, values in self._columns.items()}
        kinds = dict(self.kinds)
        for name, kind in batch_kinds.items():
            kinds[name] = _merge_kinds(kinds[name], kind) if name in kinds else kind or "string"
        if self._writer is None or kinds != self.kinds:
            self._start_part(kinds)
        arrays = [pa.array(self._lines, pa.int64())]
        arrays += [_arrow_column(self._columns[name], kind) for name, kind in kinds.items()]
        assert self._writer is not None
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self._writer.schema))
        self._lines = []
        self._columns = {name: [] for name in kinds}
        self._bytes = 0

    def _start_part(self, kinds: dict[str, str]) -> None:
        if self._writer is not None:
            self._writer.close()
        part = self.path.with_name(f"{self.path.name}.part{len(self._parts)}")
        self._writer = _writer(part, kinds)
        self._parts.append((part, kinds))
        self.kinds = kinds

    def _finish_parts(self) -> None:
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        if len(self._parts) == 1:
            os.replace(self._parts[0][0], self.path)
        else:
            self._merge_parts()
        self._parts = []

    def _merge_parts(self) -> None:
        """Rewrites every part with the final column kinds (the last part's: kinds only
        ever widen) into one file."""
        schema = _schema(self.kinds)
        with _writer(self.path, self.kinds) as writer:
            for part, kinds in self._parts:
                for batch in pq.ParquetFile(part).iter_batches(batch_size=GROUP_ROWS):
                    writer.write_batch(self._widen(batch, kinds, schema))
                part.unlink()

    def _widen(self, batch: pa.RecordBatch, kinds: dict[str, str], schema: pa.Schema) -> Any:
        arrays = [batch.column(ROW_COLUMN)]
        for name, kind in self.kinds.items():
            if name in kinds:
                arrays.append(_convert(batch.column(name), kinds[name], kind))
            else:
                arrays.append(pa.nulls(batch.num_rows, schema.field(name).type))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
