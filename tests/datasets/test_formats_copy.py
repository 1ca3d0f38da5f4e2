"""The viewer's Parquet copy, statistics and token limits of dataset files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets.formats import TokenCounter, compute_statistics, validate_file, viewer_copy

Jsonl = Callable[..., Path]
Tokens = Callable[[int | None], TokenCounter]


def read_copy(path: Path) -> tuple[pa.Schema, list[dict[str, Any]], list[str]]:
    table = pq.read_table(path)
    json_columns = orjson.loads(table.schema.metadata[b"openmaas.json_columns"])
    return table.schema, table.to_pylist(), json_columns


def test_copy_keeps_types_json_columns_and_source_lines(jsonl: Jsonl, tmp_path: Path) -> None:
    rows = [
        {"text": "a", "n": 1, "score": 0.5, "ok": True, "tags": ["x"], "meta": {"k": 1}},
        {"text": "b", "n": 2, "score": 1, "ok": False, "tags": [], "meta": None},
    ]
    out = tmp_path / "copy.parquet"

    report = validate_file(jsonl(rows[0], b"{bad", rows[1]), "t.jsonl", parquet_out=out)

    schema, copied, json_columns = read_copy(out)
    assert [(f.name, str(f.type)) for f in schema] == [
        ("__row__", "int64"),
        ("text", "string"),
        ("n", "int64"),
        ("score", "double"),
        ("ok", "bool"),
        ("tags", "string"),
        ("meta", "string"),
    ]
    assert json_columns == ["tags", "meta"]
    assert [row["__row__"] for row in copied] == [1, 3]
    assert copied[0]["tags"] == '["x"]' and copied[0]["meta"] == '{"k":1}'
    assert copied[1]["score"] == 1.0 and copied[1]["meta"] is None
    assert report.columns == ["text", "n", "score", "ok", "tags", "meta"]


def test_a_later_type_change_or_new_key_rewrites_the_copy_losslessly(
    jsonl: Jsonl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(viewer_copy, "GROUP_ROWS", 2)
    rows = [
        {"text": "a", "n": 1},
        {"text": "b", "n": 2},
        {"text": "c", "n": "three", "extra": True},
        {"text": "d", "n": 4},
        {"text": "e", "n": 5.5},
    ]
    out = tmp_path / "copy.parquet"

    validate_file(jsonl(*rows), "t.jsonl", parquet_out=out)

    _, copied, json_columns = read_copy(out)
    assert json_columns == ["n"]
    assert [orjson.loads(row["n"]) for row in copied] == [1, 2, "three", 4, 5.5]
    assert [row["extra"] for row in copied] == [None, None, True, None, None]
    assert [row["__row__"] for row in copied] == [1, 2, 3, 4, 5]
    assert pq.ParquetFile(out).metadata.num_row_groups == 3
    assert list(tmp_path.glob("copy.parquet.part*")) == []


def test_integers_and_floats_share_a_double_column_across_row_groups(
    jsonl: Jsonl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(viewer_copy, "GROUP_ROWS", 1)
    out = tmp_path / "copy.parquet"

    validate_file(jsonl({"text": "a", "x": 1}, {"text": "b", "x": 2.5}), "t.jsonl", parquet_out=out)

    schema, copied, json_columns = read_copy(out)
    assert str(schema.field("x").type) == "double" and json_columns == []
    assert [row["x"] for row in copied] == [1.0, 2.5]


def test_an_empty_file_still_gets_a_readable_copy(tmp_path: Path) -> None:
    source, out = tmp_path / "e.jsonl", tmp_path / "copy.parquet"
    source.write_bytes(b"")

    validate_file(source, "e.jsonl", parquet_out=out)

    assert pq.read_table(out).num_rows == 0


def test_csv_copy_numbers_rows_by_file_line(tmp_path: Path) -> None:
    source, out = tmp_path / "t.csv", tmp_path / "copy.parquet"
    source.write_text('text,label\n"multi\nline",a\nsingle,b\n', encoding="utf-8")

    validate_file(source, "t.csv", parquet_out=out)

    _, copied, _ = read_copy(out)
    assert copied == [
        {"__row__": 2, "text": "multi\nline", "label": "a"},
        {"__row__": 4, "text": "single", "label": "b"},
    ]


def test_rows_over_the_context_length_are_reported(jsonl: Jsonl, tiny_tokens: Tokens) -> None:
    short = {"text": "hello world"}
    long = {"text": " ".join(["hello"] * 12)}

    report = validate_file(jsonl(short, long), "t.jsonl", tokens=tiny_tokens(10))

    assert [(p.line, p.reason) for p in report.problems] == [(2, "too_many_tokens")]
    assert "12 tokens" in report.problems[0].message
    assert report.valid_rows == 1


def test_chat_rows_pay_a_per_message_overhead(jsonl: Jsonl, tiny_tokens: Tokens) -> None:
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}]}

    report = validate_file(jsonl(row), "c.jsonl", tokens=tiny_tokens(14))

    # 6 tokens of text (roles included) + 2 messages x 4 + 3 for the reply = 17 > 14
    assert [p.reason for p in report.problems] == ["too_many_tokens"]


def test_the_tokenizers_special_tokens_are_forbidden(jsonl: Jsonl, tiny_tokens: Tokens) -> None:
    counter = tiny_tokens(None)

    report = validate_file(jsonl({"text": "a <|fence|> b"}), "t.jsonl", tokens=counter)

    assert counter.special_tokens == frozenset({"<|fence|>"})
    assert [(p.field, p.reason) for p in report.problems] == [("text", "forbidden_token")]


def test_token_counter_counts_words_of_the_tiny_tokenizer(tiny_tokens: Tokens) -> None:
    counter = tiny_tokens(None)

    assert counter.count("hello world!") == 3
    assert counter.count_batch(["hi", "", "be brief"]) == [1, 0, 2]


def _chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def test_statistics_of_a_small_chat_file(jsonl: Jsonl, tmp_path: Path, tiny_tokens: Tokens) -> None:
    same = _chat(("user", "hello world"), ("assistant", "hi"))
    chinese = _chat(("user", "你好你好你好你好你好"), ("assistant", "好的好的好的好的好的"))
    system = _chat(("system", "be brief"), ("user", "hi there"), ("assistant", "hello"))
    out = tmp_path / "copy.parquet"
    report = validate_file(jsonl(same, same, chinese, system), "c.jsonl", parquet_out=out)

    stats = compute_statistics(out, report.format, tokens=tiny_tokens(None))

    assert stats["rows"] == 4
    assert stats["exact_duplicates"] == 1
    assert stats["languages"] == {"zh": 1, "en": 3, "other": 0}
    assert stats["roles"] == {"user": 4, "assistant": 4, "system": 1}
    # content tokens: user 2+2+1+2, assistant 1+1+1+1, system 2
    assert stats["role_tokens"]["user"] == {"sum": 7, "mean": 1.75, "min": 1, "max": 2}
    assert stats["role_tokens"]["assistant"]["sum"] == 4
    assert stats["role_tokens"]["system"] == {"sum": 2, "mean": 2.0, "min": 2, "max": 2}
    # "system\nbe brief\nuser\nhi there\nassistant\nhello": 45 characters, 8 tokens
    assert stats["fields"]["messages"]["chars"]["max"] == 45
    assert stats["fields"]["messages"]["tokens"] == {"sum": 22, "mean": 5.5, "min": 4, "max": 8}
    tokens_hist = stats["histograms"]["tokens"]
    assert len(tokens_hist["hist"]) == 20 and sum(tokens_hist["hist"]) == 4
    assert tokens_hist["bin_edges"][0] == 4.0 and tokens_hist["bin_edges"][-1] == 8.0


def test_statistics_without_a_tokenizer_count_characters(jsonl: Jsonl, tmp_path: Path) -> None:
    out = tmp_path / "copy.parquet"
    report = validate_file(jsonl({"text": "abc"}, {"text": "abcdefg"}), "t.jsonl", parquet_out=out)

    stats = compute_statistics(out, report.format)

    assert stats["fields"] == {"text": {"chars": {"sum": 10, "mean": 5.0, "min": 3, "max": 7}}}
    assert "tokens" not in stats["histograms"] and "roles" not in stats
    assert (
        stats["histograms"]["chars"]["hist"][0] == 1
        and stats["histograms"]["chars"]["hist"][-1] == 1
    )
