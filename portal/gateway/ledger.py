"""What finished ``/v1`` requests owe Redis, sent off the requests' critical path.

A request that ends hands its limiter settlement and its usage event to this event
loop's :class:`Ledger` (:func:`record`, no waiting) and returns, so the connection is
free for its next request at once. The commands are queued on the shared Redis
connection at once (the settlement script call and the XADD), so they go out in the
same write as everything else sent during this turn of the event loop, and ahead of
any reservation made later: a client's next request sees the slot and tokens its last
one freed. Their replies are checked by a callback, not by the request.

Nothing is lost on a clean shutdown: :func:`drain` (called by the lifespan shutdown
before the connections close) waits for the replies still due. When Redis is
unreachable the usage is dropped with a warning, as before.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from compute.metering import STREAM, UsageEvent, metrics
from portal.limits import Settlement, settle, settle_command
from portal.limits.wire import is_noscript, wire

logger = logging.getLogger(__name__)


class Ledger:
    """One event loop's settlements and usage events still waiting for Redis' reply."""

    def __init__(self) -> None:
        self.waiting: set[asyncio.Future[Any]] = set()

    def record(self, settlement: Settlement | None, event: UsageEvent | None) -> None:
        """Send a finished request's settlement and usage event; returns at once."""
        settlements = [] if settlement is None else [settlement]
        events = [] if event is None else [event]
        commands = [*([settle_command(settlements)] if settlements else []), *xadds(events)]
        futures = wire().send_now(commands)
        if futures is None:  # not connected: connect in a task of its own
            self._track(asyncio.ensure_future(send_batch(settlements, events)))
            return
        replies = asyncio.gather(*futures)
        replies.add_done_callback(lambda done: self._check(done, settlements, events))
        self._track(replies)
        for e in events:
            metrics.observe(e)

    def _track(self, future: asyncio.Future[Any]) -> None:
        self.waiting.add(future)
        future.add_done_callback(self.waiting.discard)

    def _check(
        self, done: asyncio.Future[Any], settlements: list[Settlement], events: list[UsageEvent]
    ) -> None:
        """A reply arrived: retry a settlement Redis did not know the script for."""
        if done.cancelled() or done.exception() is not None:
            logger.warning("Redis unreachable: usage of a request not recorded")
        elif settlements and is_noscript(done.result()[0]):
            self._track(asyncio.ensure_future(send_batch(settlements, [])))

    async def drain(self) -> None:
        """Wait until every reply has arrived."""
        while self.waiting:
            await asyncio.gather(*self.waiting, return_exceptions=True)


def xadds(events: list[UsageEvent]) -> list[tuple[Any, ...]]:
    maxlen = settings.GATEWAY_USAGE_STREAM_MAXLEN
    return [("XADD", STREAM, "MAXLEN", "~", maxlen, "*", *stream_fields(e)) for e in events]


async def send_batch(settlements: list[Settlement], events: list[UsageEvent]) -> None:
    """Settle ``settlements`` and XADD ``events`` in one round trip (connecting first)."""
    try:
        await settle(settlements, *xadds(events))
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
