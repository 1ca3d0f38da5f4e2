"""Task and suite YAML: what parses, and errors that name the field, the reason and the line."""

from __future__ import annotations

import pytest

from evaluation.harness.spec import (
    MAX_DOCUMENT_BYTES,
    SpecError,
    SuiteSpec,
    TaskSpec,
    parse_suite,
    parse_task,
    spec_sha256,
)

ARITHMETIC = """\
task: arithmetic_zh
description: 两位数加减法
tags: [zh, arithmetic]
dataset:
  builtin: arithmetic_zh.jsonl
  split: test
output_type: generate_until
doc_to_text: "问题：{{ question }}\\n答案："
doc_to_target: "{{ answer }}"
generation: {max_tokens: 32, until: ["\\n\\n"], temperature: 0.0}
filters: [{name: regex, pattern: "(-?[0-9.,]+)", group: 1}, {name: take_first}]
metrics:
  - {name: exact_match, ignore_case: true}
  - {name: numeric, tolerance: 1.0e-6}
limit: 200
"""


def _error(text: str, parse=parse_task) -> SpecError:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError) as info:
        parse(text)
    return info.value


def test_a_generation_task_parses_with_its_filters_and_metrics() -> None:
    spec = parse_task(ARITHMETIC)

    assert spec.task == "arithmetic_zh"
    assert spec.dataset.builtin == "arithmetic_zh.jsonl"
    assert spec.generation.until == ("\n\n",)
    assert [f.name for f in spec.filters] == ["regex", "take_first"]
    assert spec.metrics[1].options == {"tolerance": 1e-6}
    assert spec.primary_metric == "exact_match"


def test_a_multiple_choice_task_defaults_to_acc_and_acc_norm_and_lm_eval_delimiters() -> None:
    spec = parse_task(
        "output_type: multiple_choice\ndataset: {builtin: mc.jsonl}\n"
        "doc_to_text: '{{ question }}'\ndoc_to_target: '{{ answer }}'\n"
        "doc_to_choice: '{{ choices }}'\n",
        name="mc_en",
    )

    assert spec.task == "mc_en"
    assert [m.name for m in spec.metrics] == ["acc", "acc_norm"]
    assert (spec.target_delimiter, spec.fewshot_delimiter) == (" ", "\n\n")
    assert (spec.num_fewshot, spec.fewshot_seed) == (0, 1234)


def test_the_stored_json_reads_back_to_the_same_spec_and_hash() -> None:
    spec = parse_task(ARITHMETIC)

    again = TaskSpec.from_json(spec.to_json())

    assert again == spec
    assert spec_sha256(again) == spec_sha256(spec)
    assert spec_sha256(parse_task(ARITHMETIC.replace("limit: 200", "limit: 100"))) != (
        spec_sha256(spec)
    )


def test_malformed_yaml_is_reported_with_its_line() -> None:
    error = _error("task: x\noutput_type: [generate_until\ndataset: {builtin: a}\n")

    assert error.code == "invalid_task"
    assert error.status == 400
    assert "malformed YAML" in error.message
    assert "line 3" in error.message


def test_an_unknown_key_is_named_with_a_suggestion_and_its_line() -> None:
    error = _error(ARITHMETIC.replace("doc_to_target:", "doc_to_targt:"))

    assert error.message.startswith("doc_to_targt: unknown key (did you mean 'doc_to_target'?)")
    assert "(line 9)" in error.message
    assert error.param == "doc_to_targt"


def test_an_unknown_metric_is_named_by_its_path_with_a_suggestion() -> None:
    error = _error(ARITHMETIC.replace("name: numeric", "name: numerc"))

    assert error.message.startswith("metrics[1].name: unknown metric 'numerc'")
    assert "did you mean 'numeric'?" in error.message
    assert "(line 14)" in error.message


def test_a_metric_of_another_output_type_is_refused() -> None:
    error = _error(ARITHMETIC.replace("name: numeric, tolerance: 1.0e-6", "name: acc_norm"))

    assert error.message.startswith("metrics[1].name: 'acc_norm' does not apply to generate_until")


def test_a_wrong_option_type_names_the_option() -> None:
    error = _error(ARITHMETIC.replace("tolerance: 1.0e-6", "tolerance: small"))

    assert error.message.startswith("metrics[1].tolerance: expected float, got a string")


