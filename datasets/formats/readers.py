"""Reading dataset files as a stream: which container a file is, its JSON Lines in
large blocks of whole lines, its CSV records and its Parquet rows, each with the line
number a user sees in an editor (Parquet: row index + 1)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 8 * 2**20
MAX_LINE = 16 * 2**20
HEAD = 64 * 2**10
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}
MAGIC = (
    (b"\x1f\x8b", "a gzip archive"),
    (b"PK\x03\x04", "a zip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ", "an xz archive"),
    (b"(\xb5/\xfd", "a zstd archive"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PAR1", "a Parquet file (name it .parquet)"),
)
# (line, field, reason, message): how readers hand problems to their caller.
OnProblem = Callable[[int, str, str, str], None]


def read_head(path: Path) -> bytes:
    with path.open("rb") as src:
        return src.read(HEAD)


def container_of(filename: str, head: bytes) -> str:
    """The container by the file name's suffix, else sniffed from the first bytes."""
    suffix = PurePosixPath(filename.lower()).suffix
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.removeprefix(UTF8_BOM).lstrip()[:1] in (b"{", b"["):
        return "jsonl"
    return "csv"


def binary_reason(head: bytes) -> str | None:
    """Why the file is not text (``None`` when it may be): an archive, an image, NULs."""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return f"the file is {name}, not text; upload it uncompressed"
    if b"\x00" in head:
        return "the file holds NUL bytes: it is binary, not UTF-8 text"
    return None


def blocks(
    src: BinaryIO, max_line: int, too_long: Callable[[int], None]
) -> Iterator[tuple[int, bytes]]:
    """``(number of its first line, block)``: blocks of whole lines, each ending in a
    newline but perhaps the file's last. A line over ``max_line`` bytes that does not fit
    in a block is reported to ``too_long`` and skipped, so memory stays bounded."""
    line, carry, skipping = 1, b"", False
    while chunk := src.read(CHUNK):
        if skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                continue
            chunk, skipping, line = chunk[newline + 1 :], False, line + 1
        data = carry + chunk if carry else chunk
        end = data.rfind(b"\n") + 1
        if end:
            yield line, data if end == len(data) else data[:end]
            line += data.count(b"\n", 0, end)
        carry = data[end:]
        if len(carry) > max_line:
            too_long(line)
            carry, skipping = b"", True
    if carry and not skipping:
        yield line, carry


def utf8_error(raw: bytes) -> str | None:
    """Why ``raw`` is not UTF-8, or ``None`` when it is."""
    try:
        raw.decode()
    except UnicodeDecodeError as exc:
        return (
            f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8 "
            "(is the file Latin-1 or GBK? save it as UTF-8)"
        )
    return None


def _csv_lines(src: BinaryIO, max_line: int, on_problem: OnProblem) -> Iterator[str]:
    def too_long(line: int) -> None:
        on_problem(line, "", "line_too_long", f"the line is over {max_line} bytes")

    for first, block in blocks(src, max_line, too_long):
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()
        for number, raw in enumerate(lines, first):
            error = utf8_error(raw) if not raw.isascii() else None
            if error:
                on_problem(number, "", "invalid_utf8", error)
            yield raw.decode(errors="replace") + "\n"


def csv_dialect(filename: str, head: bytes) -> type[csv.Dialect] | csv.Dialect:
    if filename.lower().endswith(".tsv"):
        return csv.excel_tab
    sample = head.removeprefix(UTF8_BOM).decode(errors="replace")
    try:
        return csv.Sniffer().sniff("\n".join(sample.split("\n")[:20]), ",\t;|")
    except csv.Error:
        return csv.excel


def _column_names(header: list[str], on_problem: OnProblem) -> list[str]:
    names: list[str] = []
    for index, raw in enumerate(header):
        name = raw.strip() or f"column_{index + 1}"
        if name in names:
            on_problem(1, name, "invalid_csv", f"the column name {name!r} repeats")
            name = f"{name}_{index + 1}"
        names.append(name)
    return names


def csv_rows(
    src: BinaryIO, filename: str, head: bytes, max_line: int, on_problem: OnProblem
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(line, row)`` per CSV record after the header; ``row`` is ``None`` for a record
    that was reported to ``on_problem`` and cannot be read as a row."""
    csv.field_size_limit(max(csv.field_size_limit(), max_line))
    reader = csv.reader(_csv_lines(src, max_line, on_problem), csv_dialect(filename, head))
    header = next(reader, None)
    if header is None:
        return
    names = _column_names(header, on_problem)
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            on_problem(line, "", "invalid_csv", f"unreadable CSV: {exc}")
            yield line, None
            continue
        if not record:
            continue
        if len(record) != len(names):
            message = f"the row has {len(record)} fields, the header {len(names)}"
            on_problem(line, "", "invalid_csv", message)
            yield line, None
        else:
            yield line, dict(zip(names, record, strict=True))


def parquet_rows(path: Path, on_problem: OnProblem) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index + 1, row)`` per Parquet row; an unreadable file or row group is reported
    to ``on_problem`` as ``invalid_parquet`` and ends the rows."""
    index = 0
    try:
        source = pq.ParquetFile(path)
        for batch in source.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                index += 1
                yield index, row
    except (pa.ArrowException, OSError, ValueError) as exc:
        on_problem(index + 1 if index else 0, "", "invalid_parquet", f"unreadable Parquet: {exc}")


def parquet_rows_total(path: Path) -> int:
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError, ValueError):
        return 0


def _ignore(line: int, field: str, reason: str, message: str) -> None:
    """Problems do not matter to `iter_rows`: validation reported them already."""


def _jsonl_objects(src: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    for first, block in blocks(src, MAX_LINE, lambda line: None):
        for number, raw in enumerate(block.split(b"\n"), first):
            try:
                row = orjson.loads(raw) if len(raw) <= MAX_LINE else None
            except orjson.JSONDecodeError:
                continue
            if type(row) is dict:
                yield number, row


def iter_rows(path: Path, filename: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` for every row of the file that parses as an object, in order;
    lines that do not are skipped silently (validation reports them)."""
    head = read_head(path)
    container = container_of(filename, head)
    if container == "parquet":
        yield from parquet_rows(path, _ignore)
        return
    with path.open("rb") as src:
        if head.startswith(UTF8_BOM):
            src.seek(len(UTF8_BOM))
        if container == "jsonl":
            yield from _jsonl_objects(src)
        else:
            for line, row in csv_rows(src, filename, head, MAX_LINE, _ignore):
                if row is not None:
                    yield line, row
