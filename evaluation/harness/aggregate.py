"""Task metrics from scored samples, and a suite's score from its tasks' metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evaluation.harness.metrics import make_metric
from evaluation.harness.requests import SampleResult
from evaluation.harness.spec import SuiteSpec, TaskSpec
from evaluation.harness.stats import bootstrap_ratio_stderr


def aggregate_task(
    task: TaskSpec, samples: Sequence[SampleResult], *, iters: int = 1000, seed: int = 1234
) -> dict[str, Any]:
    """``{metric: {"value", "stderr", "n"}, …, "n_errors": k, "primary": name}``.

    Samples are taken in ``doc_index`` order so the bootstrap is the same whatever order
    they were stored in. A sample with ``error`` counts as 0 for accuracy-like metrics and
    is left out of the others; a metric no sample applies to has ``value`` None.
    """
    ordered = sorted(samples, key=lambda s: s.doc_index)
    rows = [s.metrics for s in ordered if not s.error]
    n_errors = len(ordered) - len(rows)
    result: dict[str, Any] = {}
    for spec in task.metrics:
        metric = make_metric(spec.name, spec.options)
        failed = [{metric.name: 0.0}] * n_errors if metric.zero_on_error else []
        num, den = metric.terms(rows + failed)
        result[metric.name] = _summary(num, den, metric.transform, iters, seed)
    result["n_errors"] = n_errors
    result["primary"] = task.primary_metric
    return result


def _summary(num: list[float], den: list[float], transform: Any, iters: int,
             seed: int) -> dict[str, Any]:  # fmt: skip
    if not num or not sum(den):
        return {"value": None, "stderr": None, "n": len(num)}
    value = float(transform(np.array([math.fsum(num) / math.fsum(den)]))[0])
    stderr = bootstrap_ratio_stderr(num, den, transform=transform, iters=iters, seed=seed)
    return {"value": value, "stderr": stderr, "n": len(num)}


def aggregate_suite(suite: SuiteSpec, per_task: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The suite score from each task's primary metric.

    ``per_task`` maps task refs (``ns/name``, or the bare names the suite lists) to
    :func:`aggregate_task` results. ``macro`` averages tasks, ``micro`` weighs them by
    their sample counts, ``weighted`` by the suite's (or AHP) weights. The stderr
    combines the tasks' errors as independent: ``sqrt(Σ wᵢ² seᵢ²)``. Tasks without a
    value are listed in ``missing`` and left out; none left gives ``score`` None.
    """
    found: dict[str, Summary] = {}
    missing = []
    for entry in suite.tasks:
        primary = _primary(entry.task, per_task)
        if primary is None:
            missing.append(entry.task)
        else:
            found[entry.task] = primary
    weights = _weights(suite, found)
    if not weights:
        return {"score": None, "stderr": None, "aggregation": suite.aggregation,
                "weights": {}, "missing": missing}  # fmt: skip
    score = math.fsum(w * found[t][0] for t, w in weights.items())
    stderr = math.sqrt(math.fsum((w * found[t][1]) ** 2 for t, w in weights.items()))
    return {"score": score, "stderr": stderr, "aggregation": suite.aggregation,
            "weights": weights, "missing": missing}  # fmt: skip


Summary = tuple[float, float, int]  # value, stderr, n


def _primary(ref: str, per_task: Mapping[str, Mapping[str, Any]]) -> Summary | None:
    metrics = per_task.get(ref)
    if metrics is None:
        named = [v for k, v in per_task.items() if k.rsplit("/", 1)[-1] == ref.rsplit("/", 1)[-1]]
        metrics = named[0] if len(named) == 1 else None
    if metrics is None:
        return None
    summary = metrics.get(str(metrics.get("primary")))
    if not isinstance(summary, Mapping) or summary.get("value") is None:
        return None
    return float(summary["value"]), float(summary.get("stderr") or 0.0), int(summary["n"])


def _weights(suite: SuiteSpec, found: Mapping[str, Summary]) -> dict[str, float]:
    if suite.aggregation == "micro":
        raw = {t: float(found[t][2]) for t in found}
    elif suite.aggregation == "weighted":
        declared = suite.weights()
        raw = {t: declared[t] for t in found}
    else:
        raw = {t: 1.0 for t in found}
    total = math.fsum(raw.values())
    return {t: w / total for t, w in raw.items()} if total > 0 else {}
