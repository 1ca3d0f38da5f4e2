"""CPU inference engine: an OpenAI-compatible HTTP server over a local Hugging Face model.

Run it as::

    python -m compute.engines.transformers_server --model DIR --served-model-name NAME \
        --host 127.0.0.1 --port PORT [--max-batch-size 8] [--max-model-len N] \
        [--dtype auto|float32|bfloat16|float16] [--device cpu|cuda]

Contract:

* The model is loaded from the local directory only (``local_files_only=True``); the port is
  bound after loading, so ``GET /health`` answering 200 means the engine can serve.
* ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` follow
  OpenAI's request and response shapes, streamed (SSE) or not. Bad input is answered with a
  4xx and OpenAI's error object, never a 500.
* ``GET /v1/engine/stats`` (JSON) and ``GET /metrics`` (Prometheus text) report the
  scheduler's counters, including the largest decode batch it has run.

Batching: one scheduler thread owns the model. Requests wait in a queue; at every iteration
the scheduler admits waiting requests up to ``--max-batch-size``, prefills them together
(left-padded), merges their KV cache into the running batch's cache (padding the shorter one
on the left, masked out), then runs ONE forward pass that decodes a token for every active
sequence. Finished sequences leave the batch between steps. Tokens are handed back to each
request's asyncio queue with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from aiohttp import web

log = logging.getLogger("compute.engines.transformers_server")

OWNED_BY = "openmaas"
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's limit for the legacy completions API
MAX_CHAT_TOP_LOGPROBS = 20  # OpenAI's limit for chat completions
# Request bodies carry whole prompts; aiohttp's 1 MiB default is too small for long contexts.
MAX_BODY_BYTES = 64 * 1024 * 1024
# Tokens of the prompt kept as decoding context, so the first generated token keeps the
# leading space that SentencePiece-style decoders would strip from a lone token.
DETOKENIZER_CONTEXT_TOKENS = 5


# --------------------------------------------------------------------------------------
# Errors and request fields


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_

    def body(self) -> dict[str, Any]:
        """OpenAI's ``{"error": {...}}`` object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


_JSON_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _type_name(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _invalid_type(name: str, expected: str, value: object) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{name}': expected {expected}, but got {_type_name(value)} instead.",
        param=name,
        code="invalid_type",
    )


def _invalid_value(name: str, message: str) -> ApiError:
    return ApiError(400, f"Invalid value for '{name}': {message}", param=name, code="invalid_value")


