"""The viewer's query layer over small split files written in the ingest's layout."""

from __future__ import annotations

import contextlib
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datasets.viewer import (
    ParquetCache,
    ViewerError,
    build_search_index,
    filter,
    info,
    parse_where,
    rows,
    search,
    splits,
    statistics,
)
from tests.datasets.viewer_layout import write_split

KINDS = {
    "id": "string",
    "messages": "json",
    "lang": "string",
    "score": "int64",
    "quality": "float64",
    "flagged": "bool",
    "note": "string",
}


def chat(i: int) -> dict[str, Any]:
    zh = i % 2 == 1
    question = f"问题{i}：你好，模型" if zh else f"Question {i}: Hello Model"
    return {
        "id": f"ex-{i:03d}",
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "回答" if zh else "An answer"},
        ],
        "lang": "zh" if zh else "en",
        "score": i % 5 + 1,
        "quality": i / 10,
        "flagged": i % 4 == 0,
        "note": None if i % 3 == 0 else f"note {i}",
    }


@pytest.fixture(params=["parquet", "indexed"])
def split(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """25 chat rows from line 11 in row groups of 7, read with and without the index."""
    path = write_split(tmp_path / "train.parquet", [chat(i) for i in range(25)], KINDS, 7, 11)
    if request.param == "indexed":
        build_search_index(path)
    return path


def ids(answer: dict[str, Any]) -> list[str]:
    return [entry["row"]["id"] for entry in answer["rows"]]


def test_rows_pages_return_exactly_the_requested_rows_and_total(split: Path) -> None:
    page = rows(split, 5, 10)
    assert [e["row_idx"] for e in page["rows"]] == list(range(5, 15))
    assert [e["line"] for e in page["rows"]] == list(range(16, 26))
    assert ids(page) == [f"ex-{i:03d}" for i in range(5, 15)]
    assert (page["num_rows_total"], page["num_rows_per_page"], page["partial"]) == (25, 10, False)
    assert ids(rows(split, 20, 10)) == [f"ex-{i:03d}" for i in range(20, 25)]
    assert rows(split, 30, 10)["rows"] == []


def test_rows_decode_json_cells_and_name_their_type(split: Path) -> None:
    entry = rows(split, 1, 1)["rows"][0]
    assert entry["row"]["messages"] == chat(1)["messages"]
    assert entry["row"] == chat(1) and entry["truncated_cells"] == []
    types = {f["name"]: f["type"]["dtype"] for f in rows(split, 0, 1)["features"]}
    assert types == KINDS


@pytest.mark.parametrize(("offset", "length"), [(-1, 10), (0, 101), (0, -1)])
def test_rows_refuses_bad_pages(split: Path, offset: int, length: int) -> None:
    with pytest.raises(ViewerError) as error:
        rows(split, offset, length)
    assert error.value.param in ("offset", "length")


def test_long_cells_are_cut_and_named_in_truncated_cells(tmp_path: Path) -> None:
    record = {"text": "长" * 5000, "short": "ok", "blob": {"t": "x" * 20_000}}
    kinds = {"text": "string", "short": "string", "blob": "json"}
    path = write_split(tmp_path / "t.parquet", [record], kinds)
    entry = rows(path, 0, 1)["rows"][0]
    assert entry["truncated_cells"] == ["text", "blob"]
    assert len(entry["row"]["text"].encode()) <= 10_000 and entry["row"]["text"].startswith("长")
    assert entry["row"]["blob"].startswith('{"t":"xxx') and entry["row"]["short"] == "ok"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("你好", 12),  # Chinese inside a JSON column
        ("hello model", 13),  # English, case-insensitive, inside JSON
        ("EX-02", 5),  # a string column: ex-020 … ex-024
        ("问题7：", 1),
        ("Note 2", 4),  # note 2, 20, 22, 23 (multiples of 3 have no note)
    ],
)
def test_search_finds_substrings_case_insensitively(split: Path, query: str, expected: int):
    answer = search(split, query, 0, 100)
    assert answer["num_rows_total"] == expected == len(answer["rows"])
    for entry in answer["rows"]:
        assert entry["row"] == chat(entry["row_idx"])


def test_search_matches_json_values_not_keys(split: Path) -> None:
    assert search(split, "assistant", 0, 10)["num_rows_total"] == 25
    assert search(split, "content", 0, 10)["num_rows_total"] == 0


