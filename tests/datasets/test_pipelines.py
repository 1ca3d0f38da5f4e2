from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from datasets.pipelines import (
    STEPS,
    PipelineCancelled,
    PipelineError,
    Row,
    parse_steps,
    run_pipeline,
)
from tests.datasets.pipeline_helpers import rows_of, run


def texts(data: list[dict]) -> list[str]:
    return [item["text"] for item in data]


# --- parameters -------------------------------------------------------------------


def test_every_step_of_the_issue_is_registered():
    assert STEPS.names() == [
        "dedup_exact",
        "dedup_near",
        "filter_language",
        "filter_length",
        "filter_regex",
        "redact_pii",
        "split",
        "to_chat",
    ]


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ([{"step": "dedup_near", "threshold": 1.5}], "steps[0].threshold"),
        (
            [{"step": "dedup_exact"}, {"step": "dedup_near", "threshold": "high"}],
            "steps[1].threshold",
        ),
        ([{"step": "dedup_near", "num_perm": True}], "steps[0].num_perm"),
        ([{"step": "dedup_near", "colour": 1}], "steps[0].colour"),
        ([{"step": "dedup_exact", "fields": "text"}], "steps[0].fields"),
        ([{"step": "filter_regex", "pattern": "(unclosed"}], "steps[0].pattern"),
        ([{"step": "filter_regex", "pattern": "a" * 501}], "steps[0].pattern"),
        ([{"step": "filter_regex"}], "steps[0].pattern"),
        ([{"step": "filter_regex", "pattern": "x", "action": "maybe"}], "steps[0].action"),
        ([{"step": "filter_language", "languages": ["zh", "klingon"]}], "steps[0].languages"),
        ([{"step": "filter_length"}], "steps[0].min_chars"),
        ([{"step": "filter_length", "min_chars": 10, "max_chars": 5}], "steps[0].min_chars"),
        ([{"step": "filter_length", "min_chars": -1}], "steps[0].min_chars"),
        (
            [{"step": "split", "validation_fraction": 0.1, "validation_size": 10}],
            "steps[0].validation_fraction",
        ),
        ([{"step": "split", "validation_size": 0}], "steps[0].validation_size"),
        ([{"step": "redact_pii", "kinds": ["passport"]}], "steps[0].kinds"),
        ([{"step": "redact_pii", "replacements": {"email": 3}}], "steps[0].replacements.email"),
        ([{"step": "to_chat", "source": "dolly"}], "steps[0].source"),
        ([{"threshold": 0.8}], "steps[0].step"),
        (["dedup_near"], "steps[0].step"),
        ([], "steps"),
        ({"step": "dedup_near"}, "steps"),
    ],
)
def test_bad_pipeline_is_refused_naming_the_field(spec, param):
    with pytest.raises(PipelineError) as caught:
        parse_steps(spec)
    assert caught.value.code == "invalid_pipeline"
    assert caught.value.param == param


def test_unknown_step_suggests_the_closest_name():
    with pytest.raises(PipelineError) as caught:
        parse_steps([{"step": "dedup_exact"}, {"step": "dedupe_near"}])
    assert caught.value.param == "steps[1].step"
    assert "Did you mean 'dedup_near'?" in caught.value.message


def test_integers_are_accepted_for_fractions_and_parameters_are_recorded(tmp_path):
    result, _ = run(
        [{"step": "dedup_near", "threshold": 1, "fields": ["text"]}],
        rows_of([{"text": "a"}]),
        tmp_path,
    )
    assert result.steps[0]["params"] == {
        "threshold": 1.0,
        "num_perm": 128,
        "ngram": 5,
        "fields": ["text"],
        "seed": 1,
    }


# --- dedup --------------------------------------------------------------------------


def test_dedup_exact_keeps_the_first_of_identical_rows(tmp_path):
    data = [
        {"text": "a", "id": 1},
        {"text": "b", "id": 2},
        {"id": 1, "text": "a"},
        {"text": "a", "id": 3},
    ]
    result, out = run([{"step": "dedup_exact"}], rows_of(data), tmp_path)
    assert out["train"] == [data[0], data[1], data[3]]
    assert result.removed_lines == {"0.dedup_exact": [3]}
    assert result.steps[0]["counters"] == {"removed": 1}


def test_dedup_exact_on_fields_with_normalisation(tmp_path):
    data = [
        {"text": "Hello  World", "id": 1},
        {"text": " hello world\n", "id": 2},
        {"text": "Hello World!", "id": 3},
    ]
    _, out = run(
        [{"step": "dedup_exact", "fields": ["text"], "normalize": True}], rows_of(data), tmp_path
    )
    assert [item["id"] for item in out["train"]] == [1, 3]


