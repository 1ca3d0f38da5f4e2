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
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.conf import settings
from redis.exceptions import RedisError

from compute.metering import Row
from compute.routing import Route, route_table
from governance.inline import StreamFilter
from governance.services.classifiers import GUARD_SCOPE
from portal.auth import bearer_token
from portal.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PlatformError,
    Unavailable,
    openai_error_body,
)
from portal.gateway import moderation, upstream
from portal.gateway.exchange import (
    Exchange,
    StreamTap,
    completion_reserve,
    estimate_prompt_tokens,
)
from portal.gateway.ledger import drain, record
from portal.gateway.server import HEAD
from portal.gateway.session import session_grant
from portal.gateway.validation import validate_body
from portal.limits import admit_leased, leases, limits_unavailable, reserve, settlement
from portal.limits.wire import close_wires
from portal.logs import request_id
from portal.models.keys import model_allowed, model_namespace, scope_allows
from portal.models.ownership import Principal
from portal.services.keys import KeyGrant, resolve_grant, resolve_grant_uncached

logger = logging.getLogger(__name__)
# nginx's status for a request whose client closed the connection before the answer.
CLIENT_CLOSED = 499

T = TypeVar("T")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

INFERENCE_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
JSON_HEADERS = [(b"content-type", b"application/json")]


def handles(path: str) -> bool:
    return path in INFERENCE_PATHS or path == "/v1/models" or path.startswith("/v1/models/")


async def close_sessions() -> None:
    """Close the upstream sessions, hand back the limits' leases, send what the ledger
    holds and close the Redis connection (the process is stopping)."""
    upstream.close()
    await leases.release_all()
    await drain()
    close_wires()


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


class ClientGone(Exception):
    """The client hung up before its request was read: nothing to answer."""


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
            raise ClientGone
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


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def authenticate(scope: Scope) -> KeyGrant:
    token = bearer_token(_header(scope, b"authorization"))
    if token is None:
        # The playground: a signed-in browser's session, same-origin only.
        session = await session_grant(scope)
        if session is not None:
            return session
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer sk-…'.",
            code="missing_api_key",
        )
    try:
        grant = await resolve_grant(token, _client(scope))
    except RedisError:
        if settings.GATEWAY_REDIS_FAILURE != "open":
            logger.warning("Redis unreachable: refusing /v1 requests (GATEWAY_REDIS_FAILURE)")
            raise limits_unavailable() from None
        grant = await resolve_grant_uncached(token)
    if grant is None:
        raise AuthenticationFailed("Incorrect, expired or revoked API key.")
    return grant


def require_inference(grant: KeyGrant) -> None:
    if not scope_allows(grant.scopes, "inference"):
        raise PermissionDenied(
            "This API key lacks the 'inference' scope.", code="insufficient_scope"
        )


def visible(principal: Principal, route: Route) -> bool:
    return principal.can_read(route.owner_user_id, route.owner_org_id, route.visibility)


def model_card(route: Route) -> dict[str, Any]:
    return {
        "id": route.served_name,
        "object": "model",
        "created": route.created,
        "owned_by": model_namespace(route.served_name),
    }


def usable(grant: KeyGrant, route: Route) -> bool:
    return visible(grant.principal, route) and model_allowed(
        grant.allowed_models, route.served_name
    )


async def list_models(grant: KeyGrant, send: Send) -> None:
    require_inference(grant)
    routes = await route_table().current()
    data = [model_card(r) for r in routes.values() if usable(grant, r)]
    await send_json(send, 200, {"object": "list", "data": data})


async def get_model(grant: KeyGrant, name: str, send: Send) -> None:
    require_inference(grant)
    route = (await route_table().current()).get(name)
    if route is None or not usable(grant, route):
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
    ex = Exchange(send)
    context = request_id.set(ex.request_id)
    try:
        if path in INFERENCE_PATHS and method != "POST":
            raise PlatformError("Use POST.", code="method_not_allowed", status=405)
        if path.startswith("/v1/models") and method != "GET":
            raise PlatformError("Use GET.", code="method_not_allowed", status=405)
        grant = await authenticate(scope)
        if path == "/v1/models":
            await list_models(grant, ex.send)
        elif path.startswith("/v1/models/"):
            await get_model(grant, path[len("/v1/models/") :], ex.send)
        else:
            ex.grant, ex.kind = grant, INFERENCE_PATHS[path]
            await infer(scope, receive, ex, grant)
    except PlatformError as exc:
        ex.error_code = exc.code
        await send_error(ex.send, exc)
    except ClientGone:
        ex.status, ex.error_code = CLIENT_CLOSED, "client_disconnected"
    except Exception:
        logger.exception("gateway failure on %s", path)
        ex.error_code = "internal_error"
        await send_error(
            ex.send,
            PlatformError(
                "The gateway failed to handle the request.",
                code="internal_error",
                status=502,
                error_type="server_error",
            ),
        )
    finally:
        if ex.grant is not None:
            finish(ex)
        request_id.reset(context)


