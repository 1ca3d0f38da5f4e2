"""Running a list of steps over a source version's rows into one JSONL file per split."""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from datasets.pipelines.base import (
    STEPS,
    PipelineCancelled,
    PipelineError,
    Row,
    Step,
    dump_json,
    load_json,
)
from portal.plugins import UnknownPlugin

MAX_STEPS = 32
#: Seconds between calls of ``progress`` and ``should_stop`` (they may query a database).
CHECK_INTERVAL = 0.5
_CHECK_EVERY_ROWS = 256
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class PipelineResult:
    """What a run produced. ``steps[i]`` is ``{name, params, counters}``;
    ``removed_lines["<i>.<name>"]`` holds the first source lines step ``i`` removed."""

    files: dict[str, Path]
    rows_in: int
    rows_out: dict[str, int]
    steps: list[dict[str, Any]]
    removed_lines: dict[str, list[int]]


def parse_steps(spec: Any) -> list[Step[Any]]:
    """Steps from the API's ``[{"step": name, **params}, ...]``.

    Raises :class:`PipelineError` whose ``param`` locates the problem
    (``steps[2].threshold``); an unknown step name comes with a "did you mean".
    """
    if not isinstance(spec, list) or not 1 <= len(spec) <= MAX_STEPS:
        raise PipelineError(f"steps must be a list of 1 to {MAX_STEPS} steps.", param="steps")
    return [_parse_one(index, item) for index, item in enumerate(spec)]


def _parse_one(index: int, item: Any) -> Step[Any]:
    where = f"steps[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("step"), str):
        raise PipelineError(f'{where} must be an object with a "step" name.', param=f"{where}.step")
    try:
        cls = STEPS.get(item["step"], param=f"{where}.step")
    except UnknownPlugin as exc:
        raise PipelineError(exc.message, param=exc.param) from exc
    try:
        step = cls.from_params({key: value for key, value in item.items() if key != "step"})
    except PipelineError as exc:
        raise PipelineError(f"{where}: {exc.message}", param=f"{where}.{exc.param}") from exc
    step.index = index
    return step


def run_pipeline(
    steps: list[Step[Any]],
    source: Callable[[], Iterator[Row]],
    out_dir: Path,
    *,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PipelineResult:
    """Streams ``source()`` through ``steps`` into ``out_dir/<split>.jsonl`` (UTF-8, one
    object per line; only splits that keep rows get a file).

    ``progress(rows_read)`` and ``should_stop()`` are called about every
    :data:`CHECK_INTERVAL` seconds and once at the end of the source. Rows reaching a
    step that needs counts (``split``) are first spooled to a temporary file in
    ``out_dir``. Raises :class:`PipelineCancelled` when ``should_stop()`` is true and
    :class:`PipelineError` for data a step cannot handle; either way the files written
    so far are removed. Step instances keep their counters: use fresh ones per run.
    """
    watch = _Watch(progress, should_stop)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = _Outputs(out_dir)
    try:
        with ExitStack() as stack:
            stream = watch.read(source())
            for index, step in enumerate(steps):
                step.index = index
                if step.needs_count:
                    spool = Path(
                        stack.enter_context(
                            tempfile.TemporaryDirectory(dir=out_dir, prefix=".spool-")
                        )
                    )
                    stream, counts = _spool(stream, spool / "rows.jsonl", watch)
                    step.prepare(counts)
                stream = step.apply(stream)
            for row in stream:
                outputs.write(row)
        outputs.close()
    except BaseException:
        outputs.discard()
        raise
    return _result(steps, outputs, watch.rows)


def _result(steps: list[Step[Any]], outputs: _Outputs, rows_in: int) -> PipelineResult:
    removed = {
        f"{i}.{step.name}": step.removed_lines for i, step in enumerate(steps) if step.removed_lines
    }
    return PipelineResult(
        files=dict(outputs.files),
        rows_in=rows_in,
        rows_out=dict(outputs.rows),
        steps=[step.describe() for step in steps],
        removed_lines=removed,
    )


class _Watch:
    """Counts source rows; calls ``progress`` / ``should_stop`` at most every interval."""

    def __init__(
        self, progress: Callable[[int], None] | None, should_stop: Callable[[], bool] | None
    ) -> None:
        self.progress, self.should_stop = progress, should_stop
        self.rows = 0
        self._due = time.monotonic() + CHECK_INTERVAL

    def read(self, rows: Iterator[Row]) -> Iterator[Row]:
        for row in rows:
            self.rows += 1
            if self.rows % _CHECK_EVERY_ROWS == 0:
                self.check()
            yield row
        self.check(force=True)

    def check(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._due:
            return
        self._due = now + CHECK_INTERVAL
        if self.should_stop is not None and self.should_stop():
            raise PipelineCancelled("The pipeline was cancelled.")
        if self.progress is not None:
            self.progress(self.rows)


def _spool(rows: Iterator[Row], path: Path, watch: _Watch) -> tuple[Iterator[Row], Counter[str]]:
    """Writes ``rows`` to ``path`` and returns a reader over them and the count per split."""
    counts: Counter[str] = Counter()
    with path.open("wb") as handle:
        for row in rows:
            counts[row.split] += 1
            handle.write(dump_json([row.line, row.split, row.data]) + b"\n")
    return _unspool(path, watch), counts


def _unspool(path: Path, watch: _Watch) -> Iterator[Row]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if number % _CHECK_EVERY_ROWS == 0:
                watch.check()
            yield Row(*load_json(line))


class _Outputs:
    """One buffered JSONL file per split, opened on its first row."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.files: dict[str, Path] = {}
        self.rows: Counter[str] = Counter()
        self._handles: dict[str, IO[bytes]] = {}

    def write(self, row: Row) -> None:
        handle = self._handles.get(row.split) or self._open(row.split)
        handle.write(dump_json(row.data) + b"\n")
        self.rows[row.split] += 1

    def _open(self, split: str) -> IO[bytes]:
        if not _SPLIT_NAME.fullmatch(split):
            raise PipelineError(
                f"Split name {split!r} is not usable as a file name.", param="split"
            )
        self.files[split] = self.out_dir / f"{split}.jsonl"
        handle = self._handles[split] = self.files[split].open("wb", buffering=1 << 20)
        return handle

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()

    def discard(self) -> None:
        self.close()
        for path in self.files.values():
            path.unlink(missing_ok=True)
        self.files.clear()
