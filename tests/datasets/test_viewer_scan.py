"""Search and filter over a split of several index blocks: the gram prefilter and the
resumable scan give exactly what a brute-force scan of the rows gives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from datasets.viewer import build_search_index, filter, search
from datasets.viewer import scan as scan_module
from datasets.viewer.grams import BLOCK_ROWS
from tests.datasets.viewer_layout import write_split

KINDS = {"id": "string", "messages": "json", "note": "string"}
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可"
WORDS = ["Model", "answer", "DATA", "learn", "token", "Vector", "loss", "batch"]
QUERIES = ["model", "MODEL", "a", "的", "是在", "独角兽", "Unicorn", "ex-00", "loss bat", "zzqx"]


def record(rng: random.Random, i: int) -> dict[str, Any]:
    zh = "".join(rng.choice(HAN) for _ in range(rng.randint(3, 12)))
    en = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    content = f"{zh} {en}" + (" 独角兽 Unicorn" if i % 1500 == 7 else "")
    return {
        "id": f"ex-{i:05d}",
        "messages": [{"role": "user", "content": content}],
        "note": None if i % 3 else rng.choice(WORDS),
    }


def texts(r: dict[str, Any]) -> list[str]:
    cells = [r["id"], r["note"], r["messages"][0]["role"], r["messages"][0]["content"]]
    return [c.lower() for c in cells if c]


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    rng = random.Random(6)
    return [record(rng, i) for i in range(2 * BLOCK_ROWS + 500)]


@pytest.fixture(params=["parquet", "indexed"])
def split(request: pytest.FixtureRequest, tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = write_split(tmp_path / "train.parquet", records, KINDS, 1000)
    if request.param == "indexed":
        build_search_index(path)
    return path


def every_match(path: Path, query: str, call: Any) -> tuple[list[int], dict[str, Any]]:
    """Page through ``call`` until the count is complete; the positions of all pages."""
    found: list[int] = []
    while True:
        answer = call(len(found))
        found += [e["row_idx"] for e in answer["rows"]]
        if not answer["rows"] and not answer["partial"]:
            return found, answer


@pytest.mark.parametrize("query", QUERIES)
def test_search_over_many_blocks_equals_a_brute_force_scan(
    split: Path, records: list[dict[str, Any]], query: str
) -> None:
    expected = [i for i, r in enumerate(records) if any(query.lower() in t for t in texts(r))]
    found, last = every_match(split, query, lambda at: search(split, query, at, 100))
    assert found == expected
    assert last["num_rows_total"] == len(expected)


def test_an_unfinished_count_is_partial_and_later_calls_finish_it(
    split: Path, records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_module, "COUNT_BUDGET_S", 0.0)
    expected = [i for i, r in enumerate(records) if "的" in r["messages"][0]["content"]]
    first = search(split, "的", 0, 10)
    assert [e["row_idx"] for e in first["rows"]] == expected[:10]
    assert first["partial"] and 10 <= first["num_rows_total"] < len(expected)
    page = search(split, "的", len(expected) - 5, 10)
    assert [e["row_idx"] for e in page["rows"]] == expected[-5:]
    assert (page["num_rows_total"], page["partial"]) == (len(expected), False)


FILTERS = {
    "messages contains '是在' AND note = 'loss'": lambda r: (
        "是在" in r["messages"][0]["content"] and r["note"] == "loss"
    ),
    "note contains 'A'": lambda r: r["note"] is not None and "a" in r["note"].lower(),
    "id >= 'ex-04'": lambda r: r["id"] >= "ex-04",
}


@pytest.mark.parametrize("where", list(FILTERS))
def test_filter_over_many_blocks_pages_through_every_match_in_order(
    split: Path, records: list[dict[str, Any]], where: str
) -> None:
    expected = [i for i, r in enumerate(records) if FILTERS[where](r)]
    found, last = every_match(split, where, lambda at: filter(split, where, at, 100))
    assert found == expected and last["num_rows_total"] == len(expected)


def test_a_query_left_unfinished_on_this_thread_does_not_break_the_next_call(
    split: Path,
) -> None:
    from datasets.viewer.query import cursor

    # given a result read only in part (as an aggregate's fetchone leaves it)
    cursor().execute("SELECT * FROM range(10)").fetchone()
    # then the viewer still answers on this thread
    assert search(split, "model", 0, 5)["rows"]