async def infer(scope: Scope, receive: Receive, ex: Exchange, grant: KeyGrant) -> None:
    require_inference(grant)
    body = await read_body(scope, receive, settings.GATEWAY_MAX_BODY_BYTES)
    payload = validate_body(body, ex.kind)
    ex.model = name = payload["model"]
    ex.stream = stream = bool(payload.get("stream"))
    if not model_allowed(grant.allowed_models, name):
        raise PermissionDenied(
            f"This API key may not use the model '{name}'.", code="model_not_allowed", param="model"
        )
    table = route_table()
    route = (await table.current()).get(name)
    if route is None or not visible(grant.principal, route):
        raise _model_not_found(name)
    ex.route = route
    if settings.GOVERNANCE_INLINE and GUARD_SCOPE not in grant.scopes:
        # Before anything is reserved or sent: a refused request goes nowhere. (The guard
        # model's own requests quote the rubric, which names every risk: not moderated.)
        await moderation.begin(ex, grant, payload, route)
    if stream and (settings.GATEWAY_LIMITS or settings.GATEWAY_METERING):
        body = ex.ask_for_usage(payload, body)
    if settings.GATEWAY_LIMITS and not reserve_leased_for(ex, grant, payload, scope):
        await reserve_for(ex, grant, route)
    for url in table.candidates(route):
        table.begin(url)
        try:
            ex.replica = url
            if await relay(url, scope["path"], body, ex, receive):
                return
        finally:
            table.end(url)
        table.mark_down(url)
    ex.replica = None
    raise Unavailable(
        f"No replica of '{name}' is ready right now; try again shortly.",
        code="no_replica_ready",
        headers={"Retry-After": "2"},
    )


def reserve_leased_for(
    ex: Exchange, grant: KeyGrant, payload: dict[str, Any], scope: Scope
) -> bool:
    """Estimate the request's tokens; True if the key's lease in this process admitted it
    at once (the usual case for a busy key with large limits), else :func:`reserve_for`.
    Its rate headers go to the connection as lines for the answer's head when it takes
    them (``portal.gateway.server``: the head is the connection's next write)."""
    ex.prompt_estimate = estimate_prompt_tokens(payload, ex.kind)
    ex.completion_reserve = completion_reserve(payload, ex.kind)
    lease = admit_leased(grant, ex.prompt_estimate + ex.completion_reserve)
    if lease is None:
        return False
    ex.lease = lease
    extensions = scope.get("extensions")
    corked = extensions.get(HEAD) if extensions else None
    if corked is not None:
        corked.head_end = lease.rate_head()
    else:
        ex.headers += lease.rate_headers()
    return True


async def reserve_for(ex: Exchange, grant: KeyGrant, route: Route) -> None:
    """Reserve the request's estimated tokens and spend; 429 if a limit refuses it."""
    prompt, completion = ex.prompt_estimate, ex.completion_reserve
    try:
        ex.reservation = await reserve(
            grant,
            ex.request_id,
            prompt + completion,
            route.cost_ucny(prompt, completion),
        )
    except RedisError:
        if settings.GATEWAY_REDIS_FAILURE != "open":
            logger.warning("Redis unreachable: refusing /v1 requests (GATEWAY_REDIS_FAILURE)")
            raise limits_unavailable() from None
        logger.warning("Redis unreachable: serving without limits (GATEWAY_REDIS_FAILURE=open)")
        return
    ex.headers += ex.reservation.headers


async def relay(url: str, path: str, body: bytes, ex: Exchange, receive: Receive) -> bool:
    """Forward to one replica; False if it could not be reached (try another). A replica
    that fails before the answer began is a 502 (after, see :func:`_pump`)."""
    assert ex.route is not None
    try:
        await _relay(url, path, body, ex, receive, ex.route.secrets.get(url, ""))
    except upstream.Unreachable:
        return False
    except upstream.BrokenOff as exc:
        raise _replica_failed(exc) from None
    return True


