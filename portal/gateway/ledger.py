"""What finished ``/v1`` requests owe Redis, sent off the requests' critical path.

A request that ends hands its limiter settlement and its usage event to this event
loop's :class:`Ledger` (:func:`record`, no waiting) and returns, so the connection is
free for its next request at once. The ledger queues one script call on the shared Redis
connection at once (:meth:`Wire.queue`) and adds to it every settlement recorded until
something else is queued behind it, and every usage event until it is sent; it is packed
when the connection's next write goes out: with the next command sent without delay
(usually a reservation), or :data:`SEND_WITHIN_S` later. So the requests that end close
together cost Redis one call (settle them all, then XADD their events as one entry, see
``compute.metering``), and each settlement keeps its place ahead of any reservation
made later: a client's next request sees the slot and tokens its last one freed. A
batch with no settlement in it (a key admitted against its lease settles in the process,
see ``portal.limits.leases``; or limits are off) waits up to :data:`USAGE_WITHIN_S`
instead, so that more requests share its call; a settlement added to it hurries it
along. The reply is checked by a callback, not by the request.

Governance events (moderation decisions, provenance, offenders: lists of packed entries
for ``openmaas:governance``) ride along: a batch that may carry them is followed by its
:class:`Tail`, one ``EVAL`` that appends them (a ``PING`` when none came), queued with it
and packed in the same write, so they cost no round trip of their own.

Nothing is lost on a clean shutdown: :func:`drain` (called by the lifespan shutdown
before the connections close) waits for the replies still due. When Redis is
unreachable the usage is dropped with a warning, as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import hiredis
from django.conf import settings
from redis.exceptions import RedisError

from compute.metering import STREAM, Row, metrics, pack_rows
from governance.services import events as governance_events
from portal.limits import Settlement, settle, settle_command
from portal.limits.wire import is_noscript, wire
from portal.loops import PerLoop

logger = logging.getLogger(__name__)
# How long a settlement may wait to ride along with the next reservation's write (one
# write and one Redis wake-up fewer per request) before it is sent on its own: short,
# since its slot stays taken until then for the key's requests on other connections.
SEND_WITHIN_S = 0.001
# How long usage and governance events alone may wait for company: they hold nothing
# back, and a clean shutdown sends them (:func:`drain`).
USAGE_WITHIN_S = 0.01


# Appends ARGV[2..] to the stream KEYS[1], trimmed to about ARGV[1] entries.
XADD_ALL = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
return #ARGV - 1
"""
_PING = hiredis.pack_command(("PING",))