def test_a_filter_pattern_that_does_not_compile_is_refused() -> None:
    error = _error(ARITHMETIC.replace('pattern: "(-?[0-9.,]+)"', 'pattern: "(-?[0-9"'))

    assert error.message.startswith("filters[0]: invalid regular expression")


def test_a_template_that_does_not_compile_is_refused_with_the_template_line() -> None:
    error = _error(ARITHMETIC.replace("{{ question }}", "{{ question "))

    assert error.message.startswith("doc_to_text: template does not compile: line 2")
    assert error.param == "doc_to_text"


def test_wrong_types_and_missing_fields_are_named() -> None:
    assert _error(ARITHMETIC.replace("limit: 200", "limit: many")).message.startswith(
        "limit: expected an integer, got a string"
    )
    assert _error(ARITHMETIC.replace("output_type: generate_until\n", "")).message.startswith(
        "output_type: required"
    )
    assert _error("- a\n- b\n").message.startswith("document: expected a mapping, got a list")


def test_a_dataset_must_name_exactly_one_source() -> None:
    both = ARITHMETIC.replace("  split: test", "  hub: acme/arith@2\n  split: test")

    assert _error(both).message.startswith("dataset: name exactly one source")
    assert _error(ARITHMETIC.replace("arithmetic_zh.jsonl", "../etc/passwd")).message.startswith(
        "dataset.builtin: '../etc/passwd' is not a valid file"
    )


def test_a_yaml_bomb_is_refused_before_it_expands() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, prev in zip("bcdefg", "abcdef", strict=True):
        bomb += f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]\n"

    error = _error(bomb)

    assert "expands to more than" in error.message


def test_a_document_over_256_kib_is_refused() -> None:
    big = ARITHMETIC + "# " + "x" * MAX_DOCUMENT_BYTES + "\n"

    assert "larger than 256 KiB" in _error(big).message


def test_a_duplicate_key_is_refused() -> None:
    error = _error(ARITHMETIC + "limit: 10\n")

    assert error.message.startswith("limit: duplicate key")


SUITE = """\
suite: zh_basics
description: 中文基础
tasks:
  - {task: arithmetic_zh, weight: 2}
  - openmaas/commonsense_zh
  - {task: refusal_zh}
aggregation: weighted
"""


def test_a_suite_parses_with_normalised_weights() -> None:
    suite = parse_suite(SUITE)

    assert [t.task for t in suite.tasks] == ["arithmetic_zh", "openmaas/commonsense_zh",
                                             "refusal_zh"]  # fmt: skip
    assert suite.weights() == {"arithmetic_zh": 0.5, "openmaas/commonsense_zh": 0.25,
                               "refusal_zh": 0.25}  # fmt: skip
    assert SuiteSpec.from_json(suite.to_json()) == suite


def test_a_suite_takes_ahp_weights_and_refuses_inconsistent_judgements() -> None:
    consistent = SUITE + "ahp:\n  matrix: [[1, 3, 5], [0.333, 1, 3], [0.2, 0.333, 1]]\n"
    inconsistent = SUITE + "ahp:\n  matrix: [[1, 9, 0.111], [0.111, 1, 9], [9, 0.111, 1]]\n"

    weights = parse_suite(consistent).weights()

    assert weights["arithmetic_zh"] == pytest.approx(0.637, abs=1e-3)
    error = _error(inconsistent, parse_suite)
    assert error.code == "invalid_suite"
    assert error.message.startswith("ahp.matrix: the comparisons are inconsistent")


def test_a_suite_error_names_the_task_entry() -> None:
    error = _error(SUITE.replace("weight: 2", "weight: -1"), parse_suite)

    assert error.message.startswith("tasks[0].weight: must be positive")


def test_a_spec_is_hashable_and_a_prompt_is_required_but_for_perplexity() -> None:
    assert hash(parse_task(ARITHMETIC)) == hash(parse_task(ARITHMETIC))
    assert _error(ARITHMETIC.replace("doc_to_text:", "# doc_to_text:")).message.startswith(
        "doc_to_text: required"
    )
    rolling = "task: w\ndataset: {builtin: w.jsonl}\noutput_type: perplexity\ndoc_to_target: t\n"
    assert parse_task(rolling).metrics[0].name == "word_perplexity"
