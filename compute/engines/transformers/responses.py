"""Response shaping: collected results, logprobs objects, streamed chunks and SSE."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from compute.engines.transformers.engine import Engine
from compute.engines.transformers.errors import ApiError
from compute.engines.transformers.parsing import ParsedRequest
from compute.engines.transformers.sampling import TokenLogprob
from compute.engines.transformers.sequence import GenSequence, Output
from compute.engines.transformers.text import IncrementalDetokenizer

log = logging.getLogger(__name__)


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


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
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


def envelope(req: ParsedRequest, kind: str, prefix: str) -> dict[str, Any]:
    """The fields every response shares; ``model`` is the name asked for (base or adapter)."""
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": req.model,
    }


async def chat_frames(
    engine: Engine, req: ParsedRequest, seq: GenSequence
) -> AsyncGenerator[dict[str, Any], None]:
    """Chat completion chunks: role first, then content deltas, the finish, then usage."""
    head = envelope(req, "chat.completion.chunk", "chatcmpl")
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
        yield {**head, "choices": [], "usage": usage(len(seq.prompt_ids), count)}


async def completion_frames(
    engine: Engine, req: ParsedRequest, seq: GenSequence
) -> AsyncGenerator[dict[str, Any], None]:
    """Text completion chunks: the echoed prompt (if asked), text deltas, finish, usage."""
    head = envelope(req, "text_completion", "cmpl")
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
        yield {**head, "choices": [], "usage": usage(len(seq.prompt_ids), count)}


def chat_response(engine: Engine, req: ParsedRequest, result: Collected) -> dict[str, Any]:
    message = {"role": "assistant", "content": result.text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": chat_logprobs(engine, result.tokens) if req.chat_logprobs else None,
        "finish_reason": result.finish_reason,
    }
    return {
        **envelope(req, "chat.completion", "chatcmpl"),
        "choices": [choice],
        "usage": usage(len(req.prompts[0]), len(result.tokens)),
        "system_fingerprint": None,
    }


def completion_choice(
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