def test_search_pages_through_matches_in_split_order(split: Path) -> None:
    page = search(split, "你好", 3, 4)
    assert [e["row_idx"] for e in page["rows"]] == [7, 9, 11, 13]
    assert page["num_rows_total"] == 12


@pytest.mark.parametrize("query", ["", "   ", "x" * 201])
def test_search_refuses_blank_or_long_queries(split: Path, query: str) -> None:
    with pytest.raises(ViewerError):
        search(split, query, 0, 10)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("score = 3", [i for i in range(25) if i % 5 + 1 == 3]),
        ("score != 3 AND score <> 1", [i for i in range(25) if i % 5 + 1 not in (1, 3)]),
        ("quality < 0.3", [0, 1, 2]),
        ("quality <= 0.3 AND quality > 0.1", [2, 3]),
        ("score >= 5", [4, 9, 14, 19, 24]),
        ("lang = 'zh' AND flagged = false", [i for i in range(1, 25, 2)]),
        ("flagged = TRUE", list(range(0, 25, 4))),
        ("messages contains '你好，模型' AND id startswith 'ex-01'", [11, 13, 15, 17, 19]),
        ("note CONTAINS 'NOTE 1'", [1, 10, 11, 13, 14, 16, 17, 19]),
        ("note is null", list(range(0, 25, 3))),
        ("note IS NOT NULL AND __row__ < 16", [1, 2, 4]),
        ("\"id\" = 'ex-000'", [0]),
    ],
)
def test_filter_with_each_operator(split: Path, where: str, expected: list[int]) -> None:
    answer = filter(split, where, 0, 100)
    assert [e["row_idx"] for e in answer["rows"]] == expected
    assert answer["num_rows_total"] == len(expected)
    assert all(e["row"] == chat(e["row_idx"]) for e in answer["rows"])


def test_filter_orders_by_a_column_then_by_position(split: Path) -> None:
    answer = filter(split, "score >= 4", 0, 100, orderby="score DESC")
    scores = [e["row"]["score"] for e in answer["rows"]]
    assert scores == sorted(scores, reverse=True)
    assert [e["row_idx"] for e in answer["rows"]][:5] == [4, 9, 14, 19, 24]
    assert ids(filter(split, "score >= 4", 8, 2, orderby="score desc")) == ["ex-018", "ex-023"]


@pytest.mark.parametrize(
    "where",
    [
        "1=1; DROP TABLE x",
        "score = 1; DROP TABLE x",
        "score = 1 OR 1=1",
        "unknown = 1",
        "score = 'three'",
        "lang = 3",
        "lang = 'zh",
        "lang = 'zh' AND",
        "(score = 1",
        "score",
        "score =",
        "flagged > true",
        "messages = 'x'",
        "note contains 3",
        "note is 'x'",
        '"id"" = 1',
        "score = 1 AND " * 300 + "score = 1",
        " AND ".join(["score = 1"] * 17),
        "lang = 'zh' -- comment",
        "lang = 'a' || 'b'",
        "score = 1e999999",
        "score > 99999999999999999999999",
        "",
    ],
)
def test_bad_where_is_a_viewer_error(split: Path, where: str) -> None:
    with pytest.raises(ViewerError) as error:
        filter(split, where, 0, 10)
    assert error.value.code == "invalid_where"


def test_random_where_text_only_ever_raises_viewer_error() -> None:
    pieces = ["score", "lang", "'zh'", "3", "=", "<", "AND", "is", "not", "null", '"', "'", ";"]
    rng = random.Random(6)
    for _ in range(500):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        with contextlib.suppress(ViewerError):
            parse_where(text, {"score": "int64", "lang": "string"})


@pytest.mark.parametrize("orderby", ["messages", "score sideways", "nope", "score; DROP"])
def test_bad_orderby_is_a_viewer_error(split: Path, orderby: str) -> None:
    with pytest.raises(ViewerError) as error:
        filter(split, "score > 0", 0, 10, orderby=orderby)
    assert error.value.param == "orderby"


def test_info_and_splits_count_rows_and_bytes(split: Path) -> None:
    assert info(split)["num_rows"] == 25
    assert splits({"train": split})["splits"] == [
        {"split": "train", "num_rows": 25, "num_bytes": split.stat().st_size}
    ]


