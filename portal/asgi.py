"""ASGI entry point: the gateway's hot paths go to a lean app, the rest to Django."""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()

from portal.gateway import app as gateway  # noqa: E402


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and gateway.handles(scope["path"]):
        await gateway.application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await bounded(scope, receive, send)
    else:
        await django_app(scope, receive, send)


VERSION_UPLOAD = re.compile(r"^/api/datasets/[^/]+/[^/]+/versions/$")


def body_limit(path: str) -> int:
    """The most bytes a request body to ``path`` may carry. Django's ASGI handler reads a
    whole body (to a temporary file) before any view or upload handler runs, so the
    limit is enforced here, before that; only the upload endpoints take files."""
    from django.conf import settings

    framing = 1024 * 1024  # multipart boundaries and form fields
    if path.startswith("/v1/files"):
        return settings.FILES_MAX_BYTES + framing
    if VERSION_UPLOAD.match(path):
        files = settings.DATASET_MAX_FILE_BYTES * settings.DATASET_MAX_FILES_PER_VERSION
        return files + framing
    return 2 * settings.DATA_UPLOAD_MAX_MEMORY_SIZE


async def bounded(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django behind a body-size guard: 413 on a declared length over the limit, and a
    body without one is cut off once it passes the limit."""
    limit = body_limit(scope["path"])
    declared = dict(scope.get("headers") or []).get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        await _too_large(scope, send, limit)
        return
    received = 0
    over = started = False

    async def counted() -> dict[str, Any]:
        nonlocal received, over
        message: dict[str, Any] = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                over = True
                return {"type": "http.disconnect"}  # Django stops reading and gives up
        return message

    async def watched(message: Mapping[str, Any]) -> None:
        nonlocal started
        started = True
        await send(message)

    await django_app(scope, counted, watched)
    if over and not started:
        await _too_large(scope, send, limit)


async def _too_large(scope: dict[str, Any], send: Any, limit: int) -> None:
    import json

    message = f"The request body is over the limit of {limit} bytes."
    if scope["path"].startswith("/v1/"):
        payload: dict[str, Any] = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "request_too_large",
            }
        }
    else:
        payload = {"detail": message, "code": "request_too_large"}
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _preload() -> None:
    """What the gateway's inline moderation would otherwise import on its first check."""
    from django.conf import settings

    if settings.GOVERNANCE_INLINE:
        from governance.moderation import hashing

        hashing.preload()


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _preload()
            # Objects alive at start-up live for good: keep them out of full collections,
            # which otherwise stall the event loop for tens of milliseconds under load.
            gc.collect()
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await gateway.close_sessions()
            await send({"type": "lifespan.shutdown.complete"})
            return