class Tail:
    """The governance events of one batch: one command queued right behind it."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[str] = []

    def pack(self) -> bytes:
        if not self.entries:
            return _PING
        return hiredis.pack_command(xadd_command(self.entries))


def xadd_command(entries: list[str]) -> tuple[Any, ...]:
    return ("EVAL", XADD_ALL, 1, governance_events.STREAM, governance_events.MAXLEN, *entries)


class Batch:
    """The settlements and usage events of one script call (and its governance tail)."""

    __slots__ = ("events", "observed", "sealed", "settlements", "tail")

    def __init__(self) -> None:
        self.settlements: list[Settlement] = []
        self.events: list[Row] = []
        self.tail: Tail | None = None
        self.observed = False  # its events were counted in the metrics
        # Packed to be sent, or its call failed: it takes no more usage events.
        self.sealed = False

    def add(
        self,
        settlement: Settlement | None,
        event: Row | None,
        governance: list[str] | None = None,
    ) -> None:
        if settlement is not None:
            self.settlements.append(settlement)
        if event is not None:
            self.events.append(event)
        if governance:
            if self.tail is None:
                self.tail = Tail()
            self.tail.entries.extend(governance)

    def pack(self) -> bytes:
        self.sealed = True
        return hiredis.pack_command(
            settle_command(
                self.settlements,
                STREAM,
                settings.GATEWAY_USAGE_STREAM_MAXLEN,
                pack_events(self),
            )
        )


def pack_events(batch: Batch) -> list[bytes]:
    """The batch's usage events as stream entries (one, or none); the first time, counts
    them in the metrics on the way (here, once per batch, rather than on each request's
    path)."""
    if not batch.events:
        return []
    if not batch.observed:
        batch.observed = True
        metrics.observe_all(batch.events)
    return [pack_rows(batch.events)]


class Ledger:
    """One event loop's settlements and usage events still waiting for Redis' reply."""

    def __init__(self) -> None:
        self.waiting: set[asyncio.Future[Any]] = set()
        self.open: Batch | None = None

    def record(
        self,
        settlement: Settlement | None,
        event: Row | None,
        governance: list[str] | None = None,
    ) -> None:
        """Send a finished request's settlement, usage event and governance events;
        returns at once."""
        batch = self.open
        if settlement is None and governance is None and batch is not None and not batch.sealed:
            # The usual case: a usage event alone, which may join any batch not sent yet
            # (only settlements must stay ahead of the commands queued after them).
            if event is not None:
                batch.events.append(event)
            return
        connection = wire()
        within_s = USAGE_WITHIN_S if settlement is None else SEND_WITHIN_S
        if batch is None or not connection.queued_last(batch.tail or batch):
            batch = Batch()
            reply = connection.queue(batch, within_s)
            if reply is None:  # not connected: connect in a task of its own
                batch.add(settlement, event, governance)
                self._track(asyncio.ensure_future(send_batch(batch)))
                return
            self.open = batch
            reply.add_done_callback(lambda done: self._check(done, batch))
            self._track(reply)
            if settings.GOVERNANCE_INLINE:
                batch.tail = Tail()
                tail_reply = connection.queue(batch.tail, within_s)
                if tail_reply is not None:
                    tail_reply.add_done_callback(lambda done: self._check_tail(done, batch))
                    self._track(tail_reply)
        elif settlement is not None:
            connection.hurry(SEND_WITHIN_S)
        batch.add(settlement, event, governance)

    def _track(self, future: asyncio.Future[Any]) -> None:
        self.waiting.add(future)
        future.add_done_callback(self.waiting.discard)

    def _check(self, done: asyncio.Future[Any], batch: Batch) -> None:
        """A reply arrived: retry a batch Redis did not know the script for."""
        batch.sealed = True
        if done.cancelled() or done.exception() is not None:
            logger.warning("Redis unreachable: usage of %d requests not recorded", _size(batch))
        elif is_noscript(done.result()):
            self._track(asyncio.ensure_future(send_batch(batch)))

    def _check_tail(self, done: asyncio.Future[Any], batch: Batch) -> None:
        lost = done.cancelled() or done.exception() is not None
        if lost or isinstance(done.result(), hiredis.ReplyError):
            count = len(batch.tail.entries) if batch.tail else 0
            logger.warning("Redis refused or unreachable: %d governance events lost", count)

    async def drain(self) -> None:
        """Wait until every reply has arrived."""
        while self.waiting:
            await asyncio.gather(*self.waiting, return_exceptions=True)


def _size(batch: Batch) -> int:
    return max(len(batch.settlements), len(batch.events))


async def send_governance(entries: list[str]) -> None:
    """Append governance events on their own (no batch to ride on)."""
    try:
        (reply,) = await wire().execute(xadd_command(entries))
        if isinstance(reply, Exception):
            raise reply
    except RedisError:
        logger.warning("Redis unreachable: %d governance events not recorded", len(entries))


async def send_batch(batch: Batch) -> None:
    """Settle and publish ``batch`` in one round trip (connecting, loading the script)."""
    try:
        await settle(
            batch.settlements,
            STREAM,
            settings.GATEWAY_USAGE_STREAM_MAXLEN,
            pack_events(batch),
        )
    except RedisError:
        logger.warning("Redis unreachable: usage of %d requests not recorded", _size(batch))
    if batch.tail is not None and batch.tail.entries:
        await send_governance(batch.tail.entries)


# This event loop's ledger.
ledger = PerLoop(Ledger)


def record(
    settlement: Settlement | None,
    event: Row | None,
    governance: list[str] | None = None,
) -> None:
    """Queue a finished request's settlement, usage event and governance events (see
    :class:`Ledger`)."""
    if settlement is not None or event is not None or governance:
        ledger().record(settlement, event, governance)


async def drain() -> None:
    """Send what this event loop's ledger holds and wait for it (the process is stopping)."""
    found = ledger.existing()
    if found is not None:
        await found.drain()
