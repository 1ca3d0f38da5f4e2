"""A lean ASGI application for ``/v1/models``, ``/v1/chat/completions`` and
``/v1/completions``.

These requests are the platform's hot path, so they bypass Django's middleware stack
(whose sync middleware would cost a thread hop each) while sharing its settings, ORM
and services: authenticate the API key (Redis-cached), validate the body, pick a ready
replica, relay the answer — streamed chunk by chunk for ``stream: true``. Every failure
is answered in OpenAI's error shape; none is a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import aiohttp
from django.conf import settings

from compute.routing import Route, route_table
from portal.auth import bearer_token
from portal.errors import (
    AuthenticationFailed,
    NotFound,
    PlatformError,
    Unavailable,
    openai_error_body,
)
from portal.gateway.validation import validate_body
from portal.models.ownership import Principal
from portal.services.keys import KeyGrant, resolve_grant

logger = logging.getLogger(__name__)

T = TypeVar("T")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

INFERENCE_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
JSON_HEADERS = [(b"content-type", b"application/json")]
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


def handles(path: str) -> bool:
    return path in INFERENCE_PATHS or path == "/v1/models" or path.startswith("/v1/models/")


def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=5, sock_read=settings.GATEWAY_UPSTREAM_TIMEOUT_S
        )
        session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        _sessions[loop] = session
    return session


async def close_sessions() -> None:
    for session in list(_sessions.values()):
        await session.close()
    _sessions.clear()


async def send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *JSON_HEADERS,
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, exc: PlatformError) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="openmaas"'))
    body = openai_error_body(exc.message, error_type=exc.error_type, code=exc.code, param=exc.param)
    await send_json(send, exc.status, body, headers)


class BodyTooLarge(PlatformError):
    status = 413
    code = "request_too_large"


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes before it is all read."""
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge(f"Request body exceeds {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body exceeds {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


async def authenticate(scope: Scope) -> KeyGrant:
    token = bearer_token(_header(scope, b"authorization"))
    if token is None:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer sk-…'.",
            code="missing_api_key",
        )
    grant = await resolve_grant(token)
    if grant is None:
        raise AuthenticationFailed("Incorrect, expired or revoked API key.")
    return grant


def visible(principal: Principal, route: Route) -> bool:
    return principal.can_read(route.owner_user_id, route.owner_org_id, route.visibility)


def model_card(route: Route) -> dict[str, Any]:
    return {
        "id": route.served_name,
        "object": "model",
        "created": route.created,
        "owned_by": route.served_name.split("/", 1)[0],
    }


async def list_models(grant: KeyGrant, send: Send) -> None:
    routes = await route_table().current()
    principal = grant.principal
    data = [model_card(r) for r in routes.values() if visible(principal, r)]
    await send_json(send, 200, {"object": "list", "data": data})


async def get_model(grant: KeyGrant, name: str, send: Send) -> None:
    route = (await route_table().current()).get(name)
    if route is None or not visible(grant.principal, route):
        raise _model_not_found(name)
    await send_json(send, 200, model_card(route))


