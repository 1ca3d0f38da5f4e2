"""The viewer's queries over one split file: rows, search, filter, info, splits.

Each answer has Hugging Face's dataset-viewer shape: ``features``, ``rows`` (each
``{"row_idx", "line", "row", "truncated_cells"}``), ``num_rows_total``,
``num_rows_per_page`` and ``partial``. Filter first finds the positions of every matching
row (cached per file and query, so later pages and the total are free); search scans in
split order until its page is found and counts on within a time budget (see ``scan``).
Both then fetch the page's rows: from the search index when it exists, else the Parquet.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datasets.viewer.errors import ViewerError
from datasets.viewer.index import (
    POS_COLUMN,
    TEXT_COLUMN,
    SearchIndex,
    build_search_index,
    open_index,
)
from datasets.viewer.layout import ROW_COLUMN, Layout, layout_of, row_entry
from datasets.viewer.scan import Scan
from datasets.viewer.where import Predicate, parse_orderby, parse_where, quote, where_sql

MAX_PAGE = 100
MAX_QUERY_CHARS = 200
POSITION_CACHE_ENTRIES = 128

_database = duckdb.connect()
_positions_lock = threading.Lock()
_positions: OrderedDict[Hashable, Any] = OrderedDict()
T = TypeVar("T")


def cursor() -> duckdb.DuckDBPyConnection:
    """A fresh DuckDB connection on the one shared in-memory database (~0.1 ms; opening
    a database per call costs ~80 ms). Never reused: a connection left with an
    unfinished result (``fetchone``, an error mid-query) refuses further work, and
    names registered on it stay private to its call."""
    return _database.cursor()


def _cached(key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, kept for the last POSITION_CACHE_ENTRIES keys used."""
    with _positions_lock:
        if key in _positions:
            _positions.move_to_end(key)
            return _positions[key]
    found = compute()
    with _positions_lock:
        _positions[key] = found
        while len(_positions) > POSITION_CACHE_ENTRIES:
            _positions.popitem(last=False)
    return found


def _check_page(offset: int, length: int) -> None:
    if offset < 0:
        raise ViewerError("offset must be 0 or more", code="invalid_page", param="offset")
    if not 0 <= length <= MAX_PAGE:
        raise ViewerError(
            f"length must be between 0 and {MAX_PAGE}", code="invalid_page", param="length"
        )


def _page(layout: Layout, start: int, records: list[dict[str, Any]], total: int, length: int):
    return {
        "features": layout.features,
        "rows": [row_entry(layout, start + i, r) for i, r in enumerate(records)],
        "num_rows_total": total,
        "num_rows_per_page": length,
        "partial": False,
    }


def _select_list(layout: Layout) -> str:
    return ", ".join(quote(name) for name in [ROW_COLUMN, *layout.columns])


def _records_at(path: Path, layout: Layout, positions: Sequence[int]) -> list[dict[str, Any]]:
    """The rows at ``positions`` (in that order), from the index if any, else the Parquet."""
    if len(positions) == 0:
        return []
    index = open_index(path)
    if index is not None:
        return index.records(positions)
    # Bounds let DuckDB skip the row groups outside the page; IN alone does not.
    low, high = int(min(positions)), int(max(positions))
    sql = (
        f"SELECT file_row_number, {_select_list(layout)} FROM read_parquet(?, file_row_number"  # noqa: S608
        "=true) WHERE file_row_number BETWEEN ? AND ? AND file_row_number IN "
        "(SELECT unnest(?::BIGINT[]))"
    )
    params = [str(path), low, high, list(map(int, positions))]
    found = cursor().sql(sql, params=params).to_arrow_table()
    by_position = dict(zip(found["file_row_number"].to_pylist(), found.to_pylist(), strict=True))
    return [by_position[int(p)] for p in positions]


def rows(path: Path, offset: int, length: int) -> dict[str, Any]:
    """Rows ``offset`` to ``offset + length`` of the split (fewer at its end). Raises
    ViewerError when ``offset`` < 0 or ``length`` is not within 0..100."""
    _check_page(offset, length)
    layout = layout_of(path)
    stop = min(offset + length, layout.num_rows)
    records = _records_at(path, layout, range(offset, stop)) if stop > offset else []
    return _page(layout, offset, records, layout.num_rows, length)


def _answer(path: Path, layout: Layout, found: np.ndarray, offset: int, length: int):
    page = found[offset : offset + length]
    records = _records_at(path, layout, page.tolist())
    answer = _page(layout, 0, records, len(found), length)
    for entry, position in zip(answer["rows"], page.tolist(), strict=True):
        entry["row_idx"] = position
    return answer


def _scanned(path: Path, layout: Layout, scan: Scan, offset: int, length: int) -> dict[str, Any]:
    """The page of ``scan``'s matches, which it advances far enough to hold; ``partial``
    says whether ``num_rows_total`` only counts the part of the split scanned so far."""
    found, complete = scan.advance(cursor(), offset + length)
    answer = _answer(path, layout, found, offset, length)
    answer["partial"] = not complete
    return answer


