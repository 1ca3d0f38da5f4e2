"""What finished ``/v1`` requests owe Redis, sent off the requests' critical path.

A request that ends hands its limiter settlement and its usage event to this event
loop's :class:`Ledger` (:func:`record`, no waiting) and returns, so the connection is
free for its next request at once. The ledger sends everything recorded meanwhile in
one write: one script call that settles every reservation of the batch, then one XADD
per usage event. One batch is in flight at a time; what finishes while it is goes into
the next, so under load the Redis work per request shrinks as the batches grow, and at
rest a record leaves in the next turn of the event loop.

Nothing is lost on a clean shutdown: :func:`drain` (called by the lifespan shutdown
before the connections close) sends what is left and waits for it. When Redis is
unreachable the batch is dropped with a warning, as a single request's would be.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from django.conf import settings
from redis.exceptions import RedisError

from compute.metering import STREAM, UsageEvent, metrics
from portal.limits import Settlement, settle

logger = logging.getLogger(__name__)

MAX_BATCH = 512  # settlements per script call: bounds the time Redis spends in one


class Ledger:
    """One event loop's pending settlements and usage events."""

    def __init__(self) -> None:
        self.settlements: list[Settlement] = []
        self.events: list[UsageEvent] = []
        self.sending: asyncio.Task[None] | None = None

    def record(self, settlement: Settlement | None, event: UsageEvent | None) -> None:
        """Queue a finished request's settlement and usage event; returns at once."""
        if settlement is not None:
            self.settlements.append(settlement)
        if event is not None:
            self.events.append(event)
        if self.sending is None:
            self.sending = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        """Send batches until nothing is left (the first after one turn of the loop)."""
        try:
            await asyncio.sleep(0)
            while self.settlements or self.events:
                settlements, events = self.settlements[:MAX_BATCH], self.events[:MAX_BATCH]
                del self.settlements[:MAX_BATCH], self.events[:MAX_BATCH]
                await send_batch(settlements, events)
        finally:
            self.sending = None

    async def drain(self) -> None:
        """Send whatever is queued and wait until it has been sent."""
        if self.sending is None and (self.settlements or self.events):
            self.sending = asyncio.get_running_loop().create_task(self._send_all())
        if self.sending is not None:
            await asyncio.shield(self.sending)


async def send_batch(settlements: list[Settlement], events: list[UsageEvent]) -> None:
    """Settle ``settlements`` and XADD ``events`` in one round trip."""
    maxlen = settings.GATEWAY_USAGE_STREAM_MAXLEN
    xadds = [("XADD", STREAM, "MAXLEN", "~", maxlen, "*", *stream_fields(e)) for e in events]
    try:
        await settle(settlements, *xadds)
    except RedisError:
        logger.warning(
            "Redis unreachable: usage of %d requests not recorded",
            max(len(settlements), len(events)),
        )
    for event in events:
        metrics.observe(event)


_EVENT_FIELDS = list(UsageEvent.__dataclass_fields__)


def stream_fields(event: UsageEvent) -> list[str]:
    """``event.encode()`` flattened for XADD, without ``asdict``'s deep copies."""
    flat: list[str] = []
    for name in _EVENT_FIELDS:
        value = getattr(event, name)
        flat += (
            name,
            "" if value is None else str(int(value) if value is True or value is False else value),
        )
    return flat


_ledgers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Ledger] = weakref.WeakKeyDictionary()


def ledger() -> Ledger:
    """This event loop's ledger."""
    loop = asyncio.get_running_loop()
    found = _ledgers.get(loop)
    if found is None:
        found = _ledgers[loop] = Ledger()
    return found


def record(settlement: Settlement | None, event: UsageEvent | None) -> None:
    """Queue a finished request's settlement and usage event (see :class:`Ledger`)."""
    if settlement is not None or event is not None:
        ledger().record(settlement, event)


async def drain() -> None:
    """Send what this event loop's ledger holds and wait for it (the process is stopping)."""
    found = _ledgers.get(asyncio.get_running_loop())
    if found is not None:
        await found.drain()