def stats_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i}",
            "score": None if i == 39 else i % 4 + 1,
            "quality": i / 39,
            "flagged": i % 3 == 0,
            "lang": "zh" if i % 2 else "en",
            "messages": [{"content": "x"}] * (i % 3 + 1),
            "meta": {"k": i},
        }
        for i in range(40)
    ]


def test_statistics_are_exact_on_a_small_file(tmp_path: Path) -> None:
    kinds = {"id": "string", "score": "int64", "quality": "float64", "flagged": "bool"}
    kinds |= {"lang": "string", "messages": "json", "meta": "json"}
    path = write_split(tmp_path / "s.parquet", stats_rows(), kinds)
    answer = statistics(path)
    by_name = {s["column_name"]: s for s in answer["statistics"]}
    assert answer["num_examples"] == 40
    assert {n: s["column_type"] for n, s in by_name.items()} == {
        "id": "string_text", "score": "int", "quality": "float", "flagged": "bool",
        "lang": "string_label", "messages": "list", "meta": "json",
    }  # fmt: skip
    scores = np.array([i % 4 + 1 for i in range(39)])
    score = by_name["score"]["column_statistics"]
    assert (score["nan_count"], score["nan_proportion"], score["min"], score["max"]) == (
        1, 0.025, 1, 4
    )  # fmt: skip
    assert score["mean"] == round(scores.mean(), 5) and score["median"] == 2.0
    assert score["std"] == round(scores.std(ddof=1), 5)
    assert score["histogram"] == {"hist": [10, 10, 10, 9], "bin_edges": [1, 2, 3, 4, 4]}
    quality = by_name["quality"]["column_statistics"]
    hist, edges = np.histogram([i / 39 for i in range(40)], bins=10, range=(0, 1))
    assert quality["histogram"] == {
        "hist": hist.tolist(), "bin_edges": [round(e, 5) for e in edges.tolist()]
    }  # fmt: skip
    assert by_name["id"]["column_statistics"]["histogram"] == {
        "hist": [10, 30], "bin_edges": [2, 3, 3]
    }  # fmt: skip
    assert by_name["flagged"]["column_statistics"]["frequencies"] == {"False": 26, "True": 14}
    lang = by_name["lang"]["column_statistics"]
    assert (lang["n_unique"], lang["frequencies"]) == (2, {"en": 20, "zh": 20})
    messages = by_name["messages"]["column_statistics"]
    assert (messages["min"], messages["max"], messages["histogram"]["hist"]) == (1, 3, [14, 13, 13])
    assert by_name["meta"]["column_statistics"] == {"nan_count": 0, "nan_proportion": 0.0}


def fetcher(body: bytes, calls: list[str]):
    def fetch(tmp: Path) -> None:
        calls.append(tmp.name)
        tmp.write_bytes(body)

    return fetch


def test_cache_fetches_a_key_once_even_when_asked_concurrently(tmp_path: Path) -> None:
    cache, calls = ParquetCache(tmp_path, max_bytes=10_000), []
    got: list[Path] = []

    def ask() -> None:
        got.append(cache.path("v1/train.parquet", fetcher(b"x" * 100, calls)))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(got)) == 1
    assert got[0].name == "train.parquet" and got[0].read_bytes() == b"x" * 100
    assert cache.path("v1/train.parquet", fetcher(b"y", calls)) == got[0] and len(calls) == 1


def test_cache_evicts_least_recently_used_beyond_its_size(tmp_path: Path) -> None:
    cache, calls = ParquetCache(tmp_path, max_bytes=250, grace_s=0), []
    a = cache.path("a", fetcher(b"a" * 100, calls))
    b = cache.path("b", fetcher(b"b" * 100, calls))
    cache.path("a", fetcher(b"", calls))  # a is now more recent than b
    c = cache.path("c", fetcher(b"c" * 100, calls))
    assert a.exists() and c.exists() and not b.exists()
    assert not b.parent.exists()


def test_cache_leaves_nothing_when_a_fetch_fails(tmp_path: Path) -> None:
    cache = ParquetCache(tmp_path, max_bytes=1000)

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("connection reset")

    with pytest.raises(OSError):
        cache.path("k", broken)
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