def test_dedup_near_keeps_the_first_of_each_cluster_and_every_distinct_row(tmp_path):
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    distinct = ["".join(rng.choice(letters + " ") for _ in range(120)) for _ in range(40)]
    hanzi = [chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(200)]
    distinct += ["".join(rng.choice(hanzi) for _ in range(80)) for _ in range(20)]
    # One character changed near the end of a 120/80-character text: Jaccard about 0.9.
    near = [text[:-3] + ("X" if text[-3] != "X" else "Y") + text[-2:] for text in distinct[::3]]
    data = [{"text": t} for t in distinct + near + [distinct[1].upper()]]

    result, out = run([{"step": "dedup_near", "threshold": 0.7}], rows_of(data), tmp_path)

    assert texts(out["train"]) == distinct
    assert result.steps[0]["counters"]["removed"] == len(near) + 1
    assert result.removed_lines["0.dedup_near"] == list(range(61, len(data) + 1))


def test_dedup_near_compares_only_the_named_fields(tmp_path):
    data = [
        {"q": "same question here, long enough", "a": "one"},
        {"q": "same question here, long enough", "a": "two"},
    ]
    _, whole = run([{"step": "dedup_near", "threshold": 0.95}], rows_of(data), tmp_path / "whole")
    _, by_q = run([{"step": "dedup_near", "fields": ["q"]}], rows_of(data), tmp_path / "q")
    assert len(whole["train"]) == 2
    assert by_q["train"] == data[:1]


# --- filters ------------------------------------------------------------------------


def test_filter_length_keeps_rows_within_bounds_inclusive(tmp_path):
    data = [{"text": "x" * n} for n in (1, 2, 5, 6)]
    _, out = run(
        [{"step": "filter_length", "min_chars": 2, "max_chars": 5}], rows_of(data), tmp_path
    )
    assert texts(out["train"]) == ["xx", "xxxxx"]


def test_filter_language_keeps_listed_languages(tmp_path):
    data = [
        {"text": "今天天气很好"},
        {"text": "The weather is nice"},
        {"text": "Погода хорошая"},
        {"text": "123"},
    ]
    _, out = run([{"step": "filter_language", "languages": ["zh", "en"]}], rows_of(data), tmp_path)
    assert texts(out["train"]) == ["今天天气很好", "The weather is nice"]


def test_filter_regex_drops_or_keeps_matching_rows(tmp_path):
    data = [
        {"text": "as an AI language model", "id": 1},
        {"text": "fine", "id": 2},
        {"text": "As An AI", "id": 3},
    ]
    dropped, out = run(
        [{"step": "filter_regex", "pattern": r"as an ai", "ignore_case": True}],
        rows_of(data),
        tmp_path / "d",
    )
    assert [item["id"] for item in out["train"]] == [2]
    assert dropped.removed_lines == {"0.filter_regex": [1, 3]}
    _, kept = run(
        [{"step": "filter_regex", "pattern": r"^fi", "action": "keep", "field": "text"}],
        rows_of(data),
        tmp_path / "k",
    )
    assert [item["id"] for item in kept["train"]] == [2]


def test_catastrophic_regex_fails_the_run_instead_of_hanging(tmp_path, monkeypatch):
    from datasets.pipelines import filters

    monkeypatch.setattr(filters, "MATCH_TIMEOUT", 0.05)
    rows = rows_of([{"text": "ok"}, {"text": "a" * 40 + "!"}])
    with pytest.raises(PipelineError) as caught:
        run(
            [{"step": "dedup_exact"}, {"step": "filter_regex", "pattern": r"(a|aa)+$"}],
            rows,
            tmp_path,
        )
    assert caught.value.param == "steps[1].pattern"
    assert "line 2" in caught.value.message
    assert list(tmp_path.iterdir()) == []


# --- split --------------------------------------------------------------------------


def test_split_gives_exact_sizes_and_is_reproducible_by_seed(tmp_path):
    rows = rows_of([{"i": i} for i in range(101)])
    spec = [{"step": "split", "validation_fraction": 0.1, "seed": 5}]
    first, out1 = run(spec, rows, tmp_path / "1")
    _, out2 = run(spec, rows, tmp_path / "2")
    _, out3 = run([{"step": "split", "validation_fraction": 0.1, "seed": 6}], rows, tmp_path / "3")

    assert first.rows_out == {"train": 91, "validation": 10}
    assert out1 == out2
    assert out1["validation"] != out3["validation"]
    assert sorted(r["i"] for r in out1["train"] + out1["validation"]) == list(range(101))
    assert first.steps[0]["counters"]["rows"] == {"train": 91, "validation": 10}


def test_split_counts_the_rows_left_by_earlier_steps(tmp_path):
    rows = rows_of([{"i": i % 30} for i in range(90)])  # 30 distinct rows
    result, out = run(
        [{"step": "dedup_exact"}, {"step": "split", "validation_size": 7}], rows, tmp_path
    )
    assert result.rows_out == {"train": 23, "validation": 7}
    assert sorted(r["i"] for r in out["train"] + out["validation"]) == list(range(30))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl", "validation.jsonl"]


