"""Per-column statistics of a split, in the shape of Hugging Face's ``/statistics``.

Kinds: ``int`` and ``float`` (min, max, mean, median, sample std, 10-bin histogram),
``bool`` (frequencies), ``string_label`` (at most MAX_LABELS distinct values: n_unique and
frequencies), ``string_text`` (the same numbers as ``int`` over lengths in characters),
``list`` (JSON arrays: over their lengths) and ``json`` (other JSON: null counts only).
Every kind has ``nan_count`` and ``nan_proportion`` (NULL, and NaN for floats). Floats
are rounded to 5 decimals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from datasets.viewer.layout import Layout, layout_of
from datasets.viewer.query import cursor
from datasets.viewer.where import quote

MAX_LABELS = 30
BINS = 10


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)


def _one(sql: str, params: list[Any]) -> tuple[Any, ...]:
    row = cursor().execute(sql, params).fetchone()
    assert row is not None
    return row


def _nan(count: int, total: int) -> dict[str, Any]:
    return {"nan_count": count, "nan_proportion": _round(count / total) if total else 0.0}


def _edges(low: float, high: float, integer: bool) -> tuple[float, int]:
    """Bin width and number of bins for values in [low, high]."""
    if integer:
        width = max(1, math.ceil((high - low + 1) / BINS))
        return width, math.ceil((high - low + 1) / width)
    if high == low:
        return 1.0, 1
    return (high - low) / BINS, BINS


def _histogram(path: Path, expr: str, low: float, high: float, integer: bool) -> dict:
    width, bins = _edges(low, high, integer)
    sql = (
        f"SELECT least(floor(({expr} - ?) / ?)::BIGINT, ?) AS bin, count(*) "  # noqa: S608
        f"FROM read_parquet(?) WHERE {expr} IS NOT NULL GROUP BY bin"
    )
    counts = dict(cursor().execute(sql, [low, width, bins - 1, str(path)]).fetchall())
    edges = [low + i * width for i in range(bins)] + [high]
    rounded = edges if integer else [_round(e) for e in edges]
    return {"hist": [counts.get(i, 0) for i in range(bins)], "bin_edges": rounded}


def _numeric(path: Path, expr: str, total: int, integer: bool) -> dict[str, Any]:
    sql = (
        f"SELECT count({expr}), min({expr}), max({expr}), avg({expr}), median({expr}), "  # noqa: S608
        f"stddev_samp({expr}) FROM read_parquet(?)"
    )
    present, low, high, mean, median, std = _one(sql, [str(path)])
    numbers: dict[str, Any] = {**_nan(total - present, total), "min": None, "max": None}
    numbers |= {"mean": None, "median": None, "std": None, "histogram": None}
    if present:
        numbers |= {
            "min": low if integer else _round(low),
            "max": high if integer else _round(high),
            "mean": _round(mean),
            "median": _round(median),
            "std": _round(std),
            "histogram": _histogram(path, expr, low, high, integer),
        }
    return numbers


def _frequencies(path: Path, column: str) -> dict[str, int]:
    sql = (
        f"SELECT {column}, count(*) AS n FROM read_parquet(?) WHERE {column} IS NOT NULL "  # noqa: S608
        f"GROUP BY {column} ORDER BY n DESC, {column}"
    )
    return {str(v): n for v, n in cursor().execute(sql, [str(path)]).fetchall()}


def _string(path: Path, column: str, total: int) -> tuple[str, dict[str, Any]]:
    sql = f"SELECT count(DISTINCT {column}), count({column}) FROM read_parquet(?)"  # noqa: S608
    unique, present = _one(sql, [str(path)])
    if unique > MAX_LABELS:
        return "string_text", _numeric(path, f"length({column})", total, integer=True)
    labels = {**_nan(total - present, total), "n_unique": unique}
    return "string_label", labels | {"frequencies": _frequencies(path, column)}


def _bool(path: Path, column: str, total: int) -> dict[str, Any]:
    frequencies = _frequencies(path, column)
    labels = {"True" if k == "True" else "False": v for k, v in frequencies.items()}
    return {**_nan(total - sum(labels.values()), total), "frequencies": labels}


def _json(path: Path, column: str, total: int) -> tuple[str, dict[str, Any]]:
    sql = (
        f"SELECT count({column}), count(*) FILTER (WHERE json_type({column}) = 'ARRAY') "  # noqa: S608
        "FROM read_parquet(?)"
    )
    present, arrays = _one(sql, [str(path)])
    if present and arrays == present:
        return "list", _numeric(path, f"json_array_length({column})", total, integer=True)
    return "json", _nan(total - present, total)


def _column(path: Path, name: str, kind: str, total: int) -> tuple[str, dict[str, Any]]:
    column = quote(name)
    if kind == "int64":
        return "int", _numeric(path, column, total, integer=True)
    if kind == "float64":
        return "float", _numeric(path, f"nullif({column}, 'NaN'::DOUBLE)", total, False)
    if kind == "bool":
        return "bool", _bool(path, column, total)
    if kind == "json":
        return _json(path, column, total)
    return _string(path, column, total)


def statistics(path: Path) -> dict[str, Any]:
    """``{"num_examples", "statistics": [{"column_name", "column_type",
    "column_statistics"}], "partial": false}`` for every column of the split file."""
    layout: Layout = layout_of(path)
    answer = []
    for name, kind in layout.columns.items():
        column_type, numbers = _column(path, name, kind, layout.num_rows)
        answer.append(
            {"column_name": name, "column_type": column_type, "column_statistics": numbers}
        )
    return {"num_examples": layout.num_rows, "statistics": answer, "partial": False}
