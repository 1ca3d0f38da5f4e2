"""Evaluation documents from files: the layouts public benchmarks ship in, read into
plain dicts.

``load_docs(path, layout)`` reads a whole file (UTF-8, with or without a byte-order mark;
files over ``max_bytes`` are refused before they are read) and returns its rows. The
multiple-choice layouts normalise every row to ``{"question": str, "choices": [str, …],
"answer": int, …extra}`` with ``answer`` the gold choice's index:

- ``mc_jsonl``: JSON Lines ``{question, choices, answer}``; ``answer`` an index or a letter.
- ``lm_eval_jsonl``: lm-evaluation-harness style rows ``{query|question|input, choices,
  gold|label|answer}``; ``choices`` may be a list or ARC's ``{"text": [...], "label": [...]}``.
- ``ceval_csv``: C-Eval's ``id,question,A,B,C,D,answer[,explanation]``.
- ``cmmlu_csv``: CMMLU's ``,Question,A,B,C,D,Answer`` (the first column an unnamed index).
- ``mmlu_csv``: MMLU's header-less ``question,A,B,C,D,answer``.

``jsonl`` and ``csv`` hand rows over as they are (CSV values are strings). A file of the
wrong shape raises :class:`DataError` naming the line (as an editor counts them) and the
field. The module imports nothing from Django beyond the platform's error type.
"""

from __future__ import annotations

import csv
import io
import json
import string
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from portal.errors import PlatformError

MAX_BYTES = 64 * 2**20
UTF8_BOM = b"\xef\xbb\xbf"
MC_LAYOUTS = ("mc_jsonl", "lm_eval_jsonl", "ceval_csv", "cmmlu_csv", "mmlu_csv")
LAYOUTS = (*MC_LAYOUTS, "jsonl", "csv")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonlines")
LETTERS = string.ascii_uppercase
QUERY_KEYS = ("query", "question", "input")
GOLD_KEYS = ("gold", "label", "answer")
CEVAL_HEADER = ["id", "question", "a", "b", "c", "d", "answer"]
CMMLU_HEADER = ["", "question", "a", "b", "c", "d", "answer"]


class DataError(PlatformError):
    """A dataset file that cannot be read as evaluation documents."""

    status = 400
    code = "invalid_dataset"

    def __init__(self, message: str, *, line: int | None = None, field: str = "") -> None:
        where = f"line {line}: " if line else ""
        where += f"{field}: " if field else ""
        super().__init__(where + message, param=field or None)
        self.line = line
        self.field = field


# --- the entry points -----------------------------------------------------------------


def load_docs(
    path: Path, layout: str | None = None, *, max_bytes: int = MAX_BYTES
) -> list[dict[str, Any]]:
    """Every row of ``path`` read in ``layout`` (detected when ``None``).

    Raises :class:`DataError` for a missing file, one over ``max_bytes``, text that is
    not UTF-8, an unknown layout or a row of the wrong shape."""
    return parse_docs(read_bytes(path, max_bytes), filename=path.name, layout=layout)


def detect_layout(path: Path, *, max_bytes: int = MAX_BYTES) -> str:
    """The layout of ``path``: by its suffix (JSON Lines or CSV), then by the first row's
    fields or the CSV header."""
    return detect_text_layout(decode(read_bytes(path, max_bytes)), path.name)


def parse_docs(data: bytes, *, filename: str, layout: str | None = None) -> list[dict[str, Any]]:
    """:func:`load_docs` for bytes already in memory (``filename`` picks JSON or CSV)."""
    text = decode(data)
    layout = layout or detect_text_layout(text, filename)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    docs = list(_READERS[layout](text))
    if not docs:
        raise DataError("the file holds no rows")
    return docs


def read_bytes(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    if size > max_bytes:
        raise DataError(
            f"{path.name} is {size:,} bytes; evaluation files may be {max_bytes:,} at most"
        )
    return path.read_bytes()


def decode(data: bytes) -> str:
    """UTF-8 text without a leading byte-order mark; a bad byte names its line."""
    data = data.removeprefix(UTF8_BOM)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"byte 0x{data[exc.start]:02x} at column {column} is not UTF-8 "
            "(is the file GBK or Latin-1? save it as UTF-8)",
            line=line,
        ) from exc