def test_split_larger_than_the_data_fails(tmp_path):
    with pytest.raises(PipelineError) as caught:
        run([{"step": "split", "validation_size": 4}], rows_of([{"i": 1}]), tmp_path)
    assert caught.value.param == "steps[0].validation_size"


def test_split_leaves_other_splits_alone(tmp_path):
    rows = rows_of([{"i": i} for i in range(10)]) + rows_of([{"t": 1}], split="test")
    result, out = run([{"step": "split", "validation_size": 3}], rows, tmp_path)
    assert result.rows_out == {"train": 7, "validation": 3, "test": 1}
    assert out["test"] == [{"t": 1}]


# --- to_chat ------------------------------------------------------------------------


def test_to_chat_converts_each_layout_and_drops_rows_that_fit_none(tmp_path):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    data = [
        {"instruction": "翻译", "input": "hello", "output": "你好", "system": "你是翻译", "id": 1},
        {"instruction": "Say hi", "input": "", "output": "hi"},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"prompt": "1+1=", "completion": "2"},
        chat,
        {"text": "no layout"},
        {"conversations": [{"from": "narrator", "value": "?"}]},
    ]
    result, out = run([{"step": "to_chat"}], rows_of(data), tmp_path)

    user, assistant, system = "user", "assistant", "system"
    assert out["train"] == [
        {
            "messages": [
                {"role": system, "content": "你是翻译"},
                {"role": user, "content": "翻译\n\nhello"},
                {"role": assistant, "content": "你好"},
            ],
            "id": 1,
        },
        {"messages": [{"role": user, "content": "Say hi"}, {"role": assistant, "content": "hi"}]},
        {"messages": [{"role": user, "content": "q"}, {"role": assistant, "content": "a"}]},
        {"messages": [{"role": user, "content": "1+1="}, {"role": assistant, "content": "2"}]},
        chat,
    ]
    counters = result.steps[0]["counters"]
    assert counters == {
        "removed": 2,
        "converted": {"alpaca": 2, "sharegpt": 1, "prompt_completion": 1, "chat": 1},
    }
    assert result.removed_lines == {"0.to_chat": [6, 7]}


def test_to_chat_with_a_fixed_source_drops_other_layouts(tmp_path):
    data = [{"prompt": "p", "completion": "c"}, {"instruction": "i", "output": "o"}]
    _, out = run([{"step": "to_chat", "source": "prompt_completion"}], rows_of(data), tmp_path)
    assert len(out["train"]) == 1


# --- runner -------------------------------------------------------------------------


def test_runner_chains_steps_writes_utf8_and_reports_counts(tmp_path):
    data = [{"text": "你好 13812345678"}, {"text": "你好 13812345678"}, {"text": "短"}]
    spec = [
        {"step": "dedup_exact"},
        {"step": "redact_pii"},
        {"step": "filter_length", "min_chars": 2},
    ]
    result, out = run(spec, rows_of(data), tmp_path)

    assert out == {"train": [{"text": "你好 [手机号]"}]}
    assert (tmp_path / "train.jsonl").read_text(encoding="utf-8") == '{"text":"你好 [手机号]"}\n'
    assert result.rows_in == 3
    assert result.rows_out == {"train": 1}
    assert result.removed_lines == {"0.dedup_exact": [2], "2.filter_length": [3]}
    assert [s["name"] for s in result.steps] == ["dedup_exact", "redact_pii", "filter_length"]


def test_runner_cancels_and_removes_partial_output(tmp_path, monkeypatch):
    from datasets.pipelines import runner

    monkeypatch.setattr(runner, "CHECK_INTERVAL", 0.0)
    asked: list[int] = []

    def source() -> Iterator[Row]:
        return iter(rows_of([{"i": i} for i in range(2000)]))

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(PipelineCancelled):
        run_pipeline(
            parse_steps([{"step": "dedup_exact"}]), source, tmp_path, should_stop=should_stop
        )
    assert list(tmp_path.iterdir()) == []


def test_runner_reports_progress_in_source_rows(tmp_path):
    seen: list[int] = []
    rows = rows_of([{"i": i} for i in range(300)])
    run_pipeline(
        parse_steps([{"step": "dedup_exact"}]), lambda: iter(rows), tmp_path, progress=seen.append
    )
    assert seen[-1] == 300


def test_runner_refuses_split_names_unfit_for_files(tmp_path):
    with pytest.raises(PipelineError) as caught:
        run([{"step": "dedup_exact"}], rows_of([{"i": 1}], split="../etc"), tmp_path)
    assert caught.value.param == "split"
