"""Evaluation documents from the layouts public benchmarks ship in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.harness.importers import DataError, detect_layout, load_docs, parse_docs

BOM = b"\xef\xbb\xbf"


def write(tmp_path: Path, name: str, text: str, *, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((BOM if bom else b"") + text.encode())
    return path


def jsonl(*rows: object) -> str:
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"


MC = {"question": "1+1=?", "choices": ["1", "2", "3", "4"], "answer": 1}


def test_mc_jsonl_takes_an_index_or_a_letter_and_keeps_extra_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "q.jsonl", jsonl(MC, {**MC, "answer": "c", "subject": "math"}))
    assert detect_layout(path) == "mc_jsonl"
    docs = load_docs(path)
    assert docs[0] == MC
    assert docs[1] == {**MC, "answer": 2, "subject": "math"}


def test_lm_eval_rows_normalise_query_gold_and_arc_style_choices(tmp_path: Path) -> None:
    rows = [
        {"query": "Sky colour?", "choices": ["red", "blue"], "gold": 1},
        {
            "input": "Grass?",
            "choices": {"text": ["green", "pink"], "label": ["X", "Y"]},
            "label": "X",
        },
    ]
    path = write(tmp_path, "lm.jsonl", jsonl(*rows))
    assert detect_layout(path) == "lm_eval_jsonl"
    assert load_docs(path) == [
        {"question": "Sky colour?", "choices": ["red", "blue"], "answer": 1},
        {"question": "Grass?", "choices": ["green", "pink"], "answer": 0},
    ]


def test_ceval_csv_keeps_id_and_explanation(tmp_path: Path) -> None:
    text = "id,question,A,B,C,D,answer,explanation\n0,天空是什么颜色？,红,蓝,绿,黄,B,常识\n"
    path = write(tmp_path, "ceval_dev.csv", text, bom=True)
    assert detect_layout(path) == "ceval_csv"
    assert load_docs(path) == [
        {
            "question": "天空是什么颜色？",
            "choices": ["红", "蓝", "绿", "黄"],
            "answer": 1,
            "id": "0",
            "explanation": "常识",
        }
    ]


def test_cmmlu_csv_with_its_unnamed_index_column(tmp_path: Path) -> None:
    text = ',Question,A,B,C,D,Answer\n0,"水的化学式,是?",H2O,CO2,O2,NaCl,A\n'
    path = write(tmp_path, "cmmlu.csv", text)
    assert detect_layout(path) == "cmmlu_csv"
    assert load_docs(path) == [
        {
            "question": "水的化学式,是?",
            "choices": ["H2O", "CO2", "O2", "NaCl"],
            "answer": 0,
            "id": "0",
        }
    ]


def test_mmlu_csv_has_no_header(tmp_path: Path) -> None:
    text = 'What is 2+2?,3,4,5,6,B\n"A, quoted",a,b,c,d,D\n'
    path = write(tmp_path, "math_test.csv", text, bom=True)
    assert detect_layout(path) == "mmlu_csv"
    docs = load_docs(path)
    assert [d["answer"] for d in docs] == [1, 3]
    assert docs[1]["question"] == "A, quoted"


def test_plain_jsonl_and_csv_rows_come_as_they_are(tmp_path: Path) -> None:
    rows = [{"prompt": "hi", "n": 1}, {"prompt": "yo", "n": 2}]
    path = write(tmp_path, "free.jsonl", jsonl(*rows), bom=True)
    assert detect_layout(path) == "jsonl"
    assert load_docs(path) == rows
    path = write(tmp_path, "free.csv", 'text,label\n你好,1\n"多行\n文本",0\n', bom=True)
    assert detect_layout(path) == "csv"
    assert load_docs(path) == [{"text": "你好", "label": "1"}, {"text": "多行\n文本", "label": "0"}]


def test_a_named_layout_overrides_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "q.jsonl", jsonl(MC))
    assert load_docs(path, "jsonl") == [MC]


@pytest.mark.parametrize(
    ("name", "text", "layout", "expected"),
    [
        (
            "q.jsonl",
            jsonl(MC, {**MC, "answer": "E"}),
            None,
            "line 2: answer: 'E' is outside the 4 choices (A-D)",
        ),
        ("q.jsonl", jsonl(MC, MC, {**MC, "answer": 7}), None, "line 3: answer: index 7 is outside"),
        ("q.jsonl", jsonl({**MC, "choices": []}), "mc_jsonl", "line 1: choices: empty"),
        ("q.jsonl", jsonl({"question": "x", "answer": 0}), "mc_jsonl", "line 1: choices: missing"),
        ("q.jsonl", jsonl(MC) + "\n{not json\n", None, "line 3: not JSON"),
        ("q.jsonl", jsonl(MC) + "[1, 2]\n", None, "line 2: a row must be a JSON object"),
        (
            "lm.jsonl",
            jsonl({"query": "q", "choices": ["a"]}),
            "lm_eval_jsonl",
            "line 1: gold|label|answer: missing",
        ),
        (
            "ceval.csv",
            "id,question,A,B,C,D,answer\n1,q,a,b,c,d,A\n2,q,a,b,c\n",
            None,
            "line 3: D: missing",
        ),
        ("ceval.csv", "id,question,A,B,C,D,answer\n1,q,a,b,c,d,F\n", None, "line 2: answer: 'F'"),
        ("mmlu.csv", 'q,a,b,c,d,A\n"q\nq",a,,c,d,B\n', "mmlu_csv", "line 2: B: empty choice"),
        ("free.csv", "a,b\n1,2\n3\n", None, "line 3: the row has 1 fields, the header 2"),
        ("empty.jsonl", "\n\n", None, "the file holds no rows"),
    ],
)
def test_wrong_shapes_name_the_line_and_the_field(
    tmp_path: Path, name: str, text: str, layout: str | None, expected: str
) -> None:
    with pytest.raises(DataError) as caught:
        load_docs(write(tmp_path, name, text), layout)
    assert expected in caught.value.message
    assert caught.value.code == "invalid_dataset"
    assert caught.value.status == 400


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes(b"question,answer\nok,1\n" + "天空,2\n".encode("gbk"))
    with pytest.raises(DataError, match=r"line 3: byte 0x[0-9a-f]{2} at column 1 is not UTF-8"):
        load_docs(path)


def test_files_over_the_limit_are_refused_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "big.jsonl", jsonl(*[MC] * 50))
    with pytest.raises(DataError, match="may be 100 at most"):
        load_docs(path, max_bytes=100)
    assert len(load_docs(path, max_bytes=10_000)) == 50


def test_unknown_layouts_and_missing_files_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown layout 'parquet'"):
        parse_docs(jsonl(MC).encode(), filename="q.jsonl", layout="parquet")
    with pytest.raises(DataError, match=r"cannot read nowhere\.jsonl"):
        load_docs(tmp_path / "nowhere.jsonl")
