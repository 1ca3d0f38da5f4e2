"""Dataset files: container and format detection, streaming validation, the viewer's
Parquet copy and statistics. Pure Python (no Django): it runs inside Celery tasks."""

from __future__ import annotations

from datasets.formats.readers import iter_rows
from datasets.formats.report import (
    CONTAINERS,
    FORMATS,
    REASONS,
    Problem,
    ValidationCancelled,
    ValidationReport,
)
from datasets.formats.stats import compute_statistics
from datasets.formats.tokens import TokenCounter
from datasets.formats.validate import validate_file

__all__ = [
    "CONTAINERS",
    "FORMATS",
    "REASONS",
    "Problem",
    "TokenCounter",
    "ValidationCancelled",
    "ValidationReport",
    "compute_statistics",
    "iter_rows",
    "validate_file",
]