class Fields:
    """Typed access to a JSON request body.

    Every accessor treats an absent key and an explicit ``null`` alike (the default), and
    raises :class:`ApiError` (400, naming the parameter) for a wrong type or range.
    """

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def required(self, name: str) -> Any:
        value = self.body.get(name)
        if value is None:
            raise ApiError(
                400,
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
        return value

    def int_(
        self, name: str, default: int | None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        value = self.body.get(name)
        if value is None:
            return default
        # JSON booleans are Python ints; they are not acceptable counts.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid_type(name, "an integer", value)
        _check_range(name, value, lo, hi)
        return value

    def float_(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.body.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid_type(name, "a number", value)
        if not math.isfinite(value):
            raise _invalid_value(name, "expected a finite number.")
        _check_range(name, value, lo, hi)
        return float(value)

    def bool_(self, name: str, default: bool) -> bool:
        value = self.body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _invalid_type(name, "a boolean", value)
        return value

    def dict_(self, name: str) -> dict[str, Any]:
        value = self.body.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _invalid_type(name, "an object", value)
        return value

    def stop(self) -> list[str]:
        """``stop``: a string or a list of strings; empty strings are ignored."""
        value = self.body.get("stop")
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise _invalid_type("stop", "a string or an array of strings", value)
        return [s for s in items if s]


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise _invalid_value(name, f"{value} is below the minimum of {lo}.")
    if hi is not None and value > hi:
        raise _invalid_value(name, f"{value} is above the maximum of {hi}.")


# --------------------------------------------------------------------------------------
# Generation state


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is generated.

    ``temperature == 0`` means greedy. ``logprobs`` is the number of alternatives reported
    per token (``None``: no logprobs at all). ``prompt_logprobs`` asks for the prompt
    tokens' logprobs (completions' ``echo`` with ``logprobs``).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: bool = False
    ignore_eos: bool = False


@dataclass(frozen=True)
class TokenLogprob:
    """One token with its log-probability and the top alternatives (id, logprob).

    ``logprob`` is ``None`` when the model gives none: the first prompt token, or a
    sequence that did not ask for logprobs.
    """

    token_id: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Output:
    """What the scheduler hands a request for one step.

    ``text`` is newly visible text (already cut at stop strings, never half a UTF-8
    character); ``token`` is the token sampled this step (``None`` when nothing was
    sampled); ``finish_reason`` is set on the last output; ``error`` ends the request.
    """

    text: str = ""
    token: TokenLogprob | None = None
    finish_reason: str | None = None
    error: ApiError | None = None


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas.

    A delta is only released once the decoded text no longer ends in U+FFFD, so a
    multi-byte character split over several byte-level tokens is never emitted in pieces.
    ``flush`` releases whatever is still held (which may then be a genuine U+FFFD).
    """

    def __init__(self, tokenizer: Any, context_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        self._ids = list(context_ids)
        self._prefix = 0  # start of the window that is decoded each time
        self._read = len(self._ids)  # end of the text already released

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Append a token and return the text it makes visible (maybe empty)."""
        self._ids.append(token_id)
        released = self._decode(self._ids[self._prefix : self._read])
        current = self._decode(self._ids[self._prefix :])
        if len(current) <= len(released) or current.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return current[len(released) :]

    def flush(self) -> str:
        """Release the held text, complete or not."""
        released = self._decode(self._ids[self._prefix : self._read])
        current = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return current[len(released) :]


class StopChecker:
    """Cuts generated text at the first stop string.

    Text that could be the beginning of a stop string is held back until it is known not
    to be one, so a stop string is never partly emitted.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return ``(text safe to emit, stopped)``."""
        if not self._stops:
            return text, False
        buf = self._pending + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        keep = self._partial_match_len(buf)
        self._pending = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Release held text at the end of generation."""
        pending, self._pending = self._pending, ""
        return pending

    def _partial_match_len(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        longest = max(len(s) for s in self._stops) - 1
        for k in range(min(longest, len(buf)), 0, -1):
            suffix = buf[-k:]
            if any(s.startswith(suffix) for s in self._stops):
                return k
        return 0


class GenSequence:
    """One prompt being generated: owned by the scheduler thread once submitted.

    The request handler only reads ``outputs`` (an asyncio queue on its own loop) and may
    set ``cancelled``; everything else is touched by the scheduler thread alone.
    """

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        tokenizer: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.output_ids: list[int] = []
        self.prompt_logprobs: list[TokenLogprob] | None = None
        self.outputs: asyncio.Queue[Output] = asyncio.Queue()
        self.cancelled = False
        self.detokenizer = IncrementalDetokenizer(
            tokenizer, prompt_ids[-DETOKENIZER_CONTEXT_TOKENS:]
        )
        self.stopper = StopChecker(params.stop)
        self.generator: torch.Generator | None = None
        if params.seed is not None:
            self.generator = torch.Generator().manual_seed(params.seed)
        self._loop = loop

    def push(self, output: Output) -> None:
        """Hand an output to the request's event loop (callable from any thread)."""
        # A closed loop means the server is going away; nobody is left to read it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.outputs.put_nowait, output)

    def cancel(self) -> None:
        """Ask the scheduler to drop this sequence at its next step (idempotent)."""
        self.cancelled = True


# --------------------------------------------------------------------------------------
# Batched model execution


def _left_pad(
    rows: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows into ``(input_ids, attention_mask)``, both ``(B, T)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding: each row counts from 0 at its first token."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _pad_seq_left(t: torch.Tensor, n: int) -> torch.Tensor:
    """Left-pad the sequence axis (-2 for KV tensors, -1 for masks) with ``n`` zeros."""
    if n == 0:
        return t
    if t.dim() == 2:
        return F.pad(t, (n, 0))
    return F.pad(t, (0, 0, n, 0))


def _cache_layers(cache: Any) -> list[Any]:
    return list(cache.layers)


def supports_cache_merging(model: Any) -> bool:
    """Whether the model's KV cache is plain per-layer key/value tensors we can pad and merge.

    Models with recurrent or linear-attention layers keep other state; they are served in
    recompute mode instead (full forward of every sequence at every step).
    """
    layer_types = getattr(model.config.get_text_config(), "layer_types", None) or []
    return all(t in ("full_attention", "sliding_attention") for t in layer_types)


class ActiveBatch:
    """The running sequences and, in cache mode, their shared left-padded KV cache.

    Invariant (cache mode): row ``i`` of ``cache``/``mask``/``next_pos``/``next_tokens``
    belongs to ``seqs[i]``; ``mask`` marks real (1) versus padding (0) cache slots, and
    padding slots hold zeros.
    """

    def __init__(self, model: Any, device: torch.device, pad_id: int, use_cache: bool) -> None:
        self.model = model
        self.device = device
        self.pad_id = pad_id
        self.use_cache = use_cache
        self.seqs: list[GenSequence] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.next_pos: torch.Tensor | None = None
        self.next_tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.seqs)

    def prefill(
        self, seqs: list[GenSequence], all_logits: bool
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Run the prompts of ``seqs`` in one left-padded forward pass.

        Returns ``(logits, cache, mask)``: logits are ``(B, T, V)`` when ``all_logits``,
        else ``(B, 1, V)`` for the last position; cache is ``None`` in recompute mode.
        """
        from transformers import DynamicCache

        ids, mask = _left_pad([s.prompt_ids for s in seqs], self.pad_id, self.device)
        cache = DynamicCache() if self.use_cache else None
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=_positions(mask),
            past_key_values=cache,
            use_cache=self.use_cache,
            logits_to_keep=0 if all_logits else 1,
        )
        if cache is not None:
            _zero_padding(cache, mask)
        return out.logits, cache, mask

    def add(
        self, seqs: list[GenSequence], cache: Any, mask: torch.Tensor, first_tokens: list[int]
    ) -> None:
        """Join prefilled sequences to the batch; ``first_tokens`` are their sampled tokens."""
        self.seqs.extend(seqs)
        if not self.use_cache:
            return
        pos = mask.sum(-1)
        tokens = torch.tensor(first_tokens, dtype=torch.long, device=self.device)
        if self.cache is None:
            self.cache, self.mask, self.next_pos, self.next_tokens = cache, mask, pos, tokens
            return
        assert self.mask is not None and self.next_pos is not None and self.next_tokens is not None
        width = max(self.mask.shape[1], mask.shape[1])
        grow_old, grow_new = width - self.mask.shape[1], width - mask.shape[1]
        for old, new in zip(_cache_layers(self.cache), _cache_layers(cache), strict=True):
            old.keys = torch.cat(
                [_pad_seq_left(old.keys, grow_old), _pad_seq_left(new.keys, grow_new)]
            )
            old.values = torch.cat(
                [_pad_seq_left(old.values, grow_old), _pad_seq_left(new.values, grow_new)]
            )
        self.mask = torch.cat([_pad_seq_left(self.mask, grow_old), _pad_seq_left(mask, grow_new)])
        self.next_pos = torch.cat([self.next_pos, pos])
        self.next_tokens = torch.cat([self.next_tokens, tokens])

    def decode(self) -> torch.Tensor:
        """One forward pass for every active sequence; returns next-token logits ``(B, V)``."""
        if not self.use_cache:
            rows = [s.prompt_ids + s.output_ids for s in self.seqs]
            ids, mask = _left_pad(rows, self.pad_id, self.device)
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=_positions(mask),
                use_cache=False,
                logits_to_keep=1,
            )
            return out.logits[:, -1]
        assert self.mask is not None and self.next_pos is not None and self.next_tokens is not None
        ones = torch.ones((len(self.seqs), 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self.model(
            input_ids=self.next_tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_pos[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.next_pos = self.next_pos + 1
        return out.logits[:, -1]

    def set_next_tokens(self, tokens: list[int]) -> None:
        if self.use_cache:
            self.next_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device)

    def keep(self, rows: list[int]) -> None:
        """Keep only the given rows (in order); trims cache columns that became all padding."""
        self.seqs = [self.seqs[i] for i in rows]
        if not self.use_cache or self.mask is None:
            return
        if not rows:
            self.cache = self.mask = self.next_pos = self.next_tokens = None
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        assert self.next_pos is not None and self.next_tokens is not None
        self.mask = self.mask[index]
        self.next_pos, self.next_tokens = self.next_pos[index], self.next_tokens[index]
        # Columns where every remaining row is padding are dead weight in each step.
        start = int(self.mask.any(0).nonzero()[0])
        self.mask = self.mask[:, start:]
        for layer in _cache_layers(self.cache):
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]


def _zero_padding(cache: Any, mask: torch.Tensor) -> None:
    """Overwrite padding slots with zeros so no NaN from a fully-masked row can leak later."""
    keep = mask.bool()[:, None, :, None]
    for layer in _cache_layers(cache):
        layer.keys = torch.where(keep, layer.keys, 0.0)
        layer.values = torch.where(keep, layer.values, 0.0)


def sample_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    """Pick the next token from one row of logits: greedy at temperature 0, else top-p sampling."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Drop a token when the tokens ranked above it already cover top_p.
        drop = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    choice = torch.multinomial(probs.cpu(), 1, generator=generator)
    return int(choice)


def token_logprob(logprobs: torch.Tensor, token_id: int, k: int) -> TokenLogprob:
    """Describe ``token_id`` and the ``k`` most likely alternatives from a log-softmax row."""
    top: tuple[tuple[int, float], ...] = ()
    if k > 0:
        values, ids = torch.topk(logprobs, min(k, logprobs.shape[-1]))
        top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token_id, float(logprobs[token_id]), top)


# --------------------------------------------------------------------------------------
# Scheduler


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


class Scheduler:
    """Iteration-level (continuous) batching over one model, on one background thread.

    ``submit`` is thread-safe and never blocks. Each iteration: take new submissions, drop
    cancelled sequences, admit waiting ones up to ``max_batch_size`` (one batched prefill),
    then one batched decode step for all active sequences.
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
        self._batch = ActiveBatch(model, device, pad_id, use_cache)
        self._inbox: queue.SimpleQueue[GenSequence | None] = queue.SimpleQueue()
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
            raise ApiError(
                503, "The engine is shutting down.", type_="server_error", code="unavailable"
            )
        self._inbox.put(seq)

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
                    self._update_gauges()
        except Exception:
            log.exception("scheduler crashed")
        finally:
            gone = ApiError(
                503, "The engine is shutting down.", type_="server_error", code="unavailable"
            )
            for seq in [*self._batch.seqs, *self._waiting, *self._drain_inbox()]:
                seq.push(Output(error=gone))

    def _pull(self) -> bool:
        """Move submissions into the waiting queue; blocks only when there is nothing to do."""
        idle = not self._batch.seqs and not self._waiting
        try:
            item = self._inbox.get(block=idle)
            while True:
                if item is None:
                    return False
                self.stats.requests_total += 1
                self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        self._update_gauges()
        return not self._stopping

    def _drain_inbox(self) -> list[GenSequence]:
        items: list[GenSequence] = []
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
            if not seq.cancelled:
                admitted.append(seq)
            else:
                self._finish_rows(1)
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
                for layer in _cache_layers(cache):
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
        """Sample, detokenize and hand out one token; returns ``(token, finished)``."""
        params = seq.params
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


# --------------------------------------------------------------------------------------
# Engine: model, tokenizer, scheduler


class Engine:
    """The loaded model behind the HTTP API: prompt encoding and sequence submission."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        served_model_name: str,
        max_model_len: int,
        max_batch_size: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.served_model_name = served_model_name
        self.max_model_len = max_model_len
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.created = int(time.time())
        self.scheduler = Scheduler(
            model,
            tokenizer,
            max_batch_size=max_batch_size,
            device=device,
            eos_ids=_eos_ids(model, tokenizer),
            use_cache=supports_cache_merging(model),
        )
        self._token_texts: dict[int, tuple[str, bytes]] = {}

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> GenSequence:
        seq = GenSequence(prompt_ids, params, self.tokenizer, asyncio.get_running_loop())
        self.scheduler.submit(seq)
        return seq

    def check_model(self, fields: Fields) -> None:
        name = fields.required("model")
        if not isinstance(name, str):
            raise _invalid_type("model", "a string", name)
        if name != self.served_model_name:
            raise ApiError(
                404,
                f"The model '{name}' does not exist; "
                f"this engine serves '{self.served_model_name}'.",
                param="model",
                code="model_not_found",
            )

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Render messages with the chat template (generation prompt added) and tokenize."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ApiError(
                400, "This model has no chat template; use /v1/completions.", param="messages"
            )
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # Jinja errors, including raise_exception() in templates
            raise ApiError(
                400, f"The chat template rejected the messages: {exc}", param="messages"
            ) from exc
        # The template already places any special tokens it wants.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def token_text(self, token_id: int) -> tuple[str, bytes]:
        """``(display string, raw bytes)`` of one token, as OpenAI's logprobs show tokens.

        A token holding only part of a UTF-8 character is displayed as ``bytes:\\xNN...``
        (OpenAI's convention), which also keeps such tokens distinct as dictionary keys.
        """
        cached = self._token_texts.get(token_id)
        if cached is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            raw = text.encode()
            if "\ufffd" in text:
                raw = _token_bytes(self.tokenizer.convert_ids_to_tokens(token_id)) or raw
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            cached = self._token_texts[token_id] = (text, raw)
        return cached

    def completion_budget(
        self, prompt_len: int, requested: int | None, default: int | None, param: str
    ) -> int:
        """Tokens to generate, checked against the context window (400 when it cannot fit)."""
        if prompt_len == 0:
            raise ApiError(400, "The prompt is empty.", param=param)
        room = self.max_model_len - prompt_len
        if prompt_len > self.max_model_len or (requested is not None and requested > room):
            asked = prompt_len + (requested or 0)
            raise ApiError(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                f"requested {asked} tokens ({prompt_len} in the prompt, {requested or 0} for the "
                "completion). Please reduce the prompt or the completion length.",
                param=param,
                code="context_length_exceeded",
            )
        if requested is not None:
            return requested
        return room if default is None else min(default, room)


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2 style): one printable character per byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in chars)
    for n, b in enumerate(shifted):
        chars[b] = chr(256 + n)
    return {c: b for b, c in chars.items()}