# --- detection ------------------------------------------------------------------------


def detect_text_layout(text: str, filename: str) -> str:
    suffix = PurePosixPath(filename.lower()).suffix
    if suffix in JSON_SUFFIXES or (suffix != ".csv" and text.lstrip()[:1] == "{"):
        return _detect_json(text)
    return _detect_csv(text)


def _detect_json(text: str) -> str:
    first = next(_json_rows(text), None)
    if first is None:
        return "jsonl"
    keys = set(first[1])
    if {"question", "choices", "answer"} <= keys:
        return "mc_jsonl"
    if "choices" in keys and keys & set(QUERY_KEYS) and keys & set(GOLD_KEYS):
        return "lm_eval_jsonl"
    return "jsonl"


def _detect_csv(text: str) -> str:
    first = next(csv.reader(io.StringIO(text, newline="")), None)
    if not first:
        return "csv"
    names = [name.strip().lower() for name in first]
    if names[:7] == CEVAL_HEADER:
        return "ceval_csv"
    if names[:7] == CMMLU_HEADER or names[:6] == CMMLU_HEADER[1:]:
        return "cmmlu_csv"
    if len(first) == 6 and first[5].strip().upper() in LETTERS[:4]:
        return "mmlu_csv"
    return "csv"


# --- JSON Lines -------------------------------------------------------------------------


