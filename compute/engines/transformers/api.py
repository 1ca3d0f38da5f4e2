"""The HTTP API: aiohttp routes, handlers and the error middleware."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from compute.engines import transformers_adapter
from compute.engines.transformers.engine import Engine
from compute.engines.transformers.errors import ApiError
from compute.engines.transformers.lora import ServedAdapter
from compute.engines.transformers.parsing import Fields, parse_chat, parse_completion, parse_json
from compute.engines.transformers.responses import (
    chat_frames,
    chat_response,
    collect,
    completion_choice,
    completion_frames,
    envelope,
    stream_sse,
    usage,
)

log = logging.getLogger(__name__)

OWNED_BY = "openmaas"
# Request bodies carry whole prompts; aiohttp's 1 MiB default is too small for long contexts.
MAX_BODY_BYTES = 64 * 1024 * 1024
ENGINE_KEY = web.AppKey("engine", Engine)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = parse_json(raw)
    except ValueError as exc:
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


def _model_card(engine: Engine, adapter: ServedAdapter | None = None) -> dict[str, Any]:
    """One ``/v1/models`` entry; an adapter names the base as ``parent``, as vLLM does
    (its directory, vLLM's ``root``, stays private: it is a path on the node)."""
    return {
        "id": adapter.name if adapter else engine.served_model_name,
        "object": "model",
        "created": adapter.created if adapter else engine.created,
        "owned_by": OWNED_BY,
        "parent": engine.served_model_name if adapter else None,
        "max_model_len": engine.max_model_len,
    }


async def handle_models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    cards = [_model_card(engine), *(_model_card(engine, a) for a in engine.served_adapters())]
    return web.json_response({"object": "list", "data": cards})


async def handle_model(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    name = request.match_info["model"]
    engine.check_model(Fields({"model": name}))
    return web.json_response(_model_card(engine, engine.adapters.served.get(name)))


async def handle_load_lora(request: web.Request) -> web.Response:
    """vLLM's ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}``: 200 with a short
    text, 400 when the adapter cannot be served; the same name and path again is a no-op."""
    body = Fields(await _json_body(request))
    name, path = body.required("lora_name"), body.required("lora_path")
    loaded = await request.app[ENGINE_KEY].load_adapter(name, path)
    done = "added successfully" if loaded else "was already loaded from that path"
    return web.Response(text=f"Success: LoRA adapter '{name}' {done}.")


async def handle_unload_lora(request: web.Request) -> web.Response:
    """vLLM's ``POST /v1/unload_lora_adapter {"lora_name"}``: 200, or 404 when not loaded."""
    name = Fields(await _json_body(request)).required("lora_name")
    await request.app[ENGINE_KEY].unload_adapter(name)
    return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


async def handle_stats(request: web.Request) -> web.Response:
    engine = request.app[ENGINE_KEY]
    stats = asdict(engine.scheduler.stats)
    stats["max_batch_size"] = engine.scheduler.max_batch_size
    stats["kv_cache"] = engine.scheduler.kv_cache
    stats["max_loras"] = engine.adapters.max_loras
    return web.json_response(stats)


async def handle_metrics(request: web.Request) -> web.Response:
    """The same counters in Prometheus' text format."""
    stats = asdict(request.app[ENGINE_KEY].scheduler.stats)
    lines = []
    for name, value in stats.items():
        metric = f"openmaas_engine_{name}"
        kind = (
            "gauge"
            if name.startswith(("requests_running", "requests_waiting", "max_", "lora_adapters"))
            else "counter"
        )
        lines += [f"# TYPE {metric} {kind}", f"{metric} {value}"]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def handle_chat(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    req = parse_chat(engine, await _json_body(request))
    seq = engine.submit(req.prompts[0], req.params, req.adapter)
    try:
        if req.stream:
            return await stream_sse(request, chat_frames(engine, req, seq))
        return web.json_response(chat_response(engine, req, await collect(seq)))
    finally:
        seq.cancel()  # no-op when finished; frees the batch slot when the client went away


async def handle_completion(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    req = parse_completion(engine, await _json_body(request))
    seqs = [engine.submit(p, req.params, req.adapter) for p in req.prompts]
    try:
        if req.stream:
            return await stream_sse(request, completion_frames(engine, req, seqs[0]))
        results = await asyncio.gather(*(collect(s) for s in seqs))
        choices = [
            completion_choice(engine, req, i, s, r)
            for i, (s, r) in enumerate(zip(seqs, results, strict=True))
        ]
        body = {
            **envelope(req, "text_completion", "cmpl"),
            "choices": choices,
            "usage": usage(sum(map(len, req.prompts)), sum(len(r.tokens) for r in results)),
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


API_KEY_ENV = transformers_adapter.API_KEY_ENV


def auth_middleware(api_key: str) -> Any:
    """Require ``Authorization: Bearer <api_key>`` on ``/v1``; ``/health`` stays open for
    the agent's probe. The gateway holds each replica's key; nothing else should call."""
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise ApiError(
                    401,
                    "Invalid or missing engine API key.",
                    code="invalid_api_key",
                    type_="authentication_error",
                )
        return await handler(request)

    return check


def build_app(engine: Engine, api_key: str = "") -> web.Application:
    """The engine's aiohttp application; with ``api_key``, ``/v1`` needs it as bearer."""
    middlewares: list[Any] = [error_middleware]
    if api_key:
        middlewares.append(auth_middleware(api_key))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[ENGINE_KEY] = engine
    app.router.add_get("/health", handle_health)
    app.router.add_get("/v1/models", handle_models)
    app.router.add_get("/v1/models/{model:.+}", handle_model)  # names may contain "/"
    app.router.add_get("/v1/engine/stats", handle_stats)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_post("/v1/chat/completions", handle_chat)
    app.router.add_post("/v1/completions", handle_completion)
    app.router.add_post("/v1/load_lora_adapter", handle_load_lora)
    app.router.add_post("/v1/unload_lora_adapter", handle_unload_lora)
    return app
