"""Choosing the next token and describing it with its log-probability."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compute.engines.watermark import Watermark


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


class WatermarkBias:
    """The engine's side of the green-list watermark (:mod:`compute.engines.watermark`):
    ``delta`` added to the logits of the tokens green after the previous one, before any
    sampling, so greedy decoding (temperature 0) is watermarked too: the bias can change
    the argmax. Used on the scheduler thread only (it caches the token ids tensor)."""

    def __init__(self, watermark: Watermark) -> None:
        self.watermark = watermark
        self._ids: torch.Tensor | None = None

    def apply(self, logits: torch.Tensor, prev: int) -> torch.Tensor:
        """One row of logits with the green ones raised (a new tensor, float32)."""
        ids = self._ids
        if ids is None or ids.shape[0] != logits.shape[-1] or ids.device != logits.device:
            ids = self._ids = torch.arange(logits.shape[-1], device=logits.device)
        green = self.watermark.green(prev, ids)
        return logits.float().add(green, alpha=self.watermark.delta)


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
