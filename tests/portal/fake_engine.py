"""A small OpenAI-compatible upstream for gateway tests, served by uvicorn in a thread.

It counts tokens as whitespace-separated words (prompt) and answers ``max_tokens`` words
(default 5). Streams send ``usage: null`` on every chunk and a final usage-only chunk
when asked with ``stream_options.include_usage``, as vLLM and the CPU engine do. The
request's ``user`` field steers it: ``sleep:<s>`` waits before answering, ``fail:<status>``
answers that error status, ``die`` breaks off halfway (a stream after its first chunk)
as a replica whose process died would.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from compute.agent.procs import free_port, wait_for


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) + 1 for m in body["messages"])
    return len(str(body.get("prompt", "")).split())


class FakeEngine:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/health":
            await self._json(send, 200, {"status": "ok"})
            return
        body = json.loads(raw)
        self.bodies.append(body)
        steer = str(body.get("user", ""))
        if steer.startswith("sleep:"):
            await asyncio.sleep(float(steer[6:]))
        if steer.startswith("fail:"):
            error = {"message": "boom", "type": "server_error", "param": None, "code": "boom"}
            await self._json(send, int(steer[5:]), {"error": error})
            return
        prompt = _prompt_tokens(body)
        count = body.get("max_tokens") or 5
        usage = {"prompt_tokens": prompt, "completion_tokens": count}
        usage["total_tokens"] = prompt + count
        if steer == "die":
            await self._die(send, bool(body.get("stream")))
        elif body.get("stream"):
            await self._stream(send, body, count, usage)
        else:
            message = {"role": "assistant", "content": " ".join(["word"] * count)}
            choice = {"index": 0, "message": message, "finish_reason": "length"}
            answer = {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage}
            await self._json(send, 200, answer)

    async def _stream(self, send: Any, body: dict[str, Any], count: int, usage: Any) -> None:
        head = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        include = (body.get("stream_options") or {}).get("include_usage") is True
        base: dict[str, Any] = {"id": "x", "object": "chat.completion.chunk"}
        if include:
            base["usage"] = None
        deltas = [{"role": "assistant", "content": ""}] + [{"content": "word "}] * count
        for delta in deltas:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await self._event(send, chunk)
        if include:
            await self._event(send, {**base, "choices": [], "usage": usage})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    async def _die(self, send: Any, stream: bool) -> None:
        """Start an answer and fail: uvicorn closes the connection mid-answer."""
        if stream:
            head = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await self._event(
                send, {"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]}
            )
        else:
            head = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": b'{"id":', "more_body": True})
        raise RuntimeError("the fake engine died mid-answer (as asked)")

    @staticmethod
    async def _event(send: Any, data: Any) -> None:
        payload = b"data: " + json.dumps(data).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": payload, "more_body": True})

    @staticmethod
    async def _json(send: Any, status: int, data: Any) -> None:
        payload = json.dumps(data).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def serve_fake_engine() -> Iterator[tuple[str, FakeEngine]]:
    """Start a :class:`FakeEngine`; yields its base URL and the engine (its bodies)."""
    engine = FakeEngine()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(engine, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout_s=30, what="fake engine")
    yield f"http://127.0.0.1:{port}", engine
    server.should_exit = True
    thread.join(15)