def _lower(text: str) -> str:
    """``text`` lowercased exactly as the index's text was (Arrow's Unicode rules)."""
    return str(pc.utf8_lower(pa.scalar(text)).as_py())


def _over_index(index: SearchIndex, sql: str, params: list[Any]) -> np.ndarray:
    """Run ``sql`` (reading the table ``viewer_index``) over the memory-mapped index."""
    con = cursor()
    con.register("viewer_index", index.table)
    try:
        return con.execute(sql, params).fetchnumpy()["pos"]
    finally:
        con.unregister("viewer_index")


def _search_scan(path: Path, needle: str) -> Scan:
    index = open_index(path)
    if index is None:
        build_search_index(path)
        index = open_index(path)
        assert index is not None
    return Scan(index, f"contains({TEXT_COLUMN}, ?)", [needle], [needle], [TEXT_COLUMN])


def search(path: Path, query: str, offset: int, length: int) -> dict[str, Any]:
    """The rows whose text (string cells, and the string values inside JSON cells)
    contains ``query``, case-insensitively; ``row_idx`` is each row's position in the
    split. The page is always exact. ``num_rows_total`` is exact when ``partial`` is
    false; when true, the count stopped at its time budget and is the number of matches
    in the part of the split scanned so far (a lower bound, growing with each later call
    for the same query). Builds the search index on first use if ingest did not. Raises
    ViewerError on a blank query, one over 200 characters, or a bad page."""
    _check_page(offset, length)
    needle = query.strip()
    if not needle or len(needle) > MAX_QUERY_CHARS:
        raise ViewerError(
            f"query must have 1 to {MAX_QUERY_CHARS} characters",
            code="invalid_query",
            param="query",
        )
    needle = _lower(needle)
    layout = layout_of(path)
    key = ("search", str(path), path.stat().st_mtime_ns, needle)
    return _scanned(path, layout, _cached(key, lambda: _search_scan(path, needle)), offset, length)


def _filter_positions(path: Path, predicates: list[Predicate], order: str) -> np.ndarray:
    condition, params = where_sql(predicates)
    source = "read_parquet(?, file_row_number=true)"
    sql = f"SELECT file_row_number AS pos FROM {source} WHERE {condition}"  # noqa: S608
    sql += f" ORDER BY {order}file_row_number"
    return cursor().execute(sql, [str(path), *params]).fetchnumpy()["pos"]


def _filter_sql(predicates: list[Predicate]) -> tuple[list[str], str, list[Any]]:
    """The lowercased texts of the ``contains`` predicates, and the condition (with its
    parameters) over the index: a row whose column contains a text has it in its row
    text too, and checking that first spares lowercasing most cells."""
    condition, params = where_sql(predicates)
    needles = [_lower(p.value) for p in predicates if p.op == "contains"]
    prefilter = "".join(f"contains({TEXT_COLUMN}, ?) AND " for _ in needles)
    return needles, prefilter + condition, [*needles, *params]


def _ordered_positions(index: SearchIndex, predicates: list[Predicate], order: str) -> np.ndarray:
    _, condition, params = _filter_sql(predicates)
    sql = (
        f"SELECT {POS_COLUMN} AS pos FROM viewer_index WHERE {condition} "  # noqa: S608
        f"ORDER BY {order}{POS_COLUMN}"
    )
    return _over_index(index, sql, params)


def filter(
    path: Path, where: str, offset: int, length: int, orderby: str | None = None
) -> dict[str, Any]:
    """The rows matching ``where`` (see ``parse_where``; ``__row__``, the line number, may
    be used too), in split order or by ``orderby`` (``column [ASC|DESC]``, then split
    order). Raises ViewerError on a bad where, orderby or page."""
    _check_page(offset, length)
    layout = layout_of(path)
    columns = {ROW_COLUMN: "int64", **layout.columns}
    predicates = parse_where(where, columns)
    order = parse_orderby(orderby, columns) + ", " if orderby else ""
    key = ("filter", str(path), path.stat().st_mtime_ns, repr(predicates), order)
    index = open_index(path)
    if index is None:
        found = _cached(key, lambda: _filter_positions(path, predicates, order))
        return _answer(path, layout, found, offset, length)
    if order:
        found = _cached(key, lambda: _ordered_positions(index, predicates, order))
        return _answer(path, layout, found, offset, length)
    needles, condition, params = _filter_sql(predicates)
    scan = _cached(key, lambda: Scan(index, condition, params, needles))
    return _scanned(path, layout, scan, offset, length)


def info(path: Path) -> dict[str, Any]:
    """``{"features", "num_rows", "num_bytes"}`` of the split file (bytes of its Parquet)."""
    layout = layout_of(path)
    return {"features": layout.features, "num_rows": layout.num_rows, "num_bytes": layout.num_bytes}


def splits(files: Mapping[str, Path]) -> dict[str, Any]:
    """``{"splits": [{"split", "num_rows", "num_bytes"}]}`` for the split files by name."""
    return {
        "splits": [
            {"split": name, "num_rows": layout_of(p).num_rows, "num_bytes": layout_of(p).num_bytes}
            for name, p in files.items()
        ]
    }
