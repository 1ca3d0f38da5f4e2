"""A stub OpenAI-compatible engine that answers at once, for gateway benchmarks.

Raw asyncio protocol + httptools parser (+ uvloop when present), so the stub costs as
little as possible: ``POST /v1/chat/completions`` and ``POST /v1/completions`` get a
fixed small JSON body, or for ``"stream": true`` a few SSE chunks and ``data: [DONE]``
(chunked, one write per event, like an engine emitting tokens; with
``"stream_options": {"include_usage": true}`` a usage chunk before ``[DONE]``, as the
gateway asks for to meter streams); ``GET /health`` is 200.

Run it in its own process: ``python -m tests.bench.stub_engine --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
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


class StubProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each as soon as it ends."""

    def __init__(self) -> None:
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
        if method == b"POST" and self.url in POST_PATHS:
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


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