def _json_rows(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` per non-blank line, each a JSON object."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON: {exc.msg} at column {exc.colno}", line=number) from exc
        if not isinstance(row, dict):
            raise DataError(f"a row must be a JSON object, not {type(row).__name__}", line=number)
        yield number, row


def _read_jsonl(text: str) -> Iterator[dict[str, Any]]:
    for _, row in _json_rows(text):
        yield row


def _read_mc_jsonl(text: str) -> Iterator[dict[str, Any]]:
    for number, row in _json_rows(text):
        question = _required_text(row, "question", number)
        choices = _choices(_required(row, "choices", number), number)
        answer = _answer_index(_required(row, "answer", number), choices, number, "answer")
        yield _mc_doc(row, question, choices, answer, ("question", "choices", "answer"))


def _read_lm_eval_jsonl(text: str) -> Iterator[dict[str, Any]]:
    for number, row in _json_rows(text):
        query_key = _first_key(row, QUERY_KEYS, number)
        gold_key = _first_key(row, GOLD_KEYS, number)
        raw_choices = _required(row, "choices", number)
        labels: list[str] = []
        if isinstance(raw_choices, dict):  # ARC: {"text": [...], "label": ["A", ...]}
            labels = [str(label) for label in raw_choices.get("label") or []]
            raw_choices = raw_choices.get("text")
        choices = _choices(raw_choices, number)
        gold = row[gold_key]
        if labels and isinstance(gold, str) and gold in labels:
            gold = labels.index(gold)
        question = _text(row[query_key], query_key, number)
        answer = _answer_index(gold, choices, number, gold_key)
        yield _mc_doc(row, question, choices, answer, (query_key, gold_key, "choices"))


def _first_key(row: dict[str, Any], keys: tuple[str, ...], line: int) -> str:
    for key in keys:
        if key in row:
            return key
    raise DataError("missing (the row has none of these fields)", line=line, field="|".join(keys))


# --- CSV ------------------------------------------------------------------------------


def _csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """``(line where the record starts, fields)`` per non-empty record."""
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"unreadable CSV: {exc}", line=line) from exc
        if any(field.strip() for field in record):
            yield line, record
        line = reader.line_num + 1


def _read_csv(text: str) -> Iterator[dict[str, Any]]:
    records = _csv_records(text)
    header = next(records, None)
    if header is None:
        return
    names = [name.strip() or f"column_{i + 1}" for i, name in enumerate(header[1])]
    for number, record in records:
        if len(record) != len(names):
            raise DataError(
                f"the row has {len(record)} fields, the header {len(names)}", line=number
            )
        yield dict(zip(names, record, strict=True))


def _read_mc_csv(text: str, *, header: bool, first: int) -> Iterator[dict[str, Any]]:
    """Rows of ``[extra…, question, A, B, C, D, answer, extra…]``: the question at
    ``first``; columns after the answer are kept under their header names."""
    records = _csv_records(text)
    names: list[str] = []
    if header:
        head = next(records, None)
        names = [name.strip() for name in head[1]] if head else []
    width = first + 6
    fields = ["question", "A", "B", "C", "D", "answer"]
    for number, record in records:
        if len(record) < width:
            missing = fields[len(record) - first] if len(record) > first else "question"
            raise DataError(
                f"missing (the row has {len(record)} fields)", line=number, field=missing
            )
        question = record[first].strip()
        if not question:
            raise DataError("empty", line=number, field="question")
        choices = [choice.strip() for choice in record[first + 1 : first + 5]]
        for letter, choice in zip(LETTERS, choices, strict=False):
            if not choice:
                raise DataError("empty choice", line=number, field=letter)
        answer = _answer_index(record[first + 5].strip(), choices, number, "answer")
        doc: dict[str, Any] = {"question": question, "choices": choices, "answer": answer}
        if first and record[0].strip():
            doc["id"] = record[0].strip()
        for index in range(width, len(record)):
            name = names[index] if index < len(names) and names[index] else f"column_{index + 1}"
            doc[name] = record[index]
        yield doc


def _read_ceval_csv(text: str) -> Iterator[dict[str, Any]]:
    return _read_mc_csv(text, header=True, first=1)


def _read_cmmlu_csv(text: str) -> Iterator[dict[str, Any]]:
    first = next(_csv_records(text), (0, []))[1]
    has_index = bool(first) and first[0].strip().lower() != "question"
    return _read_mc_csv(text, header=True, first=1 if has_index else 0)


def _read_mmlu_csv(text: str) -> Iterator[dict[str, Any]]:
    return _read_mc_csv(text, header=False, first=0)


# --- fields ---------------------------------------------------------------------------


def _required(row: dict[str, Any], name: str, line: int) -> Any:
    if name not in row or row[name] is None:
        raise DataError("missing", line=line, field=name)
    return row[name]


def _required_text(row: dict[str, Any], name: str, line: int) -> str:
    return _text(_required(row, name, line), name, line)


def _text(value: Any, name: str, line: int) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"must be text, not {type(value).__name__}", line=line, field=name)
    text = str(value)
    if not text.strip():
        raise DataError("empty", line=line, field=name)
    return text


def _choices(value: Any, line: int) -> list[str]:
    if not isinstance(value, list):
        raise DataError(f"must be a list, not {type(value).__name__}", line=line, field="choices")
    if not value:
        raise DataError("empty: a question needs at least one choice", line=line, field="choices")
    return [_text(choice, f"choices[{i}]", line) for i, choice in enumerate(value)]


def _answer_index(value: Any, choices: list[str], line: int, name: str) -> int:
    """The gold index from an index (int or digits) or a letter (A = 0)."""
    count = len(choices)
    span = f"the {count} choices ({LETTERS[0]}-{LETTERS[min(count, 26) - 1]})"
    if isinstance(value, bool):
        raise DataError("must be an index or a letter, not a boolean", line=line, field=name)
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isdigit():
            value = int(stripped)
        elif len(stripped) == 1 and stripped.upper() in LETTERS:
            index = LETTERS.index(stripped.upper())
            if index >= count:
                raise DataError(f"{stripped!r} is outside {span}", line=line, field=name)
            return index
        else:
            raise DataError(
                f"{value!r} is neither a choice index nor a letter", line=line, field=name
            )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise DataError(
            f"must be an index or a letter, not {type(value).__name__}", line=line, field=name
        )
    if not 0 <= value < count:
        raise DataError(f"index {value} is outside {span}", line=line, field=name)
    return value


def _mc_doc(
    row: dict[str, Any], question: str, choices: list[str], answer: int, used: tuple[str, ...]
) -> dict[str, Any]:
    extra = {key: value for key, value in row.items() if key not in used}
    return {**extra, "question": question, "choices": choices, "answer": answer}


_READERS = {
    "mc_jsonl": _read_mc_jsonl,
    "lm_eval_jsonl": _read_lm_eval_jsonl,
    "ceval_csv": _read_ceval_csv,
    "cmmlu_csv": _read_cmmlu_csv,
    "mmlu_csv": _read_mmlu_csv,
    "jsonl": _read_jsonl,
    "csv": _read_csv,
}
