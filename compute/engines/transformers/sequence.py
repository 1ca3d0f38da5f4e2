"""One prompt in generation and the outputs it hands back to its request."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from compute.engines.transformers.errors import ApiError
from compute.engines.transformers.sampling import SamplingParams, TokenLogprob, WatermarkBias
from compute.engines.transformers.text import IncrementalDetokenizer, StopChecker

# Tokens of the prompt kept as decoding context, so the first generated token keeps the
# leading space that SentencePiece-style decoders would strip from a lone token.
DETOKENIZER_CONTEXT_TOKENS = 5


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
        adapter: str | None = None,
        watermark: WatermarkBias | None = None,
    ) -> None:
        self.prompt_ids = prompt_ids
        # The deployment's watermark, applied to every token sampled (None: off).
        self.watermark = watermark
        self.adapter = adapter  # internal LoRA key (lora.LoraModel); None: the base model
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
