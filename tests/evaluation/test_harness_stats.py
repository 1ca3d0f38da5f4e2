"""Bootstrap errors, AHP weights and task/suite aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.harness.aggregate import aggregate_suite, aggregate_task
from evaluation.harness.ahp import ahp_weights
from evaluation.harness.requests import SampleResult
from evaluation.harness.spec import parse_suite, parse_task
from evaluation.harness.stats import bootstrap_stderr

VALUES = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0] * 5


def test_bootstrap_is_deterministic_for_a_seed_and_near_the_analytic_error() -> None:
    first = bootstrap_stderr(VALUES, iters=1000, seed=1234)

    assert bootstrap_stderr(VALUES, iters=1000, seed=1234) == first
    assert bootstrap_stderr(VALUES, iters=1000, seed=99) != first
    analytic = np.std(VALUES, ddof=1) / np.sqrt(len(VALUES))
    assert first == pytest.approx(analytic, rel=0.1)
    assert bootstrap_stderr([1.0], iters=1000, seed=1) == 0.0


def test_ahp_weights_and_consistency_ratio_of_a_known_matrix() -> None:
    # Saaty's textbook matrix: λmax ≈ 3.0385, CI ≈ 0.0193, CR ≈ 0.033.
    result = ahp_weights([[1, 3, 5], [1 / 3, 1, 3], [1 / 5, 1 / 3, 1]])

    assert result.weights == pytest.approx((0.6370, 0.2583, 0.1047), abs=1e-4)
    assert result.lambda_max == pytest.approx(3.0385, abs=1e-4)
    assert result.consistency_ratio == pytest.approx(0.0332, abs=1e-3)


def test_ahp_refuses_inconsistent_or_non_reciprocal_matrices() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        ahp_weights([[1, 9, 1 / 9], [1 / 9, 1, 9], [9, 1 / 9, 1]])
    with pytest.raises(ValueError, match=r"must be 1/"):
        ahp_weights([[1, 3], [3, 1]])


MC = (
    "task: t\ndataset: {builtin: x.jsonl}\noutput_type: multiple_choice\n"
    "doc_to_text: q\ndoc_to_target: a\ndoc_to_choice: c\n"
)


def _sample(index: int, acc: float, error: str = "") -> SampleResult:
    metrics = {} if error else {"acc": acc, "acc_norm": acc}
    return SampleResult(index, "p", 0, None, "", metrics, error)


def test_errors_count_as_zero_for_accuracy_and_the_order_does_not_matter() -> None:
    task = parse_task(MC)
    samples = [_sample(i, v) for i, v in enumerate(VALUES[:9])] + [_sample(9, 0.0, "timeout")]

    result = aggregate_task(task, samples)

    assert result["acc"]["value"] == pytest.approx(6 / 10)
    assert result["acc"]["n"] == 10 and result["n_errors"] == 1
    assert aggregate_task(task, list(reversed(samples))) == result


def _task(value: float, stderr: float, n: int) -> dict:  # type: ignore[type-arg]
    return {"acc": {"value": value, "stderr": stderr, "n": n}, "primary": "acc", "n_errors": 0}


PER_TASK = {"ns/a": _task(0.8, 0.03, 100), "ns/b": _task(0.5, 0.04, 300)}


def test_suite_macro_micro_and_weighted_aggregation() -> None:
    base = "suite: s\ntasks: [{task: ns/a, weight: 3}, {task: ns/b, weight: 1}]\n"

    macro = aggregate_suite(parse_suite(base + "aggregation: macro\n"), PER_TASK)
    micro = aggregate_suite(parse_suite(base + "aggregation: micro\n"), PER_TASK)
    weighted = aggregate_suite(parse_suite(base + "aggregation: weighted\n"), PER_TASK)

    assert macro["score"] == pytest.approx(0.65)
    assert macro["stderr"] == pytest.approx(np.sqrt(0.03**2 + 0.04**2) / 2)
    assert micro["score"] == pytest.approx((0.8 * 100 + 0.5 * 300) / 400)
    assert micro["weights"] == {"ns/a": 0.25, "ns/b": 0.75}
    assert weighted["score"] == pytest.approx(0.75 * 0.8 + 0.25 * 0.5)
    assert weighted["aggregation"] == "weighted"


def test_suite_with_ahp_weights_and_a_missing_task() -> None:
    suite = parse_suite(
        "suite: s\ntasks: [a, b, c]\nahp: {matrix: [[1, 3, 5], [0.333, 1, 3], [0.2, 0.333, 1]]}\n"
    )

    result = aggregate_suite(suite, {"ns/a": _task(1.0, 0.0, 10), "ns/b": _task(0.0, 0.0, 10)})

    assert result["missing"] == ["c"]
    assert result["score"] == pytest.approx(0.637 / (0.637 + 0.258), abs=1e-3)
