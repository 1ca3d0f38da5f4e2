"""Running one task's instances against a client: concurrency, scoring, chunked hand-over.

Instances are grouped into chunks of about ``client.batch_size`` requests (one HTTP
request for log-likelihoods); ``client.concurrency`` chunks are in flight. Each finished
chunk is scored at once and its samples are handed to ``on_samples`` in batches, so the
caller can store them while the rest runs (and a resumed run skips them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from asgiref.sync import sync_to_async

from evaluation.harness.client import EndpointError, OpenAIClient
from evaluation.harness.requests import (
    GenerationRequest,
    Instance,
    LoglikelihoodRequest,
    RollingRequest,
    SampleResult,
)
from portal.errors import PlatformError

logger = logging.getLogger(__name__)

ScoreFn = Callable[[Any, Instance, list[Any]], SampleResult]
Scored = list[tuple[SampleResult, EndpointError | None]]  # a sample and the failure behind it
ABORT_WINDOW = 20  # more than half of the first samples failing aborts the task
POLL_S = 1.0  # how often ``should_stop`` is asked while requests are in flight
FLUSH_EVERY = 32  # samples per ``on_samples`` call ...
FLUSH_AFTER_S = 2.0  # ... or fewer, once this long has passed since the last call
REQUEST_TYPES = (LoglikelihoodRequest, RollingRequest, GenerationRequest)


def default_score(task: Any, instance: Instance, responses: list[Any]) -> SampleResult:
    """``evaluation.harness.scoring.score``, imported when first needed."""
    from evaluation.harness.scoring import score

    result: SampleResult = score(task, instance, responses)
    return result


async def run_task(
    task: Any,
    instances: Sequence[Instance],
    client: OpenAIClient,
    *,
    on_samples: Callable[[list[SampleResult]], None],
    should_stop: Callable[[], bool],
    score: ScoreFn = default_score,
    judge: OpenAIClient | None = None,
) -> None:
    """Run and score ``instances``, handing each finished sample to ``on_samples`` once.

    For a judge task ``judge`` is the client of the judging model: each answer is sent to
    it with the task's rubric (:func:`~evaluation.harness.scoring.build_judge_request`)
    and its verdict is scored with the answer.

    ``on_samples`` and ``should_stop`` are plain functions called one at a time through
    ``asgiref``'s thread-sensitive ``sync_to_async``, so they may use the Django ORM (call
    ``run_task`` via ``async_to_sync`` to keep them in the caller's thread). When
    ``should_stop()`` turns true, in-flight requests are cancelled, finished samples are
    handed over and the function returns. A request that still fails after the client's
    retries gives its sample an ``error``; raises :class:`EndpointError` when more than
    half of the first ``ABORT_WINDOW`` samples failed so (their samples are not handed
    over, so a resumed run retries them).
    """
    for instance in instances:
        check_requests(instance)
    runner = _Runner(task, client, score, on_samples, should_stop, total=len(instances))
    runner.judge = judge
    await runner.run(chunked(instances, client.batch_size))


def check_requests(instance: Instance) -> None:
    for request in instance.requests:
        if not isinstance(request, REQUEST_TYPES):
            raise TypeError(f"doc {instance.doc_index}: unknown request {type(request).__name__}")


def chunked(instances: Sequence[Instance], batch_size: int) -> Iterator[list[Instance]]:
    """Consecutive instances holding about ``batch_size`` requests (at least one instance)."""
    chunk: list[Instance] = []
    size = 0
    for instance in instances:
        chunk.append(instance)
        size += len(instance.requests)
        if size >= batch_size:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


async def answer(client: OpenAIClient, chunk: list[Instance]) -> list[list[Any]]:
    """The client's responses to every request of ``chunk``, per instance and in order.

    Requests of one kind across the chunk go to the client together, so log-likelihoods of
    several instances share a batch.
    """
    where: dict[type, list[tuple[int, int]]] = {}
    for i, instance in enumerate(chunk):
        for j, request in enumerate(instance.requests):
            where.setdefault(type(request), []).append((i, j))
    responses: list[list[Any]] = [[None] * len(instance.requests) for instance in chunk]
    for kind, places in where.items():
        requests = [chunk[i].requests[j] for i, j in places]
        if kind is LoglikelihoodRequest:
            results: list[Any] = await client.loglikelihood(requests)
        elif kind is RollingRequest:
            results = await client.rolling(requests)
        else:
            results = await client.generate(requests)
        for (i, j), result in zip(places, results, strict=True):
            responses[i][j] = result
    return responses


def failed_sample(instance: Instance, message: str) -> SampleResult:
    return SampleResult(
        doc_index=instance.doc_index,
        prompt=instance.prompt,
        target=instance.target,
        output=None,
        extracted="",
        metrics={},
        error=message,
    )


class _Runner:
    """The state of one ``run_task`` call: in-flight chunks, unsent samples, the abort count."""

    def __init__(
        self,
        task: Any,
        client: OpenAIClient,
        score: ScoreFn,
        on_samples: Callable[[list[SampleResult]], None],
        should_stop: Callable[[], bool],
        *,
        total: int,
    ) -> None:
        self.task, self.client, self.score = task, client, score
        self.on_samples = sync_to_async(on_samples, thread_sensitive=True)
        self.should_stop = sync_to_async(should_stop, thread_sensitive=True)
        self.window = min(ABORT_WINDOW, total)  # samples that decide whether to abort
        self.finished = 0
        self.endpoint_failures: list[EndpointError] = []
        self.buffer: list[SampleResult] = []
        self.flushed_at = time.monotonic()
        self.judge: OpenAIClient | None = None

    async def run(self, chunks: Iterator[list[Instance]]) -> None:
        pending: set[asyncio.Task[Scored]] = set()
        try:
            while True:
                while len(pending) <= self.client.concurrency:
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    pending.add(asyncio.create_task(self._run_chunk(chunk)))
                if not pending:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
                for finished in done:
                    await self._collect(finished.result())
                await self._flush(force=False)
                if await self.should_stop():
                    break
        finally:
            for leftover in pending:
                leftover.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._flush(force=True)

    async def _run_chunk(self, chunk: list[Instance]) -> Scored:
        """Scored samples of ``chunk`` with the endpoint failure behind each errored one.

        A failure that may belong to one prompt (a 400, an unusable answer) is retried
        instance by instance so the other instances of the chunk still get scored.
        """
        try:
            responses = await answer(self.client, chunk)
            if self.judge is not None:
                responses = await self._judged(chunk, responses)
        except EndpointError as exc:
            if len(chunk) > 1 and exc.request_specific:
                parts = await asyncio.gather(*(self._run_chunk([i]) for i in chunk))
                return [pair for part in parts for pair in part]
            return [(failed_sample(instance, exc.message), exc) for instance in chunk]
        return [(self._score(i, r), None) for i, r in zip(chunk, responses, strict=True)]

    async def _judged(self, chunk: list[Instance], responses: list[list[Any]]) -> list[list[Any]]:
        """Each instance's responses followed by the judge's verdict on its answer."""
        from evaluation.harness.scoring import build_judge_request

        assert self.judge is not None
        asks = [
            build_judge_request(self.task, instance, getattr(got[0], "text", ""))
            for instance, got in zip(chunk, responses, strict=True)
        ]
        verdicts = await self.judge.generate(asks)
        return [[*got, verdict] for got, verdict in zip(responses, verdicts, strict=True)]

    def _score(self, instance: Instance, responses: list[Any]) -> SampleResult:
        try:
            return self.score(self.task, instance, responses)
        except PlatformError as exc:
            return failed_sample(instance, exc.message)
        except Exception as exc:  # one sample's scoring bug must not lose a long run
            logger.exception("scoring doc %s failed", instance.doc_index)
            return failed_sample(instance, f"scoring failed: {exc!r}")

    async def _collect(self, results: Scored) -> None:
        for sample, failure in results:
            if self.finished < self.window and failure is not None:
                self.endpoint_failures.append(failure)
            self.finished += 1
            self.buffer.append(sample)
        if self.finished >= self.window and len(self.endpoint_failures) * 2 > self.window:
            await self._abort()

    async def _abort(self) -> None:
        """Hand over the good samples and raise the endpoint's first error."""
        good = [s for s in self.buffer if not s.error]
        self.buffer = []
        if good:
            await self.on_samples(good)
        first = self.endpoint_failures[0]
        raise EndpointError(
            f"{len(self.endpoint_failures)} of the first {self.window} samples failed: "
            f"{first.message}",
            code=first.code,
            http_status=first.http_status,
        )

    async def _flush(self, *, force: bool) -> None:
        """Hand over the buffer: at the end, or in batches once the abort is ruled out."""
        if not self.buffer:
            return
        if not force:
            due = time.monotonic() - self.flushed_at >= FLUSH_AFTER_S
            if self.finished < self.window or not (due or len(self.buffer) >= FLUSH_EVERY):
                return
        batch, self.buffer = self.buffer, []
        self.flushed_at = time.monotonic()
        await self.on_samples(batch)
