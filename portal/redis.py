"""Redis clients: one asyncio client per event loop (the web process has one loop)."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings

_clients: dict[int, Any] = {}


def async_redis() -> Any:
    import redis.asyncio as aioredis

    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_URL, max_connections=256)
        _clients[loop_id] = client
    return client
