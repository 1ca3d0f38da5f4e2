"""Redis clients: one asyncio client per event loop (the web process has one loop)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from django.conf import settings

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def async_redis() -> Any:
    import redis.asyncio as aioredis

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = aioredis.Redis.from_url(settings.REDIS_URL, max_connections=256)
    return client
