"""The query layer of the dataset viewer: rows, search, filter, statistics, info and
splits over the Parquet copy of each dataset version (DuckDB and pyarrow, no Django).

Answers follow Hugging Face's dataset-viewer shapes; a bad query raises ViewerError,
which the API turns into a 400.
"""

from __future__ import annotations

from datasets.viewer.cache import ParquetCache
from datasets.viewer.errors import ViewerError
from datasets.viewer.index import build_search_index, index_path
from datasets.viewer.query import filter, info, rows, search, splits
from datasets.viewer.stats import statistics
from datasets.viewer.where import Predicate, parse_where

__all__ = [
    "ParquetCache",
    "Predicate",
    "ViewerError",
    "build_search_index",
    "filter",
    "index_path",
    "info",
    "parse_where",
    "rows",
    "search",
    "splits",
    "statistics",
]
