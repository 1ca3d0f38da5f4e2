"""`validate_file`: one streaming pass over a dataset file that detects its container
and format, reports every problem, and writes the viewer's Parquet copy on the way."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from datasets.formats.forbidden import DEFAULT_FORBIDDEN, ForbiddenTokens
from datasets.formats.layouts import CHECKS, FORMATS_DETECTED, Finding, layout_of, sequence_text
from datasets.formats.readers import (
    UTF8_BOM,
    UTF16_BOMS,
    binary_reason,
    blocks,
    container_of,
    csv_rows,
    parquet_rows,
    parquet_rows_total,
    read_head,
    utf8_error,
)
from datasets.formats.report import ProblemLog, ValidationCancelled, ValidationReport
from datasets.formats.tokens import TokenCounter
from datasets.formats.viewer_copy import ParquetCopy

Progress = Callable[[int, int], None]
PROGRESS_INTERVAL = 0.1
TOKEN_BATCH = 256
ROWS_PER_TICK = 2048
_FILE_LEVEL = frozenset({"binary_file", "invalid_parquet", "invalid_utf8"})


def validate_file(
    path: Path,
    filename: str,
    *,
    expected: Collection[str] | None = None,
    tokens: TokenCounter | None = None,
    parquet_out: Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_line_bytes: int = 16 * 2**20,
) -> ValidationReport:
    """Validates the dataset file at ``path`` (``filename``, the user's name for it,
    chooses the container by suffix) in constant memory.

    Bad content of any kind (binary, truncated, mis-encoded, empty, huge lines) becomes
    problems in the report, never an exception. Raises `ValidationCancelled` when
    ``should_stop`` answers true (checked every few MB) and `OSError` when the file
    cannot be read; either way no partial ``parquet_out`` is left behind.
    """
    head = read_head(path)
    report = ValidationReport(container=container_of(filename, head), format=None)
    report.bytes = path.stat().st_size
    run = _Run(report, expected, tokens, parquet_out, max_line_bytes)
    run.progress, run.should_stop = progress, should_stop
    try:
        run.read(path, filename, head)
        run.finish()
    except BaseException:
        run.discard()
        raise
    return report


class _Run:
    """The state of one validation pass."""

    def __init__(
        self,
        report: ValidationReport,
        expected: Collection[str] | None,
        tokens: TokenCounter | None,
        parquet_out: Path | None,
        max_line: int,
    ) -> None:
        self.report, self.log = report, ProblemLog(report)
        self.expected = frozenset(expected) if expected is not None else None
        self.tokens = tokens
        self.limit = tokens.context_length if tokens is not None else None
        specials = tokens.special_tokens if tokens is not None else frozenset()
        self.forbidden = ForbiddenTokens((*DEFAULT_FORBIDDEN, *specials))
        self.copy = ParquetCopy(parquet_out) if parquet_out is not None else None
        self.max_line = max_line
        self.progress: Progress | None = None
        self.should_stop: Callable[[], bool] | None = None
        self.columns: dict[str, None] = {}
        self.pending: list[tuple[int, str, int, bool]] = []
        self.last_tick = 0.0

    def read(self, path: Path, filename: str, head: bytes) -> None:
        container = self.report.container
        if head.startswith(UTF16_BOMS):
            self.log.add(0, "", "invalid_utf8", "the file is UTF-16; save it as UTF-8")
        elif container == "parquet":
            self._read_parquet(path)
        elif reason := binary_reason(head):
            self.log.add(0, "", "binary_file", reason)
        else:
            with path.open("rb") as src:
                if head.startswith(UTF8_BOM):
                    self.log.add(1, "", "bom", "the file starts with a byte-order mark (BOM)")
                    src.seek(len(UTF8_BOM))
                if container == "jsonl":
                    self._read_jsonl(src)
                else:
                    self._read_csv(src, filename, head)

    def finish(self) -> None:
        self._flush_tokens()
        report, counts = self.report, self.report.problem_counts
        if report.rows == 0 and not counts.keys() & _FILE_LEVEL:
            self.log.add(0, "", "empty_file", "the file holds no rows")
        elif report.format is None and "unknown_format" in counts:
            known = ", ".join(FORMATS_DETECTED)
            self.log.add(0, "", "unknown_format", f"no row is laid out as any of: {known}")
        report.columns = self.copy.close() if self.copy is not None else list(self.columns)
        report.problems.sort(key=lambda problem: problem.line)
        if self.progress is not None:
            self.progress(report.bytes, report.bytes)

    def discard(self) -> None:
        if self.copy is not None:
            self.copy.discard()

    def _tick(self, done: int) -> None:
        if self.should_stop is not None and self.should_stop():
            raise ValidationCancelled("validation was cancelled")
        now = time.monotonic()
        if self.progress is not None and now - self.last_tick >= PROGRESS_INTERVAL:
            self.last_tick = now
            self.progress(done, self.report.bytes)

    def _too_long(self, line: int) -> None:
        self.report.rows += 1
        self.log.add(line, "", "line_too_long", f"the line is over {self.max_line} bytes")

    def _read_jsonl(self, src: BinaryIO) -> None:
        for first, block in blocks(src, self.max_line, self._too_long):
            self._tick(src.tell())
            self._jsonl_block(first, block)
            self._flush_tokens()

    def _jsonl_block(self, first: int, block: bytes) -> None:
        """The hot loop: parse each line once; look deeper only at lines that fail to
        parse or that hold a forbidden token as raw bytes."""
        hits = self.forbidden.lines_with(block)
        lines = block.split(b"\n")
        unterminated = -1 if block.endswith(b"\n") else len(lines) - 1
        loads, max_line, report = orjson.loads, self.max_line, self.report
        for index, raw in enumerate(lines):
            if not raw or raw.isspace():
                continue
            if len(raw) > max_line:
                self._too_long(first + index)
                continue
            report.rows += 1
            try:
                row = loads(raw)
            except orjson.JSONDecodeError as exc:
                self._bad_line(first + index, raw, exc, index == unterminated)
                continue
            self._row(first + index, row, len(raw), index in hits)

    def _bad_line(self, line: int, raw: bytes, exc: Exception, unterminated: bool) -> None:
        error = None if raw.isascii() else utf8_error(raw)
        if error:
            self.log.add(line, "", "invalid_utf8", error)
        elif unterminated:
            message = "the last line has no newline and is not complete JSON: cut short?"
            self.log.add(line, "", "truncated", message)
        else:
            self.log.add(line, "", "invalid_json", f"not valid JSON: {exc}")

    def _read_csv(self, src: BinaryIO, filename: str, head: bytes) -> None:
        for count, (line, row) in enumerate(
            csv_rows(src, filename, head, self.max_line, self.log.add)
        ):
            if count % ROWS_PER_TICK == 0:
                self._tick(src.tell())
                self._flush_tokens()
            self.report.rows += 1
            if row is not None:
                self._row(line, row, len(orjson.dumps(row)), True)

    def _read_parquet(self, path: Path) -> None:
        total = max(parquet_rows_total(path), 1)
        for line, row in parquet_rows(path, self.log.add):
            if line % ROWS_PER_TICK == 0:
                self._tick(self.report.bytes * line // total)
                self._flush_tokens()
            self.report.rows += 1
            self._row(line, row, len(orjson.dumps(row, default=str)), True)

    def _row(self, line: int, row: Any, size: int, flagged: bool) -> None:
        """Checks one parsed row; ``flagged``: it may hold a forbidden token."""
        if type(row) is not dict:
            kind = type(row).__name__ if row is not None else "null"
            self.log.add(line, "", "not_an_object", f"a row must be a JSON object, not {kind}")
            return
        findings = self._findings(row)
        if flagged and (hit := self.forbidden.find(row)):
            findings.append((hit[0], "forbidden_token", f"{hit[1]!r} is a special token"))
        for field, reason, message in findings:
            self.log.add(line, field, reason, message)
        if not findings:
            self.report.valid_rows += 1
        if self.limit is not None and size > self.limit // 2:
            # A token covers at least one byte of text, so a row of fewer bytes than half
            # the context (the other half allows for normalisers and templates) fits.
            self._queue_tokens(line, row, not findings)
        if not row.keys() <= self.columns.keys():
            self.columns.update(dict.fromkeys(row))
        if self.copy is not None:
            self.copy.add(line, row, size)

    def _findings(self, row: dict[str, Any]) -> list[Finding]:
        layout, fmt = layout_of(row), self.report.format
        if fmt is None:
            if layout is None and self.report.container == "jsonl":
                return [("", "unknown_format", "the row matches no known layout")]
            fmt = self._set_format(layout or "tabular")
        elif layout is not None and layout != fmt:
            message = f"the row is laid out as {layout}, the file as {fmt}"
            return [("", "inconsistent_format", message)]
        return CHECKS[fmt](row)

    def _set_format(self, fmt: str) -> str:
        self.report.format = fmt
        if self.expected is not None and fmt not in self.expected:
            wanted = ", ".join(sorted(self.expected)) or "nothing"
            self.log.add(0, "", "unexpected_format", f"the file is {fmt}; expected {wanted}")
        return fmt

    def _queue_tokens(self, line: int, row: dict[str, Any], valid: bool) -> None:
        text, overhead = sequence_text(self.report.format, row)
        self.pending.append((line, text, overhead, valid))
        if len(self.pending) >= TOKEN_BATCH:
            self._flush_tokens()

    def _flush_tokens(self) -> None:
        if not self.pending or self.tokens is None or self.limit is None:
            return
        counts = self.tokens.count_batch([text for _, text, _, _ in self.pending])
        for (line, _, overhead, valid), count in zip(self.pending, counts, strict=True):
            if count + overhead > self.limit:
                message = f"{count + overhead} tokens, over the context length {self.limit}"
                self.log.add(line, "", "too_many_tokens", message)
                self.report.valid_rows -= valid
        self.pending = []
