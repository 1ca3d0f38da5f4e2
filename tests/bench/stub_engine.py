"""A stub OpenAI-compatible engine that answers at once, for gateway benchmarks.

Raw asyncio protocol + httptools parser (+ uvloop when present), so the stub costs as
little as possible: ``POST /v1/chat/completions`` and ``POST /v1/completions`` get a
fixed small JSON body, or for ``"stream": true`` a few SSE chunks and ``data: [DONE]``
(chunked, one write per event, like an engine emitting tokens; with
``"stream_options": {"include_usage": true}`` a usage chunk before ``[DONE]``, as the
gateway asks for to meter streams); ``GET /health`` is 200.

Run it in its own process: ``python -m tests.bench.stub_engine --port 8001``.

Scripted answers (:class:`Script`): ``--answer-bytes N --chunk-chars M`` streams an
N-byte answer in M-character content deltas (the governance bench's 1 KB answer), and
:func:`serve_in_thread` runs a stub whose answer tests set (``stub.script.chunks``) and
whose requests they count (``stub.requests``): how gateway tests plant a given text,
split in given chunks, in a model's output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httptools

COMPLETION = json.dumps(
    {
        "id": "cmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello from the stub."},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }
).encode()
TOKENS = ("Hello", " from", " the", " stub", ".")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(token: str, finish: str | None) -> bytes:
    event = {
        "id": "cmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": finish}],
    }
    return _chunk(b"data: " + json.dumps(event).encode() + b"\n\n")


def _response(status: str, ctype: bytes, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: ".encode()
        + ctype
        + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    return head + body


JSON = b"application/json"
OK_JSON = _response("200 OK", JSON, COMPLETION)
HEALTH = _response("200 OK", JSON, b'{"status":"ok"}')
NOT_FOUND = _response("404 Not Found", JSON, b'{"error":{"message":"not found"}}')
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
USAGE = {"prompt_tokens": 5, "completion_tokens": len(TOKENS), "total_tokens": 5 + len(TOKENS)}
TOKEN_EVENTS = [_sse(t, "stop" if i == len(TOKENS) - 1 else None) for i, t in enumerate(TOKENS)]
USAGE_EVENT = _chunk(
    b"data: "
    + json.dumps(
        {
            "id": "cmpl-stub",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "stub",
            "choices": [],
            "usage": USAGE,
        }
    ).encode()
    + b"\n\n"
)
END_EVENTS = [_chunk(b"data: [DONE]\n\n"), b"0\r\n\r\n"]
STREAM_EVENTS = TOKEN_EVENTS + END_EVENTS
STREAM_EVENTS_WITH_USAGE = [*TOKEN_EVENTS, USAGE_EVENT, *END_EVENTS]
POST_PATHS = {b"/v1/chat/completions", b"/v1/completions"}


def stream_kind(body: bytes) -> list[bytes] | None:
    """The events to stream for this request body, or None for a plain JSON answer."""
    if b"stream" not in body:
        return None
    try:
        parsed = json.loads(body)
        if parsed.get("stream") is not True:
            return None
        options = parsed.get("stream_options") or {}
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    except (ValueError, AttributeError):
        return None
    return STREAM_EVENTS_WITH_USAGE if wants_usage else STREAM_EVENTS


@dataclass
class Script:
    """A scripted answer: ``chunks`` are the content deltas of a stream (joined, the
    message of a plain answer); ``requests`` counts the inference requests answered."""

    chunks: list[str] = field(default_factory=lambda: list(TOKENS))
    requests: int = 0

    def stream(self, body: bytes) -> list[bytes]:
        parsed = json.loads(body)
        completion = "messages" not in parsed
        last = len(self.chunks) - 1
        events = [
            _scripted(c, "stop" if i == last else None, completion)
            for i, c in enumerate(self.chunks)
        ]
        options = parsed.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage") is True:
            events.append(USAGE_EVENT)
        return [*events, *END_EVENTS]

    def whole(self, body: bytes) -> bytes:
        completion = b'"messages"' not in body
        text = "".join(self.chunks)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if completion:
            choice["text"] = text
        else:
            choice["message"] = {"role": "assistant", "content": text}
        answer = {
            "id": "cmpl-stub",
            "object": "text_completion" if completion else "chat.completion",
            "created": 0,
            "model": "stub",
            "choices": [choice],
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": len(self.chunks),
                "total_tokens": 5 + len(self.chunks),
            },
        }
        return _response("200 OK", JSON, json.dumps(answer, ensure_ascii=False).encode())


def _scripted(text: str, finish: str | None, completion: bool) -> bytes:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if completion:
        choice["text"] = text
    else:
        choice["delta"] = {"content": text}
    event = {
        "id": "cmpl-stub",
        "object": "text_completion" if completion else "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [choice],
    }
    return _chunk(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n")


class StubProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each as soon as it ends
    (from ``script`` when given, else the fixed answers)."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        if method == b"POST" and self.url in POST_PATHS and self.script is not None:
            self._scripted(b"".join(self.body))
        elif method == b"POST" and self.url in POST_PATHS:
            events = stream_kind(b"".join(self.body))
            if events is not None:
                self.transport.write(STREAM_HEAD)
                for event in events:
                    self.transport.write(event)
            else:
                self.transport.write(OK_JSON)
        elif method == b"GET" and self.url == b"/health":
            self.transport.write(HEALTH)
        else:
            self.transport.write(NOT_FOUND)
        if not self.parser.should_keep_alive():
            self.transport.close()

    def _scripted(self, body: bytes) -> None:
        assert self.transport is not None and self.script is not None
        self.script.requests += 1
        if stream_kind(body) is None:
            self.transport.write(self.script.whole(body))
            return
        self.transport.write(STREAM_HEAD)
        for event in self.script.stream(body):
            self.transport.write(event)


def answer_chunks(size: int, chunk_chars: int) -> list[str]:
    """An ASCII answer of ``size`` bytes in deltas of ``chunk_chars`` characters."""
    words = "The quick brown fox jumps over the lazy dog while the model keeps talking. "
    text = (words * (size // len(words) + 1))[:size]
    return [text[i : i + chunk_chars] for i in range(0, size, chunk_chars)]


@contextlib.contextmanager
def serve_in_thread(chunks: list[str] | None = None) -> Iterator[tuple[str, Script]]:
    """A scripted stub on a free loopback port in a thread of its own: (base URL, its
    script) for as long as the block runs."""
    script = Script(list(chunks) if chunks is not None else list(TOKENS))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    async def start() -> asyncio.AbstractServer:
        server = await loop.create_server(lambda: StubProtocol(script), "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        return server

    server = None

    def run() -> None:
        nonlocal server
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="stub-engine")
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port[0]}", script
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if server is not None:
            server.close()
        loop.close()


async def serve(host: str, port: int, script: Script | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StubProtocol(script), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--answer-bytes", type=int, default=0, help="scripted answer size")
    parser.add_argument("--chunk-chars", type=int, default=4, help="characters per delta")
    args = parser.parse_args()
    script = (
        Script(answer_chunks(args.answer_bytes, args.chunk_chars)) if args.answer_bytes else None
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, script))


if __name__ == "__main__":
    main()
