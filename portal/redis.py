"""Redis clients: one asyncio client per event loop (the web process has one loop).

The gateway's hot path depends on Redis, so a Redis that is down must fail fast: a
one-second connect timeout and one quick retry, never seconds of backoff per request.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from django.conf import settings

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def async_redis() -> Any:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = aioredis.Redis.from_url(
            settings.REDIS_URL,
            max_connections=256,
            socket_connect_timeout=1.0,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        )
    return client
