"""Prometheus metrics of the gateway and the pool (``prometheus-client``).

The gateway counts its inference requests with :func:`observe_all`, a batch of usage
rows (:data:`~compute.metering.ROW`) at a time, as it publishes them. The pool's
gauges (replicas by state, node heartbeat age, GPUs) are read from the database when
``/metrics`` is scraped, by :class:`PoolCollector`.

With several web worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory shared by them (wiped before start): the counters and histograms are then
kept in files there and :func:`exposition` sums them across processes.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import Counter as CountOf
from collections.abc import Iterable, Iterator
from dataclasses import astuple
from itertools import repeat
from operator import itemgetter, truediv
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric

from compute.metering import ROW, Row, UsageEvent
from compute.metering.pool import pool_gauges

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
UNROUTED = "(unrouted)"

REQUESTS = Counter(
    "openmaas_inference_requests",
    "Inference requests answered by the gateway, by model and HTTP status.",
    ["model", "status"],
)
PROMPT_TOKENS = Counter(
    "openmaas_prompt_tokens", "Prompt tokens as the engine counted them.", ["model"]
)
COMPLETION_TOKENS = Counter(
    "openmaas_completion_tokens", "Completion tokens as the engine counted them.", ["model"]
)
LATENCY = Histogram(
    "openmaas_request_latency_seconds",
    "Time from the request's arrival to the end of its answer.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "openmaas_time_to_first_token_seconds",
    "Streams: time from the request's arrival to its first content chunk.",
    ["model"],
    buckets=TTFT_BUCKETS,
)


class _ModelSeries:
    """One model's children of the metrics, looked up once (``labels()`` takes a lock
    and builds its key on every call, which costs more than the increments)."""

    __slots__ = ("completion", "latency", "prompt", "requests", "ttft")

    def __init__(self, model: str) -> None:
        self.requests: dict[int, Any] = {}
        self.prompt = PROMPT_TOKENS.labels(model)
        self.completion = COMPLETION_TOKENS.labels(model)
        self.latency = LATENCY.labels(model)
        self.ttft = TTFT.labels(model)


_series: dict[str, _ModelSeries] = {}


def _series_of(model: str) -> _ModelSeries:
    series = _series.get(model)
    if series is None:
        series = _series[model] = _ModelSeries(model)
    return series


def observe(event: UsageEvent) -> None:
    """Count the request, its tokens, latency and time to first token by model.

    A request that reached no model (unknown name, refused before routing) is counted
    under ``(unrouted)``: client-chosen names never become label values.
    """
    observe_all([(*astuple(event)[:-1], None, None)])


_MODEL, _VERSION, _STATUS, _PROMPT, _COMPLETION, _LATENCY, _TTFT = (
    ROW.index(name)
    for name in (
        "model",
        "model_version_id",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "ttft_ms",
    )
)
_MODEL_VERSION_STATUS = itemgetter(_MODEL, _VERSION, _STATUS)
_PROMPT_OF, _COMPLETION_OF, _LATENCY_OF, _TTFT_OF = (
    itemgetter(i) for i in (_PROMPT, _COMPLETION, _LATENCY, _TTFT)
)


def observe_all(rows: list[Row]) -> None:
    """:func:`observe` for many events, as rows (:data:`~compute.metering.ROW`): each
    counter and histogram bucket moves once per batch (each move takes a lock), and the
    rows are read by C loops (``map``, ``Counter``) rather than one by one in Python:
    this runs in the gateway's process, once per batch of usage events."""
    if not rows:
        return
    keys = list(map(_MODEL_VERSION_STATUS, rows))
    # Most batches are one model's successes: one key, counted without hashing each.
    statuses = {keys[0]: len(keys)} if keys.count(keys[0]) == len(keys) else CountOf(keys)
    models: set[str] = set()
    for (model, version, status), count in statuses.items():
        label = model if version is not None else UNROUTED
        models.add(label)
        series = _series_of(label)
        child = series.requests.get(status)
        if child is None:
            child = series.requests[status] = REQUESTS.labels(label, str(status))
        child.inc(count)
    if len(models) == 1:
        _observe_model(_series_of(models.pop()), rows)
        return
    by_model: dict[str, list[Row]] = {}
    for row in rows:
        label = row[_MODEL] if row[_VERSION] is not None else UNROUTED
        by_model.setdefault(label, []).append(row)
    for label, group in by_model.items():
        _observe_model(_series_of(label), group)


def _observe_model(series: _ModelSeries, rows: list[Row]) -> None:
    """One model's tokens, latencies and times to first token."""
    prompt = sum(map(_PROMPT_OF, rows))
    completion = sum(map(_COMPLETION_OF, rows))
    if prompt:
        series.prompt.inc(prompt)
    if completion:
        series.completion.inc(completion)
    observe_many(series.latency, list(map(truediv, map(_LATENCY_OF, rows), repeat(1000))))
    ttfts = [ms / 1000 for ms in map(_TTFT_OF, rows) if ms is not None]
    if ttfts:
        observe_many(series.ttft, ttfts)


def observe_many(histogram: Any, values: list[float]) -> None:
    """``histogram.observe`` of each value, moving each bucket once. prometheus-client
    has no batch observe, so this adds to the child's bucket and sum values as its
    ``observe`` does (by its bucket bounds: the first bound at or above the value),
    through its private attributes; should a release rename them, it observes one by
    one."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    total.inc(sum(values))
    ordered = sorted(values)
    below = 0  # values in the buckets before this one
    for bound, bucket in zip(bounds, buckets, strict=True):
        upto = bisect_right(ordered, bound, below)  # values at or below the bound
        if upto > below:
            bucket.inc(upto - below)
            below = upto


class PoolCollector:
    """Gauges of the compute pool, read from the database at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield from pool_gauges()

    def describe(self) -> Iterable[Metric]:
        return []


def exposition() -> bytes:
    """The text exposition of this process's (or, in multiprocess mode, all processes')
    request metrics, plus the pool's gauges."""
    registry = request_registry()
    registry.register(PoolCollector())
    return generate_latest(registry)


def request_registry() -> CollectorRegistry:
    """A registry of the request metrics: this process's, or in multiprocess mode the sum
    over every process that wrote to ``PROMETHEUS_MULTIPROC_DIR``."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    return registry
