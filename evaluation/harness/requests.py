"""What the harness asks an endpoint and what comes back; plain data, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float
    is_greedy: bool
    tokens: int


@dataclass(frozen=True)
class RollingRequest:
    text: str


@dataclass(frozen=True)
class RollingResult:
    logprob: float
    tokens: int


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    messages: list[dict] | None
    max_tokens: int
    until: tuple[str, ...]
    temperature: float
    seed: int | None


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str


@dataclass
class Instance:
    doc_index: int
    doc: dict
    prompt: str
    target: Any
    requests: list[Any]


@dataclass
class SampleResult:
    doc_index: int
    prompt: str
    target: Any
    output: Any
    extracted: str
    metrics: dict[str, float]
    error: str = ""
