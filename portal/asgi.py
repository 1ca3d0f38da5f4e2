"""ASGI entry point: the gateway's hot paths go to a lean app, the rest to Django."""

from __future__ import annotations

import gc
import os
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
    else:
        await django_app(scope, receive, send)


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Objects alive at start-up live for good: keep them out of full collections,
            # which otherwise stall the event loop for tens of milliseconds under load.
            gc.collect()
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await gateway.close_sessions()
            await send({"type": "lifespan.shutdown.complete"})
            return