async def _relay(
    url: str, path: str, body: bytes, ex: Exchange, receive: Receive, secret: str
) -> None:
    if not ex.stream:
        answer = await unless_hung_up(upstream.fetch(url, path, body, secret), receive)
        if answer is None:
            # The client hung up; the upstream request was cancelled with it.
            ex.status, ex.error_code = CLIENT_CLOSED, "client_disconnected"
            return
        status, content_type, payload = answer
        if ex.governed is not None:
            payload = await ex.governed.answer(status, payload)
        ex.read_answer(status, payload)
        await _send_whole(ex.send, status, content_type, payload)
        return
    stream = await upstream.open_stream(url, path, body, secret)
    try:
        if stream.status != 200:
            payload = await stream.read_all()
            ex.read_answer(stream.status, payload)
            await _send_whole(ex.send, stream.status, stream.content_type, payload)
            return
        headers = [
            (b"content-type", stream.content_type),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        filtered = ex.governed.stream() if ex.governed is not None else None
        await ex.send({"type": "http.response.start", "status": 200, "headers": headers})
        await _pump(stream, ex, receive, filtered)
    finally:
        stream.close()


def _replica_failed(exc: Exception) -> PlatformError:
    logger.warning("replica failed: %s", exc)
    return PlatformError(
        "The model replica failed to answer.",
        code="replica_failed",
        status=502,
        error_type="server_error",
    )


async def _send_whole(send: Send, status: int, content_type: bytes, payload: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def unless_hung_up(work: Awaitable[T], receive: Receive) -> T | None:
    """``work``'s result, or None if the client sends ``http.disconnect`` first: ``work``
    is then cancelled (which closes the upstream connection: that cancels the replica's
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


async def _pump(
    answer: upstream.Answer,
    ex: Exchange,
    receive: Receive,
    filtered: StreamFilter | None = None,
) -> None:
    """Relay SSE chunks until the upstream ends or the client goes away; the tap reads
    usage and time to first token on the way (and drops the usage chunk we asked for).
    Through the moderation ``filtered``, events may be held back, rewritten or end the
    stream (``content_filter``), after which the upstream is dropped."""
    disconnected = asyncio.Event()
    tap = StreamTap(ex)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.create_task(watch())
    try:
        while chunk := await answer.read():
            if disconnected.is_set():
                ex.error_code = "client_disconnected"
                return
            out = tap.feed(chunk)
            if filtered is not None:
                out = filtered.feed(out) if out else b""
                if filtered.blocked:
                    ex.error_code = "content_filter"
                    await ex.send({"type": "http.response.body", "body": out})
                    return
            if out:
                await ex.send({"type": "http.response.body", "body": out, "more_body": True})
        rest = tap.rest()
        await ex.send(
            {"type": "http.response.body", "body": filtered.close(rest) if filtered else rest}
        )
    except upstream.BrokenOff:
        # The replica died mid-stream: end the response with an error event the SDKs
        # surface, rather than leaving the client hanging.
        ex.error_code = "replica_failed"
        error = openai_error_body(
            "The model replica failed mid-stream.", error_type="server_error", code="replica_failed"
        )
        held = filtered.close(b"") if filtered is not None else b""
        await ex.send(
            {"type": "http.response.body", "body": held + f"data: {json.dumps(error)}\n\n".encode()}
        )
    finally:
        watcher.cancel()


def finish(ex: Exchange) -> None:
    """After the answer: settle the request with the lease that admitted it, or queue
    its reservation's settlement; queue the usage event and the governance events for
    this loop's ledger, which sends them off the request's path (see ``ledger``). The
    lease is settled first: its slot and tokens must come back even if the rest fails."""
    metering = settings.GATEWAY_METERING
    lease, reservation, settled = ex.lease, ex.reservation, None
    if lease is not None or reservation is not None or metering:
        prompt, completion = ex.tokens()
    if lease is not None or reservation is not None:
        spend = ex.route.cost_ucny(prompt, completion) if ex.route else 0
        if lease is not None:
            lease.settle(ex.prompt_estimate + ex.completion_reserve, prompt + completion, spend)
        else:
            settled = settlement(reservation, prompt + completion, spend)
    governance = moderation.finish(ex) if ex.governed is not None else None
    event = usage_row(ex, prompt, completion) if metering else None
    record(settled, event, governance)


def usage_row(ex: Exchange, prompt: int, completion: int) -> Row:
    """The request's usage event, as a row (``compute.metering.ROW``: a tuple, cheaper
    than the event object on this path)."""
    grant, route = ex.grant, ex.route
    assert grant is not None
    replica = node = version = price_input = price_output = None
    if route is not None:
        version = route.model_version_id
        price_input, price_output = route.prices
        if ex.replica is not None:
            replica, node = route.replica_ids.get(ex.replica, (None, None))
    now = time.perf_counter()
    return (
        ex.request_id,
        ex.ts,
        grant.key_id,
        grant.user_id,
        grant.org_id,
        ex.model,
        version,
        replica,
        node,
        ex.kind,
        ex.stream,
        ex.status or CLIENT_CLOSED,
        ex.error_code if ex.status else "client_disconnected",
        prompt,
        completion,
        (now - ex.started) * 1000,  # rounded where the worker stores it
        None if ex.ttft is None else (ex.ttft - ex.started) * 1000,
        price_input,
        price_output,
    )
