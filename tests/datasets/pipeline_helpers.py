"""Running a pipeline spec over in-memory rows, for the pipeline tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from datasets.pipelines import PipelineResult, Row, parse_steps, run_pipeline


def rows_of(data: list[dict[str, Any]], split: str = "train") -> list[Row]:
    return [Row(line, split, item) for line, item in enumerate(data, 1)]


def run(
    spec: list[dict[str, Any]], rows: list[Row], out_dir: Path
) -> tuple[PipelineResult, dict[str, list[Any]]]:
    """The result, and each output file's objects by split."""

    def source() -> Iterator[Row]:
        return iter(rows)

    result = run_pipeline(parse_steps(spec), source, out_dir)
    written = {
        split: [orjson.loads(line) for line in path.read_bytes().splitlines()]
        for split, path in result.files.items()
    }
    return result, written