_BYTE_LEVEL = _byte_level_alphabet()


def _token_bytes(piece: str | None) -> bytes | None:
    """Raw bytes of a vocabulary piece that encodes bytes: ``<0xNN>`` or byte-level BPE."""
    if not piece:
        return None
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        with contextlib.suppress(ValueError):
            return bytes([int(piece[3:5], 16)])
    if all(c in _BYTE_LEVEL for c in piece):
        return bytes(_BYTE_LEVEL[c] for c in piece)
    return None


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids


# --------------------------------------------------------------------------------------
# Request parsing


@dataclass(frozen=True)
class ParsedRequest:
    """A validated generation request: one or more prompts sharing sampling parameters."""

    prompts: list[list[int]]
    params: SamplingParams
    stream: bool
    include_usage: bool
    echo_texts: list[str] = field(default_factory=list)
    chat_logprobs: bool = False


def _common_params(
    fields: Fields, max_tokens: int, *, logprobs: int | None, prompt_logprobs: bool
) -> SamplingParams:
    n = fields.int_("n", 1)
    if n != 1:
        raise _invalid_value("n", "this engine only supports n=1.")
    best_of = fields.int_("best_of", 1)
    if best_of != 1:
        raise _invalid_value("best_of", "this engine only supports best_of=1.")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=fields.float_("temperature", 1.0, 0.0, 2.0),
        top_p=fields.float_("top_p", 1.0, 0.0, 1.0),
        stop=tuple(fields.stop()),
        seed=fields.int_("seed", None),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        ignore_eos=fields.bool_("ignore_eos", False),
    )


