"""Split files in the ingest's Parquet layout, for the viewer's tests and benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}


def write_split(
    path: Path,
    records: Sequence[dict[str, Any]],
    kinds: dict[str, str],
    row_group_size: int = 10_000,
    first_line: int = 1,
) -> Path:
    """Write ``records`` as a split file: ``__row__`` = line numbers from ``first_line``,
    one column per field of ``kinds`` (string, int64, float64, bool or json)."""
    columns: dict[str, pa.Array] = {
        "__row__": pa.array(range(first_line, first_line + len(records)), pa.int64())
    }
    for name, kind in kinds.items():
        values = [r.get(name) for r in records]
        if kind == "json":
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        columns[name] = pa.array(values, TYPES.get(kind, pa.string()))
    json_columns = [name for name, kind in kinds.items() if kind == "json"]
    table = pa.table(columns).replace_schema_metadata(
        {"openmaas.json_columns": orjson.dumps(json_columns)}
    )
    pq.write_table(table, path, row_group_size=row_group_size, compression="zstd")
    return path
