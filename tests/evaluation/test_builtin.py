"""The built-in tasks and suites: every file parses, its data loads, it stays small."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from evaluation.builtin import generate
from evaluation.harness import scoring
from evaluation.harness.importers import load_docs
from evaluation.harness.spec import parse_suite, parse_task

BUILTIN = Path(generate.__file__).parent
TASKS = sorted((BUILTIN / "tasks").glob("*.yaml"))
SUITES = sorted((BUILTIN / "suites").glob("*.yaml"))


def read(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), path
    return loaded


def test_there_are_zh_and_en_tasks_of_every_kind() -> None:
    kinds = {(read(p)["output_type"], lang) for p in TASKS for lang in read(p)["tags"]}
    for output_type in ("generate_until", "multiple_choice", "refusal"):
        assert {(output_type, "zh"), (output_type, "en")} <= kinds
    assert any(kind == "perplexity" for kind, _ in kinds)
    assert {p.stem for p in SUITES} == {"general-zh", "general-en", "safety"}


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_each_task_names_itself_loads_its_data_and_stays_small(path: Path) -> None:
    task = read(path)
    assert task["task"] == path.stem
    dataset = task["dataset"]
    docs = load_docs(BUILTIN / "data" / dataset["builtin"], dataset.get("layout"))
    assert 1 <= len(docs) <= 60
    assert task.get("generation", {}).get("max_tokens", 0) <= 32
    if task["output_type"] == "multiple_choice":
        assert all(len(doc["choices"]) == 4 for doc in docs)
    if task["output_type"] == "refusal":
        flags = [doc["should_refuse"] for doc in docs]
        assert True in flags and False in flags


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_each_task_parses_with_the_harness(path: Path) -> None:
    spec = parse_task(path.read_text(encoding="utf-8"), name=path.stem)
    assert spec.task == path.stem


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_each_task_renders_requests_for_every_doc(path: Path) -> None:
    task = parse_task(path.read_text(encoding="utf-8"), name=path.stem)
    dataset = read(path)["dataset"]
    docs = load_docs(BUILTIN / "data" / dataset["builtin"], dataset.get("layout"))
    instances = scoring.build_instances(task, docs, None)
    assert len(instances) == len(docs)
    assert all(instance.requests for instance in instances)
    if task.output_type == "multiple_choice":
        assert all(len(instance.requests) == 4 for instance in instances)


def test_the_ahp_suite_weighs_common_sense_first() -> None:
    suite = parse_suite((BUILTIN / "suites" / "general-en.yaml").read_text())
    weights = suite.weights()
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["commonsense_en"] > weights["arithmetic_en"] > weights["instruction_en"]


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_each_suite_lists_built_in_tasks(path: Path) -> None:
    suite = read(path)
    assert suite["suite"] == path.stem
    assert suite["aggregation"] in {"micro", "macro", "weighted"}
    names = {p.stem for p in TASKS}
    assert {entry["task"] for entry in suite["tasks"]} <= names
    if "ahp" in suite:
        assert len(suite["ahp"]["matrix"]) == len(suite["tasks"])


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_each_suite_parses_with_the_harness(path: Path) -> None:
    suite = parse_suite(path.read_text(encoding="utf-8"))
    assert suite.suite == path.stem


def test_the_generator_reproduces_the_shipped_arithmetic() -> None:
    for language in ("en", "zh"):
        shipped = (BUILTIN / "data" / f"arithmetic_{language}.jsonl").read_text(encoding="utf-8")
        assert [json.loads(line) for line in shipped.splitlines()] == generate.rows(language)


def test_arithmetic_answers_are_right() -> None:
    for doc in load_docs(BUILTIN / "data" / "arithmetic_en.jsonl"):
        words = doc["question"].removeprefix("What is ").removesuffix("?").split()
        a, op, b = int(words[0]), words[1], int(words[2])
        expected = {"plus": a + b, "minus": a - b, "times": a * b}[op]
        assert doc["answer"] == str(expected)
