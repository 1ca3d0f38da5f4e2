"""What the gateway learns about one ``/v1`` request while it relays it.

An :class:`Exchange` wraps the ASGI ``send``: it adds ``x-request-id`` and the
``x-ratelimit-*`` headers to the response (a leased request's go to its corked
connection as lines for the head instead, see ``reserve_leased_for``) and notes the
status. For usage records it reads ``usage`` from a non-streamed answer and, through
:class:`StreamTap`, from the usage chunk of a stream (which the gateway asks the engine
for and drops again if the client did not ask), and the time to the first content
chunk. Byte searches only: no JSON parsing of answers on the hot path.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

Send = Callable[[dict[str, Any]], Awaitable[None]]

_CONTENT = re.compile(rb'"(?:content|text)":\s*"[^"]')
_USAGE = re.compile(rb'"usage":\s*\{')
_EMPTY_CHOICES = re.compile(rb'"choices":\s*\[\s*\]')
# The usage-only chunk as vLLM and our engine write it (compact or spaced JSON): its
# choices, empty, right before its usage object, which counts prompt tokens first; the
# match ends with the event.
_EMPTY_CHOICES_BEFORE = (b'"choices":[],', b'"choices": [], ')
_USAGE_COUNTS = re.compile(
    rb'"usage": ?\{"prompt_tokens": ?(\d+),[^\n}]*"completion_tokens": ?(\d+)[^\n]*\n\n'
)
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')
_ERROR_CODE = re.compile(rb'"code":\s*"([A-Za-z0-9_.:-]{1,64})"')
MAX_PENDING = 1 << 20
_OPEN_INCLUDE_USAGE = b'{"stream_options":{"include_usage":true},'


def read_usage(data: bytes) -> tuple[int, int] | None:
    """(prompt, completion) tokens of the last ``usage`` object in ``data``, if any."""
    at = data.rfind(b'"usage"')
    if at < 0 or not _USAGE.match(data, at):
        return None
    return _counts(data, at, len(data))


def _counts(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    """(prompt, completion) tokens counted in ``data[start:end]`` (a usage object and
    what follows it), or None without a prompt count."""
    prompt = _PROMPT_TOKENS.search(data, start, end)
    if prompt is None:
        return None
    completion = _COMPLETION_TOKENS.search(data, start, end)
    return int(prompt[1]), int(completion[1]) if completion else 0


class Exchange:
    """One request's state: ids, timings, what it asked for and what the engine used."""

    __slots__ = (
        "_send",
        "client_usage",
        "completion_reserve",
        "content_events",
        "error_code",
        "governed",
        "grant",
        "headers",
        "kind",
        "lease",
        "model",
        "prompt_estimate",
        "replica",
        "request_id",
        "reservation",
        "route",
        "started",
        "status",
        "stream",
        "ts",
        "ttft",
        "usage",
    )

    def __init__(self, send: Send) -> None:
        self._send = send
        self.request_id = os.urandom(16).hex()  # as random as uuid4().hex, without the UUID object
        self.ts = time.time()
        self.started = time.perf_counter()
        self.headers: list[tuple[bytes, bytes]] = [(b"x-request-id", self.request_id.encode())]
        self.status = 0
        self.error_code = ""
        self.grant: Any = None
        self.kind = ""
        self.model = ""
        self.stream = False
        self.client_usage = True
        self.route: Any = None
        self.replica: str | None = None
        self.reservation: Any = None  # portal.limits.Reservation, when reserved in Redis
        self.lease: Any = None  # or the key's lease in this process, when it admitted it
        self.prompt_estimate = 0
        self.completion_reserve = 0  # completion tokens reserved (max_tokens per choice)
        self.content_events = 0
        self.usage: tuple[int, int] | None = None
        self.ttft: float | None = None
        self.governed: Any = None  # portal.gateway.moderation.Governed, when inline

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message["headers"], *self.headers]
        await self._send(message)

    def ask_for_usage(self, payload: dict[str, Any], body: bytes) -> bytes:
        """The body to send upstream: a stream that reports its usage at the end."""
        options = payload.get("stream_options")
        if options is None:
            self.client_usage = False
            if body[0] == 0x7B and "stream_options" not in payload:
                # A JSON object (validated) that starts with its brace, so UTF-8 with no
                # leading space (the usual case): add the member in place, not by
                # serialising it all again.
                return _OPEN_INCLUDE_USAGE + body[1:]
        else:
            self.client_usage = isinstance(options, dict) and options.get("include_usage") is True
            if self.client_usage:
                return body
        payload["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        return json.dumps(payload).encode()

    def read_answer(self, status: int, payload: bytes) -> None:
        """A whole (non-streamed or error) answer from the engine."""
        if status == 200:
            self.usage = read_usage(payload)
        else:
            code = _ERROR_CODE.search(payload)
            self.error_code = code.group(1).decode() if code else f"upstream_{status}"

    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens to account: the engine's count when it gave one;
        for a stream that ended without it, the prompt estimate and the content chunks."""
        if self.usage is not None:
            return self.usage
        if self.stream and self.status == 200:
            return self.prompt_estimate, self.content_events
        return 0, 0


class StreamTap:
    """Passes SSE bytes through by whole events, noting usage and the first content."""

    __slots__ = ("ex", "pending", "strip")

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.pending = b""
        self.strip = not ex.client_usage

    def feed(self, chunk: bytes) -> bytes:
        data = self.pending + chunk if self.pending else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            if len(data) > MAX_PENDING:  # not SSE as we know it: pass it on untouched
                self.pending = b""
                return data
            self.pending = data
            return b""
        end += 2
        self.pending = data[end:]
        return self._scan(data[:end])

    def rest(self) -> bytes:
        rest, self.pending = self.pending, b""
        return rest

    def _scan(self, events: bytes) -> bytes:
        ex = self.ex
        # The usage chunk comes last, as vLLM and our engine write it: empty choices, then
        # the counts. Found from its usage object, it is read and dropped with one match
        # (other shapes take the long way), and content is looked for only before it.
        stop, chunk = len(events), None
        at = events.rfind(b'"usage"')
        if at >= 0:
            counts = _USAGE_COUNTS.match(events, at)
            if counts is not None and events.endswith(_EMPTY_CHOICES_BEFORE, 0, at):
                chunk = counts
                before = events.rfind(b"\n\n", 0, at)
                stop = 0 if before < 0 else before + 2  # where the usage chunk starts
        found = len(_CONTENT.findall(events, 0, stop))
        if found:
            ex.content_events += found
            if ex.ttft is None:
                ex.ttft = time.perf_counter()
        if at < 0:
            return events
        if chunk is None:
            return self._scan_usage(events, at)
        ex.usage = int(chunk[1]), int(chunk[2])
        return events[:stop] + events[chunk.end() :] if self.strip else events

    def _scan_usage(self, events: bytes, at: int) -> bytes:
        """Any other shape: the last usage object with counts in ``events`` (``at`` is
        the last ``"usage"``) is the engine's count, and its event is dropped if it is a
        usage-only chunk the client did not ask for. (``"usage": null``, which some
        engines send in every chunk, is passed over.)"""
        while at >= 0:
            usage = _USAGE.match(events, at)
            if usage is not None:
                end = events.find(b"\n\n", usage.end())
                end = len(events) if end < 0 else end + 2
                counted = _counts(events, usage.end(), end)
                if counted is not None:
                    self.ex.usage = counted
                    if self.strip:
                        before = events.rfind(b"\n\n", 0, at)
                        start = 0 if before < 0 else before + 2
                        if _EMPTY_CHOICES.search(events, start, end):
                            return events[:start] + events[end:]
                    return events
            at = events.rfind(b'"usage"', 0, at)
        return events


def _text_tokens(text: str) -> int:
    """A cheap estimate: ~4 characters per token in ASCII text, ~1 per character else."""
    return len(text) // 4 + 1 if text.isascii() else len(text)


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return _text_tokens(content)
    if isinstance(content, list):
        return sum(
            _text_tokens(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def estimate_prompt_tokens(payload: dict[str, Any], kind: str) -> int:
    """Prompt tokens to reserve before the engine has counted them."""
    if kind == "chat":
        total = 0
        for message in payload["messages"]:
            content = message.get("content")
            is_text = content.__class__ is str  # the usual case: one call less
            total += 4 + (_text_tokens(content) if is_text else _content_tokens(content))
        return total
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        return _text_tokens(prompt)
    if isinstance(prompt, list):
        return sum(
            _text_tokens(p) if isinstance(p, str) else len(p) if isinstance(p, list) else 1
            for p in prompt
        )
    return 0


def completion_reserve(payload: dict[str, Any], kind: str) -> int:
    """Completion tokens to reserve: ``max_tokens`` (or the default cap) per choice.
    ``payload`` passed :func:`~portal.gateway.validation.validate_body`: its counts are
    integers from 0 up, or absent."""
    cap = (
        payload.get("max_completion_tokens")
        or payload.get("max_tokens")
        or settings.GATEWAY_DEFAULT_MAX_TOKENS
    )
    choices = payload.get("n") or 1
    if choices > 128:
        choices = 128
    if kind == "completion":
        prompt = payload.get("prompt")
        if isinstance(prompt, list):
            choices *= _prompt_count(prompt)
    return cap * choices


def _prompt_count(prompt: list[Any]) -> int:
    """How many prompts a completions ``prompt`` array holds (token ids are one)."""
    return 1 if all(isinstance(p, int) for p in prompt) else max(len(prompt), 1)