def _stream_flags(fields: Fields) -> tuple[bool, bool]:
    stream = fields.bool_("stream", False)
    options = Fields(fields.dict_("stream_options"))
    include_usage = options.bool_("include_usage", False)
    return stream, stream and include_usage


def _message_text(index: int, content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    param = f"messages[{index}].content"
    if not isinstance(content, list):
        raise _invalid_type(param, "a string or an array of content parts", content)
    texts = []
    for part in content:
        if (
            not isinstance(part, dict)
            or part.get("type") != "text"
            or not isinstance(part.get("text"), str)
        ):
            raise _invalid_value(param, "only text content parts are supported.")
        texts.append(part["text"])
    return "".join(texts)


def _messages(fields: Fields) -> list[dict[str, str]]:
    raw = fields.required("messages")
    if not isinstance(raw, list):
        raise _invalid_type("messages", "an array", raw)
    if not raw:
        raise _invalid_value("messages", "expected at least one message.")
    messages = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise _invalid_type(f"messages[{i}]", "an object", msg)
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise _invalid_type(f"messages[{i}].role", "a string", role)
        messages.append({"role": role, "content": _message_text(i, msg.get("content"))})
    return messages


def parse_chat(engine: Engine, body: dict[str, Any]) -> ParsedRequest:
    """Validate a chat completions body and tokenize its messages."""
    fields = Fields(body)
    engine.check_model(fields)
    messages = _messages(fields)
    requested = fields.int_("max_completion_tokens", None, lo=1)
    if requested is None:
        requested = fields.int_("max_tokens", None, lo=1)
    want_logprobs = fields.bool_("logprobs", False)
    top = fields.int_("top_logprobs", 0, 0, MAX_CHAT_TOP_LOGPROBS) or 0
    stream, include_usage = _stream_flags(fields)
    prompt = engine.encode_chat(messages)
    budget = engine.completion_budget(len(prompt), requested, None, "messages")
    params = _common_params(
        fields, budget, logprobs=top if want_logprobs else None, prompt_logprobs=False
    )
    return ParsedRequest([prompt], params, stream, include_usage, chat_logprobs=want_logprobs)


def _prompts(engine: Engine, raw: Any) -> tuple[list[list[int]], list[str]]:
    """Completions' ``prompt``: a string, token ids, or a list of either. Returns (ids, texts)."""
    if isinstance(raw, str):
        return [engine.encode_text(raw)], [raw]
    if not isinstance(raw, list) or not raw:
        raise _invalid_type("prompt", "a string, an array of strings or an array of tokens", raw)
    if all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        raw = [raw]
    prompts, texts = [], []
    for item in raw:
        if isinstance(item, str):
            prompts.append(engine.encode_text(item))
            texts.append(item)
        elif isinstance(item, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            if any(t < 0 or t >= engine.vocab_size for t in item):
                raise _invalid_value("prompt", f"token ids must be in [0, {engine.vocab_size}).")
            prompts.append(list(item))
            texts.append(engine.tokenizer.decode(item))
        else:
            raise _invalid_type(
                "prompt", "a string, an array of strings or an array of tokens", raw
            )
    return prompts, texts


def parse_completion(engine: Engine, body: dict[str, Any]) -> ParsedRequest:
    """Validate a (legacy) completions body and tokenize its prompt(s)."""
    fields = Fields(body)
    engine.check_model(fields)
    prompts, texts = _prompts(engine, fields.required("prompt"))
    requested = fields.int_("max_tokens", None, lo=0)
    logprobs = fields.int_("logprobs", None, 0, MAX_COMPLETION_LOGPROBS)
    echo = fields.bool_("echo", False)
    stream, include_usage = _stream_flags(fields)
    if stream and len(prompts) > 1:
        raise _invalid_value("prompt", "streaming supports a single prompt.")
    budgets = [engine.completion_budget(len(p), requested, 16, "prompt") for p in prompts]
    params = _common_params(
        fields, min(budgets), logprobs=logprobs, prompt_logprobs=echo and logprobs is not None
    )
    return ParsedRequest(prompts, params, stream, include_usage, echo_texts=texts if echo else [])


# --------------------------------------------------------------------------------------
# Response shaping


@dataclass
class Collected:
    """Everything one sequence produced."""

    text: str = ""
    tokens: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str = "length"


async def _outputs(seq: GenSequence) -> AsyncIterator[Output]:
    """Yield a sequence's outputs until its last; an error output raises its ApiError."""
    while True:
        out = await seq.outputs.get()
        if out.error is not None:
            raise out.error
        yield out
        if out.finish_reason is not None:
            return


async def collect(seq: GenSequence) -> Collected:
    result = Collected()
    parts = []
    async for out in _outputs(seq):
        parts.append(out.text)
        if out.token is not None:
            result.tokens.append(out.token)
        if out.finish_reason:
            result.finish_reason = out.finish_reason
    result.text = "".join(parts)
    return result


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprobs(engine: Engine, tokens: list[TokenLogprob]) -> dict[str, Any]:
    """Chat completions' ``logprobs`` object for the given tokens."""

    def entry(token_id: int, logprob: float | None) -> dict[str, Any]:
        text, raw = engine.token_text(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(raw)}

    content = []
    for t in tokens:
        item = entry(t.token_id, t.logprob)
        item["top_logprobs"] = [entry(i, lp) for i, lp in t.top]
        content.append(item)
    return {"content": content, "refusal": None}


def completion_logprobs(
    engine: Engine, tokens: list[TokenLogprob], start_offset: int = 0
) -> dict[str, Any]:
    """Legacy completions' ``logprobs`` object; ``text_offset`` counts from ``start_offset``."""
    result: dict[str, list[Any]] = {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    # Offsets follow the decoded text, so a token inside a multi-byte character points at
    # where that character starts.
    detokenizer = IncrementalDetokenizer(engine.tokenizer)
    offset = start_offset
    for t in tokens:
        text = engine.token_text(t.token_id)[0]
        result["tokens"].append(text)
        result["token_logprobs"].append(t.logprob)
        top = None
        if t.logprob is not None:
            top = {engine.token_text(i)[0]: lp for i, lp in t.top}
            top.setdefault(text, t.logprob)  # the chosen token is always listed
        result["top_logprobs"].append(top)
        result["text_offset"].append(offset)
        offset += len(detokenizer.add(t.token_id))
    return result


async def stream_sse(
    request: web.Request, frames: AsyncGenerator[dict[str, Any], None]
) -> web.StreamResponse:
    """Send ``frames`` as Server-Sent Events (``data: <json>``), then ``data: [DONE]``.

    A client that hangs up ends the stream quietly; the caller's cleanup frees its slot.
    """
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        async for frame in frames:
            data = json.dumps(frame, ensure_ascii=False)
            await response.write(f"data: {data}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionResetError:
        log.info("client closed the stream early")
    finally:
        await frames.aclose()
    return response


def _envelope(engine: Engine, kind: str, prefix: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": engine.served_model_name,
    }


async def chat_frames(
    engine: Engine, req: ParsedRequest, seq: GenSequence
) -> AsyncGenerator[dict[str, Any], None]:
    """Chat completion chunks: role first, then content deltas, the finish, then usage."""
    head = _envelope(engine, "chat.completion.chunk", "chatcmpl")
    if req.include_usage:
        head["usage"] = None  # OpenAI sends null usage on every chunk but the last

    def chunk(
        delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**head, "choices": [choice]}

    yield chunk({"role": "assistant", "content": ""})
    count = 0
    try:
        async for out in _outputs(seq):
            count += out.token is not None
            lp = chat_logprobs(engine, [out.token]) if req.chat_logprobs and out.token else None
            if out.text or lp:
                yield chunk({"content": out.text}, logprobs=lp)
            if out.finish_reason:
                yield chunk({}, finish=out.finish_reason)
    except ApiError as err:
        yield err.body()
    if req.include_usage:
        yield {**head, "choices": [], "usage": _usage(len(seq.prompt_ids), count)}


async def completion_frames(
    engine: Engine, req: ParsedRequest, seq: GenSequence
) -> AsyncGenerator[dict[str, Any], None]:
    """Text completion chunks: the echoed prompt (if asked), text deltas, finish, usage."""
    head = _envelope(engine, "text_completion", "cmpl")
    if req.include_usage:
        head["usage"] = None
    want_lp = req.params.logprobs is not None

    def chunk(text: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return {**head, "choices": [choice]}

    offset, count, echoed = 0, 0, not req.echo_texts
    try:
        async for out in _outputs(seq):
            if not echoed:  # prompt logprobs exist once the first output arrived
                echoed = True
                lp = completion_logprobs(engine, seq.prompt_logprobs or []) if want_lp else None
                yield chunk(req.echo_texts[0], logprobs=lp)
                offset = len(req.echo_texts[0])
            count += out.token is not None
            lp = None
            if want_lp and out.token is not None:
                lp = completion_logprobs(engine, [out.token], offset)
            if out.text or lp:
                yield chunk(out.text, logprobs=lp)
                offset += len(out.text)
            if out.finish_reason:
                yield chunk("", finish=out.finish_reason)
    except ApiError as err:
        yield err.body()
    if req.include_usage:
        yield {**head, "choices": [], "usage": _usage(len(seq.prompt_ids), count)}


def _chat_response(engine: Engine, req: ParsedRequest, result: Collected) -> dict[str, Any]:
    message = {"role": "assistant", "content": result.text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": chat_logprobs(engine, result.tokens) if req.chat_logprobs else None,
        "finish_reason": result.finish_reason,
    }
    return {
        **_envelope(engine, "chat.completion", "chatcmpl"),
        "choices": [choice],
        "usage": _usage(len(req.prompts[0]), len(result.tokens)),
        "system_fingerprint": None,
    }


def _completion_choice(
    engine: Engine, req: ParsedRequest, index: int, seq: GenSequence, result: Collected
) -> dict[str, Any]:
    prefix = req.echo_texts[index] if req.echo_texts else ""
    logprobs = None
    if req.params.logprobs is not None:
        tokens = result.tokens
        if req.echo_texts:
            tokens = (seq.prompt_logprobs or []) + tokens
        logprobs = completion_logprobs(engine, tokens)
    return {
        "index": index,
        "text": prefix + result.text,
        "logprobs": logprobs,
        "finish_reason": result.finish_reason,
    }


# --------------------------------------------------------------------------------------
# HTTP handlers

ENGINE_KEY = web.AppKey("engine", Engine)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


async def handle_health(request: web.Request) -> web.Response:
    if not request.app[ENGINE_KEY].scheduler.alive():
        return ApiError(503, "The engine is not running.", type_="server_error").response()
    return web.json_response({"status": "ok"})


def _model_card(engine: Engine) -> dict[str, Any]:
    return {
        "id": engine.served_model_name,
        "object": "model",
        "created": engine.created,
        "owned_by": OWNED_BY,
        "max_model_len": engine.max_model_len,
    }


async def handle_models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    return web.json_response({"object": "list", "data": [_model_card(engine)]})


async def handle_model(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    engine.check_model(Fields({"model": request.match_info["model"]}))
    return web.json_response(_model_card(engine))


async def handle_stats(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    stats = asdict(engine.scheduler.stats)
    stats["max_batch_size"] = engine.scheduler.max_batch_size
    stats["kv_cache"] = engine.scheduler.kv_cache
    return web.json_response(stats)


async def handle_metrics(request: web.Request) -> web.Response:
    """The same counters in Prometheus' text format."""
    stats = asdict(request.app[ENGINE_KEY].scheduler.stats)
    lines = []
    for name, value in stats.items():
        metric = f"openmaas_engine_{name}"
        kind = (
            "gauge"
            if name.startswith(("requests_running", "requests_waiting", "max_"))
            else "counter"
        )
        lines += [f"# TYPE {metric} {kind}", f"{metric} {value}"]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def handle_chat(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    req = parse_chat(engine, await _json_body(request))
    seq = engine.submit(req.prompts[0], req.params)
    try:
        if req.stream:
            return await stream_sse(request, chat_frames(engine, req, seq))
        return web.json_response(_chat_response(engine, req, await collect(seq)))
    finally:
        seq.cancel()  # no-op when finished; frees the batch slot when the client went away


async def handle_completion(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    req = parse_completion(engine, await _json_body(request))
    seqs = [engine.submit(p, req.params) for p in req.prompts]
    try:
        if req.stream:
            return await stream_sse(request, completion_frames(engine, req, seqs[0]))
        results = await asyncio.gather(*(collect(s) for s in seqs))
        choices = [
            _completion_choice(engine, req, i, s, r)
            for i, (s, r) in enumerate(zip(seqs, results, strict=True))
        ]
        body = {
            **_envelope(engine, "text_completion", "cmpl"),
            "choices": choices,
            "usage": _usage(sum(map(len, req.prompts)), sum(len(r.tokens) for r in results)),
            "system_fingerprint": None,
        }
        return web.json_response(body)
    finally:
        for seq in seqs:
            seq.cancel()


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """Answer every failure in OpenAI's error shape; unexpected ones as a logged 500."""
    try:
        return await handler(request)
    except ApiError as err:
        return err.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        return ApiError(exc.status, exc.reason, type_=kind).response()
    except ConnectionResetError:
        raise  # the client went away; there is nobody to answer
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return ApiError(500, "Internal engine error.", type_="server_error").response()


def build_app(engine: Engine) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[ENGINE_KEY] = engine
    app.router.add_get("/health", handle_health)
    app.router.add_get("/v1/models", handle_models)
    app.router.add_get("/v1/models/{model:.+}", handle_model)  # names may contain "/"
    app.router.add_get("/v1/engine/stats", handle_stats)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_post("/v1/chat/completions", handle_chat)
    app.router.add_post("/v1/completions", handle_completion)
    return app


# --------------------------------------------------------------------------------------
# Loading and serving


def resolve_dtype(name: str, device: torch.device, config: Any) -> torch.dtype:
    """``auto``: float32 on CPU (fast and exact there); on GPU the checkpoint's 16-bit type."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cpu":
        return torch.float32
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if declared in (torch.float16, torch.bfloat16) else torch.float32


def load_engine(args: argparse.Namespace) -> Engine:
    """Load the model and tokenizer from the local directory and build the engine."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"error: {model_dir} is not a model directory (no config.json)")
    device = torch.device(args.device)
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    dtype = resolve_dtype(args.dtype, device, config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    model.to(device).eval()
    limit = getattr(config.get_text_config(), "max_position_embeddings", None) or 2048
    max_model_len = min(args.max_model_len or limit, limit)
    if args.max_model_len and args.max_model_len > limit:
        log.warning(
            "--max-model-len %d exceeds the model's %d positions; using %d",
            args.max_model_len,
            limit,
            limit,
        )
    return Engine(
        model,
        tokenizer,
        served_model_name=args.served_model_name,
        max_model_len=max_model_len,
        max_batch_size=args.max_batch_size,
        device=device,
    )


async def serve(engine: Engine, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then stop the scheduler and close connections."""
    runner = web.AppRunner(build_app(engine), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    engine.scheduler.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("serving %s on http://%s:%d", engine.served_model_name, host, port)
        await stop.wait()
        log.info("shutting down")
    finally:
        # Stopping the scheduler first ends in-flight requests with a 503, so the runner's
        # cleanup does not wait on them.
        await asyncio.to_thread(engine.scheduler.stop)
        await runner.cleanup()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m compute.engines.transformers_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, help="local Hugging Face model directory")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default). Small models on a busy host "
        "are faster with 1, since waiting on a descheduled worker thread dominates.",
    )
    args = parser.parse_args(argv)
    if args.max_batch_size < 1:
        parser.error("--max-batch-size must be at least 1")
    if args.max_model_len is not None and args.max_model_len < 1:
        parser.error("--max-model-len must be at least 1")
    if args.num_threads < 0:
        parser.error("--num-threads must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Never reach for the Hub: the model directory is all there is.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    engine = load_engine(args)
    try:
        asyncio.run(serve(engine, args.host, args.port))
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