def _model_not_found(name: str) -> PlatformError:
    return NotFound(
        f"The model '{name}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry for gateway paths (see :func:`handles`)."""
    path, method = scope["path"], scope["method"]
    try:
        if path in INFERENCE_PATHS and method != "POST":
            raise PlatformError("Use POST.", code="method_not_allowed", status=405)
        if path.startswith("/v1/models") and method != "GET":
            raise PlatformError("Use GET.", code="method_not_allowed", status=405)
        grant = await authenticate(scope)
        if path == "/v1/models":
            await list_models(grant, send)
        elif path.startswith("/v1/models/"):
            await get_model(grant, path[len("/v1/models/") :], send)
        else:
            await infer(scope, receive, send, grant, INFERENCE_PATHS[path])
    except PlatformError as exc:
        await send_error(send, exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("gateway failure on %s", path)
        await send_error(
            send,
            PlatformError(
                "The gateway failed to handle the request.",
                code="internal_error",
                status=502,
                error_type="server_error",
            ),
        )


async def infer(scope: Scope, receive: Receive, send: Send, grant: KeyGrant, kind: str) -> None:
    body = await read_body(scope, receive, settings.GATEWAY_MAX_BODY_BYTES)
    payload = validate_body(body, kind)
    name = payload["model"]
    table = route_table()
    route = (await table.current()).get(name)
    if route is None or not visible(grant.principal, route):
        raise _model_not_found(name)
    for url in table.candidates(route):
        table.begin(url)
        try:
            upstream_headers = {
                "content-type": "application/json",
                "authorization": f"Bearer {route.secrets.get(url, '')}",
            }
            if await relay(
                url + scope["path"],
                body,
                upstream_headers,
                send,
                receive,
                stream=bool(payload.get("stream")),
            ):
                return
        finally:
            table.end(url)
        table.mark_down(url)
    raise Unavailable(
        f"No replica of '{name}' is ready right now; try again shortly.",
        code="no_replica_ready",
        headers={"Retry-After": "2"},
    )


async def relay(
    url: str,
    body: bytes,
    upstream_headers: dict[str, str],
    send: Send,
    receive: Receive,
    *,
    stream: bool,
) -> bool:
    """Forward to one replica; False if it could not be reached (try another)."""
    if not stream:
        answer = await unless_hung_up(_fetch(url, body, upstream_headers), receive)
        if answer is None:
            return True  # the client hung up; the upstream request was cancelled with it
        if answer is False:
            return False
        await _send_whole(send, *answer)
        return True
    try:
        upstream = await _session().post(url, data=body, headers=upstream_headers)
    except (TimeoutError, aiohttp.ClientConnectionError):
        return False
    async with upstream:
        content_type = upstream.headers.get("content-type", "application/json").encode()
        if upstream.status != 200:
            await _send_whole(send, upstream.status, content_type, await upstream.read())
            return True
        headers = [
            (b"content-type", content_type),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _pump(upstream, send, receive)
    return True


async def _fetch(
    url: str, body: bytes, upstream_headers: dict[str, str]
) -> tuple[int, bytes, bytes] | Literal[False]:
    """A non-streamed answer: (status, content type, body); False if unreachable."""
    try:
        upstream = await _session().post(url, data=body, headers=upstream_headers)
    except (TimeoutError, aiohttp.ClientConnectionError):
        return False
    async with upstream:
        content_type = upstream.headers.get("content-type", "application/json").encode()
        return upstream.status, content_type, await upstream.read()


async def _send_whole(send: Send, status: int, content_type: bytes, payload: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def unless_hung_up(work: Awaitable[T], receive: Receive) -> T | None:
    """``work``'s result, or None if the client sends ``http.disconnect`` first: ``work``
    is then cancelled (aiohttp closes the upstream connection, which cancels the replica's
    generation), so an abandoned request does not keep a replica busy for nobody.

    One watcher task per call, which cancels this task on a hang-up (cheaper than racing
    two tasks: this sits on the hot path)."""
    me = asyncio.current_task()
    assert me is not None
    hung_up = False

    async def watch() -> None:
        nonlocal hung_up
        while (await receive())["type"] != "http.disconnect":
            pass
        hung_up = True
        me.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not hung_up:
            raise
        me.uncancel()
        return None
    finally:
        watcher.cancel()


async def _pump(upstream: aiohttp.ClientResponse, send: Send, receive: Receive) -> None:
    """Relay SSE chunks until the upstream ends or the client goes away."""
    disconnected = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.create_task(watch())
    try:
        async for chunk in upstream.content.iter_any():
            if disconnected.is_set():
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except (TimeoutError, aiohttp.ClientError):
        # The replica died mid-stream: end the response with an error event the SDKs
        # surface, rather than leaving the client hanging.
        error = openai_error_body(
            "The model replica failed mid-stream.", error_type="server_error", code="replica_failed"
        )
        await send(
            {"type": "http.response.body", "body": f"data: {json.dumps(error)}\n\n".encode()}
        )
    finally:
        watcher.cancel()
