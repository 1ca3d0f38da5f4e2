"""The scheduler thread: iteration-level (continuous) batching over one model."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from compute.engines.transformers.batch import ActiveBatch, cache_layers
from compute.engines.transformers.errors import ApiError
from compute.engines.transformers.lora import LoraModel
from compute.engines.transformers.sampling import TokenLogprob, sample_token, token_logprob
from compute.engines.transformers.sequence import GenSequence, Output

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """Counters exposed by ``/v1/engine/stats``; written by the scheduler thread only."""

    requests_total: int = 0
    requests_finished: int = 0
    requests_running: int = 0
    requests_waiting: int = 0
    prefill_steps: int = 0
    decode_steps: int = 0
    batched_decode_steps: int = 0
    max_batch_size_seen: int = 0
    max_prefill_batch_size_seen: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    # Decode steps whose batch mixed two or more models (the base, LoRA adapters).
    mixed_adapter_steps: int = 0
    lora_adapters: int = 0  # gauge: adapters in memory, including retiring ones
    # Tokens sampled with the green-list watermark's bias (compute.engines.watermark).
    watermarked_tokens_total: int = 0


@dataclass
class _Task:
    """Work on the model itself (loading an adapter), run between two steps."""

    fn: Callable[[], Any]
    future: Future[Any]


class Scheduler:
    """Iteration-level (continuous) batching over one model, on one background thread.

    ``submit`` is thread-safe and never blocks. Each iteration: take new submissions, drop
    cancelled sequences, admit waiting ones up to ``max_batch_size`` (one batched prefill),
    then one batched decode step for all active sequences. Work on the model itself
    (:meth:`call`: loading and unloading LoRA adapters) runs on the same thread between
    steps, in submission order with the sequences.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int,
        device: torch.device,
        eos_ids: set[int],
        use_cache: bool,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.device = device
        self.eos_ids = eos_ids
        self.stats = EngineStats()
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = next(iter(eos_ids), 0)
        self.lora = LoraModel(model, device)  # touched on the scheduler thread only
        self._batch = ActiveBatch(self.lora, device, pad_id, use_cache)
        self._inbox: queue.SimpleQueue[GenSequence | _Task | None] = queue.SimpleQueue()
        self._waiting: deque[GenSequence] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="engine-scheduler", daemon=True)

    # -- public, any thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def kv_cache(self) -> bool:
        """True when sequences share a merged KV cache; False in recompute mode."""
        return self._batch.use_cache

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, seq: GenSequence) -> None:
        """Queue a sequence; raises ApiError(503) once the engine is stopping."""
        if self._stopping:
            raise _shutting_down()
        self._inbox.put(seq)

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the scheduler thread between two steps; its result or exception
        lands in the returned future (``asyncio.wrap_future`` to await it)."""
        future: Future[Any] = Future()
        if self._stopping:
            future.set_exception(_shutting_down())
        else:
            self._inbox.put(_Task(fn, future))
        return future

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; sequences still queued or running get a 503 error output."""
        self._stopping = True
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- scheduler thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while self._pull():
                    self._drop_cancelled()
                    self._admit()
                    if self._batch.seqs:
                        self._guarded(self._batch.seqs, self._decode_step)
                    self._collect_adapters()
                    self._update_gauges()
        except Exception:
            log.exception("scheduler crashed")
        finally:
            gone = _shutting_down()
            for item in [*self._batch.seqs, *self._waiting, *self._drain_inbox()]:
                if isinstance(item, _Task):
                    if item.future.set_running_or_notify_cancel():
                        item.future.set_exception(gone)
                else:
                    item.push(Output(error=gone))

    def _pull(self) -> bool:
        """Move submissions into the waiting queue; blocks only when there is nothing to do."""
        idle = not self._batch.seqs and not self._waiting
        try:
            item = self._inbox.get(block=idle)
            while True:
                if item is None:
                    return False
                if isinstance(item, _Task):
                    self._run_task(item)
                else:
                    self.stats.requests_total += 1
                    self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        self._update_gauges()
        return not self._stopping

    def _run_task(self, task: _Task) -> None:
        if not task.future.set_running_or_notify_cancel():
            return
        try:
            result = task.fn()
        except BaseException as exc:  # handed to the caller, never lost
            task.future.set_exception(exc)
            return
        # An adapter retired while unused is freed before its caller hears back.
        self._collect_adapters()
        self.stats.lora_adapters = len(self.lora.keys)
        task.future.set_result(result)

    def _collect_adapters(self) -> None:
        """Free retiring adapters once no running or waiting sequence uses them."""
        if not self.lora.retiring:
            return
        try:
            self.lora.collect({s.adapter for s in [*self._batch.seqs, *self._waiting]})
        except Exception:  # the weights stay in memory; serving goes on
            log.exception("freeing a LoRA adapter failed")
            self.lora.retiring.clear()
        self.stats.lora_adapters = len(self.lora.keys)

    def _drain_inbox(self) -> list[GenSequence | _Task]:
        items: list[GenSequence | _Task] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._inbox.get_nowait()
                if item is not None:
                    items.append(item)
        return items

    def _update_gauges(self) -> None:
        self.stats.requests_running = len(self._batch)
        self.stats.requests_waiting = len(self._waiting)

    def _guarded(self, seqs: list[GenSequence], step: Callable[[], None]) -> None:
        """Run a model step; a failure ends the affected sequences, not the engine."""
        try:
            step()
        except Exception:
            log.exception("model step failed")
            err = ApiError(500, "The engine failed while generating.", type_="server_error")
            for seq in seqs:
                seq.push(Output(error=err))
            self._batch.keep([i for i, s in enumerate(self._batch.seqs) if s not in seqs])

    def _drop_cancelled(self) -> None:
        rows = [i for i, s in enumerate(self._batch.seqs) if not s.cancelled]
        if len(rows) != len(self._batch):
            self._finish_rows(len(self._batch) - len(rows))
            self._batch.keep(rows)

    def _admit(self) -> None:
        admitted: list[GenSequence] = []
        while self._waiting and len(self._batch) + len(admitted) < self.max_batch_size:
            seq = self._waiting.popleft()
            if seq.cancelled:
                self._finish_rows(1)
            elif seq.adapter is not None and seq.adapter not in self.lora.keys:
                self._finish_rows(1)  # unreachable by ordering; a guard, not a 500
                seq.push(Output(error=_adapter_gone()))
            else:
                admitted.append(seq)
        if admitted:
            self._guarded(admitted, lambda: self._prefill(admitted))
        self._update_gauges()

    def _prefill(self, seqs: list[GenSequence]) -> None:
        all_logits = any(s.params.prompt_logprobs for s in seqs)
        logits, cache, mask = self._batch.prefill(seqs, all_logits)
        self.stats.prefill_steps += 1
        self.stats.max_prefill_batch_size_seen = max(
            self.stats.max_prefill_batch_size_seen, len(seqs)
        )
        joining, first_tokens = [], []
        width = mask.shape[1]
        for i, seq in enumerate(seqs):
            self.stats.prompt_tokens_total += len(seq.prompt_ids)
            if seq.params.prompt_logprobs:
                seq.prompt_logprobs = self._prompt_logprobs(
                    seq, logits[i, width - len(seq.prompt_ids) :]
                )
            if seq.params.max_tokens == 0:
                self._finish_rows(1)
                seq.push(Output(finish_reason="length"))
                continue
            token, done = self._emit(seq, logits[i, -1])
            if not done:
                joining.append(i)
                first_tokens.append(token)
        if joining:
            index = torch.tensor(joining, dtype=torch.long, device=self.device)
            if cache is not None:
                for layer in cache_layers(cache):
                    layer.keys, layer.values = layer.keys[index], layer.values[index]
            self._batch.add([seqs[i] for i in joining], cache, mask[index], first_tokens)

    def _prompt_logprobs(self, seq: GenSequence, logits: torch.Tensor) -> list[TokenLogprob]:
        """Logprob of each prompt token given the ones before it; the first has none."""
        k = seq.params.logprobs or 0
        lps = torch.log_softmax(logits.float(), dim=-1)
        ids = seq.prompt_ids
        result = [TokenLogprob(ids[0])]
        result.extend(token_logprob(lps[j - 1], ids[j], k) for j in range(1, len(ids)))
        return result

    def _decode_step(self) -> None:
        logits = self._batch.decode()
        size = len(self._batch)
        self.stats.decode_steps += 1
        self.stats.batched_decode_steps += size > 1
        self.stats.mixed_adapter_steps += len({s.adapter for s in self._batch.seqs}) > 1
        self.stats.max_batch_size_seen = max(self.stats.max_batch_size_seen, size)
        keep, tokens = [], []
        for i, seq in enumerate(self._batch.seqs):
            token, done = self._emit(seq, logits[i])
            tokens.append(token)
            if not done:
                keep.append(i)
        self._batch.set_next_tokens(tokens)
        if len(keep) != size:
            self._batch.keep(keep)

    def _emit(self, seq: GenSequence, logits: torch.Tensor) -> tuple[int, bool]:
        """Sample, detokenize and hand out one token; returns ``(token, finished)``.

        With a watermark the biased logits are the distribution sampled from, so the
        logprobs reported are theirs too (what was actually sampled, not the bare model's).
        """
        params = seq.params
        if seq.watermark is not None:
            prev = seq.output_ids[-1] if seq.output_ids else seq.prompt_ids[-1]
            logits = seq.watermark.apply(logits, prev)
            self.stats.watermarked_tokens_total += 1
        token = sample_token(logits, params, seq.generator)
        info = TokenLogprob(token)
        if params.logprobs is not None:
            info = token_logprob(torch.log_softmax(logits.float(), dim=-1), token, params.logprobs)
        seq.output_ids.append(token)
        self.stats.generation_tokens_total += 1
        finish = None
        if token in self.eos_ids and not params.ignore_eos:
            finish = "stop"
        elif len(seq.output_ids) >= params.max_tokens:
            finish = "length"
        text = seq.detokenizer.add(token)
        if finish:
            text += seq.detokenizer.flush()
        visible, stopped = seq.stopper.feed(text)
        if stopped:
            finish = "stop"
        elif finish:
            visible += seq.stopper.flush()
        if finish:
            self._finish_rows(1)  # before the push, so a client that saw the end sees the count
        seq.push(Output(visible, info, finish))
        return token, finish is not None

    def _finish_rows(self, n: int) -> None:
        self.stats.requests_finished += n


def _adapter_gone() -> ApiError:
    return ApiError(404, "The LoRA adapter was unloaded.", param="model", code="model_not_found")


def _shutting_down() -> ApiError:
    return ApiError(503, "The engine is shutting down.", type_="server_error", code="unavailable")
