"""What a task asks of a model and what comes back (the contract between harness and client).

An :class:`Instance` is one doc turned into model requests; the client answers each request
with the matching result type; scoring turns an instance and its results into a
:class:`SampleResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Log-probability of ``continuation`` following ``context``."""

    context: str
    continuation: str


@dataclass(frozen=True)
class LoglikelihoodResult:
    """Summed log-probability of the continuation's tokens, whether each was the top-1
    token, and how many tokens the continuation took."""

    logprob: float
    is_greedy: bool
    tokens: int


@dataclass(frozen=True)
class RollingRequest:
    """Log-probability of a whole text (perplexity)."""

    text: str


@dataclass(frozen=True)
class RollingResult:
    """Summed log-probability of the text's scored tokens and their count."""

    logprob: float
    tokens: int


@dataclass(frozen=True)
class GenerationRequest:
    """Free generation: chat when ``messages`` is set, else a completion of ``prompt``."""

    prompt: str
    messages: list[dict] | None
    max_tokens: int
    until: tuple[str, ...]
    temperature: float
    seed: int | None


@dataclass(frozen=True)
class GenerationResult:
    """The generated text (cut before the first ``until`` string) and why it ended."""

    text: str
    finish_reason: str


@dataclass
class Instance:
    """One doc as the model sees it: the rendered prompt, its target and the requests."""

    doc_index: int
    doc: dict
    prompt: str
    target: Any
    requests: list[Any]


@dataclass
class SampleResult:
    """One scored doc; ``error`` is set (and ``metrics`` empty) when it could not be run."""

    doc_index: int
    prompt: str
    target: Any
    output: Any
    extracted: str
    metrics: dict[str, float]
    error: str = ""
