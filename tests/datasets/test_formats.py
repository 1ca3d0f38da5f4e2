"""Detection and validation of dataset files: formats, planted problems with their line,
field and reason, and files that are broken as a whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets.formats import (
    Problem,
    ValidationCancelled,
    ValidationReport,
    iter_rows,
    validate_file,
)

Jsonl = Callable[..., Path]

USER = {"role": "user", "content": "hello world"}
ASSISTANT = {"role": "assistant", "content": "hi there"}
CHAT = {"messages": [{"role": "system", "content": "be brief"}, USER, ASSISTANT]}
EXAMPLES: dict[str, dict[str, Any]] = {
    "chat": CHAT,
    "prompt_completion": {"prompt": "2 + 2 =", "completion": " 4"},
    "preference": {
        "input": {"messages": [USER], "tools": [], "parallel_tool_calls": True},
        "preferred_output": [ASSISTANT],
        "non_preferred_output": [{"role": "assistant", "content": "go away"}],
    },
    "text": {"text": "Once upon a time.", "meta": {"source": "web"}},
    "multiple_choice": {"question": "2 + 2?", "choices": ["3", "4"], "answer": 1},
    "alpaca": {"instruction": "Add.", "input": "2 + 2", "output": "4"},
    "sharegpt": {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    },
}


def problems(report: ValidationReport) -> list[tuple[int, str, str]]:
    return [(p.line, p.field, p.reason) for p in report.problems]


@pytest.mark.parametrize("fmt", sorted(EXAMPLES))
def test_each_jsonl_format_is_detected_and_valid(jsonl: Jsonl, fmt: str) -> None:
    path = jsonl(EXAMPLES[fmt], EXAMPLES[fmt])

    report = validate_file(path, "train.jsonl")

    assert (report.container, report.format) == ("jsonl", fmt)
    assert problems(report) == []
    assert (report.rows, report.valid_rows, report.valid) == (2, 2, True)
    assert report.columns == list(EXAMPLES[fmt])


def test_chat_with_tool_calls_weights_and_tool_messages_is_valid(jsonl: Jsonl) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call], "weight": 0},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": [{"type": "text", "text": "42"}], "weight": 1},
    ]

    report = validate_file(jsonl({"messages": messages, "tools": []}), "t.jsonl")

    assert problems(report) == []


PLANTED: list[tuple[Any, tuple[str, str]]] = [
    (CHAT, ("", "")),
    (b'{"messages": [', ("", "invalid_json")),
    (b"[1, 2]", ("", "not_an_object")),
    ({"messages": "hi"}, ("messages", "wrong_type")),
    ({"messages": []}, ("messages", "empty_value")),
    ({"messages": [{"content": "hi"}, ASSISTANT]}, ("messages[0].role", "missing_field")),
    ({"messages": [{"role": "", "content": "x"}, ASSISTANT]}, ("messages[0].role", "empty_value")),
    (
        {"messages": [{"role": "bot", "content": "x"}, ASSISTANT]},
        ("messages[0].role", "invalid_role"),
    ),
    (
        {"messages": [USER, {"role": "assistant", "content": ""}]},
        ("messages[1].content", "empty_value"),
    ),
    (
        {"messages": [USER, {"role": "assistant", "content": 7}]},
        ("messages[1].content", "wrong_type"),
    ),
    ({"messages": [USER]}, ("messages", "no_assistant_message")),
    ({"messages": [USER, ASSISTANT, USER]}, ("messages[2]", "not_ending_with_assistant")),
    ({"messages": [USER, {**ASSISTANT, "weight": 2}]}, ("messages[1].weight", "invalid_weight")),
    ({"messages": [{**USER, "weight": 1}, ASSISTANT]}, ("messages[0].weight", "invalid_weight")),
    (
        {"messages": [USER, {"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]},
        ("messages[1].tool_calls[0]", "invalid_tool_call"),
    ),
    (
        {"messages": [USER, {"role": "tool", "content": "4"}, ASSISTANT]},
        ("messages[1].tool_call_id", "missing_field"),
    ),
    (
        {"messages": [USER, {"role": "assistant", "content": "ok <|im_end|>"}]},
        ("messages[1].content", "forbidden_token"),
    ),
    (
        {"messages": [{"role": "user", "content": "[INST] hi"}, ASSISTANT]},
        ("messages[0].content", "forbidden_token"),
    ),
    ({"text": "plain"}, ("", "inconsistent_format")),
    ({"message": []}, ("messages", "missing_field")),
]


def test_every_planted_problem_is_reported_on_its_line_and_field(jsonl: Jsonl) -> None:
    path = jsonl(*(row for row, _ in PLANTED))

    report = validate_file(path, "planted.jsonl")

    expected = [(line, *want) for line, (_, want) in enumerate(PLANTED, 1) if want[1]]
    assert problems(report) == expected
    assert report.format == "chat"
    assert (report.rows, report.valid_rows) == (len(PLANTED), 1)
    assert sum(report.problem_counts.values()) == len(expected)


def test_problems_beyond_the_first_hundred_are_counted_not_listed(jsonl: Jsonl) -> None:
    path = jsonl(CHAT, *([b"{oops"] * 150))

    report = validate_file(path, "many.jsonl")

    assert len(report.problems) == 100
    assert report.problem_counts == {"invalid_json": 150}
    assert report.problems[0].line == 2


def test_preference_outputs_must_be_assistant_messages(jsonl: Jsonl) -> None:
    row = {**EXAMPLES["preference"], "non_preferred_output": [USER]}
    bad_input = {**EXAMPLES["preference"], "input": {"prompt": "x"}}

    report = validate_file(jsonl(row, bad_input), "dpo.jsonl")

    assert problems(report) == [
        (1, "non_preferred_output[0].role", "invalid_role"),
        (2, "input.messages", "missing_field"),
    ]


@pytest.mark.parametrize(
    ("answer", "ok"), [(0, True), ("B", True), ("4", True), (5, False), ("E", False), (None, False)]
)
def test_multiple_choice_answers_an_index_letter_or_choice(
    jsonl: Jsonl, answer: Any, ok: bool
) -> None:
    row = {"question": "2 + 2?", "choices": ["3", "4"], "answer": answer}

    report = validate_file(jsonl(row), "mc.jsonl")

    assert problems(report) == ([] if ok else [(1, "answer", "invalid_answer")])


def test_sharegpt_must_end_on_gpt(jsonl: Jsonl) -> None:
    row = {"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "x"}]}

    report = validate_file(jsonl(row), "sg.jsonl")

    assert problems(report) == [(1, "conversations[1]", "not_ending_with_assistant")]


def test_unexpected_format_is_a_file_level_problem(jsonl: Jsonl) -> None:
    path = jsonl(EXAMPLES["text"])

    report = validate_file(path, "pretrain.jsonl", expected=("chat", "preference"))

    assert problems(report) == [(0, "", "unexpected_format")]
    assert "preference" in report.problems[0].message


def test_rows_of_no_known_layout_make_an_unknown_format_file(jsonl: Jsonl) -> None:
    report = validate_file(jsonl({"a": 1}, {"b": 2}), "odd.jsonl")

    assert report.format is None
    assert problems(report) == [
        (0, "", "unknown_format"),
        (1, "", "unknown_format"),
        (2, "", "unknown_format"),
    ]
    assert not report.valid


CHAT_LINE = b'{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}'


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", [(0, "", "empty_file")]),
        (b"\n  \n", [(0, "", "empty_file")]),
        (b"\x1f\x8b\x08\x00" + bytes(100), [(0, "", "binary_file")]),
        (b"\x00\x01\x02\xff" * 50, [(0, "", "binary_file")]),
        (b"\xff\xfe{\x00}\x00", [(0, "", "invalid_utf8")]),
        (CHAT_LINE + b"\n" + CHAT_LINE[:30], [(2, "", "truncated")]),
        (CHAT_LINE + b"\n" + CHAT_LINE, []),
        (b"\xef\xbb\xbf" + CHAT_LINE + b"\n", [(1, "", "bom")]),
        (CHAT_LINE + b"\n" + '{"text": "café"}\n'.encode("latin-1"), [(2, "", "invalid_utf8")]),
        (b"not json at all\n", [(1, "", "invalid_json")]),
    ],
    ids=[
        "empty",
        "blank",
        "gzip",
        "binary",
        "utf16",
        "truncated",
        "no-final-newline",
        "bom",
        "latin1",
        "garbage",
    ],
)
def test_broken_files_get_a_clear_report(
    tmp_path: Path, content: bytes, expected: list[Any]
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)

    report = validate_file(path, "data.jsonl")

    assert problems(report)[: len(expected) or None] == expected
    assert all(problem.message for problem in report.problems)
    assert report.valid is (not expected)


def test_latin1_file_message_suggests_saving_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes('{"text": "naïve"}\n'.encode("latin-1"))

    report = validate_file(path, "data.jsonl")

    assert "UTF-8" in report.problems[0].message


def test_huge_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    huge = b'{"text": "' + b"x" * 5000 + b'"}'
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "a"}\n' + huge + b"\n" + b'{"text": "b"}\n')

    report = validate_file(path, "data.jsonl", max_line_bytes=1000)

    assert problems(report) == [(2, "", "line_too_long")]
    assert (report.rows, report.valid_rows) == (3, 2)


def test_a_huge_line_longer_than_a_read_chunk_keeps_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets.formats import readers

    monkeypatch.setattr(readers, "CHUNK", 64)
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "' + b"y" * 500 + b'"}\n{"text": "b"}\n{"x"\n')

    report = validate_file(path, "data.jsonl", max_line_bytes=100)

    assert problems(report) == [(2, "", "line_too_long"), (4, "", "invalid_json")]


def test_csv_is_read_as_a_table_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('id,note\n1,"two\nlines"\n2\n3,plain\n', encoding="utf-8")

    report = validate_file(path, "t.csv")

    assert (report.container, report.format, report.columns) == ("csv", "tabular", ["id", "note"])
    assert problems(report) == [(4, "", "invalid_csv")]
    assert [line for line, _ in iter_rows(path, "t.csv")] == [2, 5]


def test_ceval_style_csv_is_multiple_choice(tmp_path: Path) -> None:
    path = tmp_path / "ceval.csv"
    path.write_text(
        "id,question,A,B,C,D,answer\n0,1+1=?,1,2,3,4,B\n1,2+2=?,1,2,3,4,Z\n", encoding="utf-8"
    )

    report = validate_file(path, "ceval.csv", expected=("multiple_choice",))

    assert report.format == "multiple_choice"
    assert problems(report) == [(3, "answer", "invalid_answer")]


def test_parquet_rows_are_numbered_from_one(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", None]}), path)

    report = validate_file(path, "p.parquet")

    assert (report.container, report.format) == ("parquet", "prompt_completion")
    assert problems(report) == [(2, "completion", "wrong_type")]


def test_a_corrupt_parquet_file_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1" + b"garbage" * 10)

    report = validate_file(path, "p.parquet")

    assert problems(report) == [(0, "", "invalid_parquet")]


def test_container_is_sniffed_without_a_known_suffix(jsonl: Jsonl) -> None:
    report = validate_file(jsonl(CHAT, name="upload.bin"), "upload")

    assert (report.container, report.format) == ("jsonl", "chat")


def test_cancel_raises_and_leaves_no_copy(jsonl: Jsonl, tmp_path: Path) -> None:
    out = tmp_path / "copy.parquet"

    with pytest.raises(ValidationCancelled):
        validate_file(jsonl(CHAT), "c.jsonl", parquet_out=out, should_stop=lambda: True)

    assert list(tmp_path.glob("copy.parquet*")) == []


def test_progress_ends_at_the_file_size(jsonl: Jsonl) -> None:
    path = jsonl(CHAT, CHAT)
    seen: list[tuple[int, int]] = []

    validate_file(path, "c.jsonl", progress=lambda done, total: seen.append((done, total)))

    assert seen[-1] == (path.stat().st_size, path.stat().st_size)


def test_report_survives_a_round_trip_through_a_dict(jsonl: Jsonl) -> None:
    report = validate_file(jsonl(CHAT, {"messages": [USER]}), "c.jsonl")

    again = ValidationReport.from_dict(report.to_dict())

    assert again == report
    assert again.problems[0] == Problem(
        2, "messages", "no_assistant_message", again.problems[0].message
    )
