"""A lean Redis connection for the gateway's per-request commands.

redis-py's asyncio client spends a few hundred microseconds of CPU per command in its
own machinery, which on the gateway's hot path (two commands per request) would cost a
third of its throughput. This is the minimum the hot path needs: one connection per
event loop, commands written as they come (``hiredis.pack_command``) and replies parsed
by ``hiredis.Reader`` and handed to waiting requests in order — Redis answers in order,
so concurrent requests share the connection, and everything sent during one turn of the
event loop goes out in one write (automatic pipelining). A command can also be queued
before it is complete and without hurry (:meth:`Wire.queue`): it keeps its place in the
write order, rides along with the next command sent (or goes out after a short wait),
and is packed when the write goes out, so callers can add to it until then.

Failures surface as redis-py's own ``ConnectionError``/``TimeoutError``, so callers treat
them like any Redis error: connecting is limited to one second, and a reply that takes
longer than :data:`REPLY_TIMEOUT_S` closes the connection and fails every waiting
command. The next command reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import hiredis
from django.conf import settings
from redis.exceptions import ConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as ReplyTimeout

from portal.loops import PerLoop

logger = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 1.0
REPLY_TIMEOUT_S = 2.0


class Deferred(Protocol):
    """A command queued before it is complete (see :meth:`Wire.queue`)."""

    def pack(self) -> bytes:
        """The command, packed (``hiredis.pack_command``); must not raise."""
        ...


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.watchdog: asyncio.TimerHandle | None = None
        self.pending: list[bytes | Deferred] = []
        self.flusher: asyncio.Handle | None = None
        self.flush_at = 0.0  # when the pending write goes out (the loop's clock)
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            future, _ = self.waiters.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def _fail(self, error: Exception) -> None:
        while self.waiters:
            future, _ = self.waiters.popleft()
            if not future.done():
                future.set_exception(error)

    def send(
        self, payload: bytes | Deferred, count: int, within_s: float = 0.0
    ) -> list[asyncio.Future[Any]]:
        """Queue ``payload`` (``count`` commands) for this turn's write, or with
        ``within_s`` for the next write that goes out within that many seconds."""
        assert self.transport is not None
        loop = self.loop
        now = time.monotonic()
        futures = [loop.create_future() for _ in range(count)]
        self.waiters.extend((f, now) for f in futures)
        self.pending.append(payload)
        self.hurry(within_s)
        if self.watchdog is None:
            self.watchdog = loop.call_later(REPLY_TIMEOUT_S, self._check)
        return futures

    def hurry(self, within_s: float) -> None:
        """Make sure what is pending goes out within ``within_s`` seconds (0: this turn)."""
        loop = self.loop
        deadline = loop.time() + within_s
        if self.flusher is not None:
            if deadline >= self.flush_at:
                return
            self.flusher.cancel()
        self.flush_at = deadline
        if within_s:
            self.flusher = loop.call_later(within_s, self._flush)
        else:
            self.flusher = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Everything queued since the last write goes out in one write."""
        self.flusher = None
        pending, self.pending = self.pending, []
        try:
            payload = b"".join(p if isinstance(p, bytes) else p.pack() for p in pending)
        except Exception:
            # A command missing from the write would hand every later reply to the
            # wrong waiter: fail them all and start over on a new connection instead.
            logger.exception("a queued Redis command could not be packed")
            self.lost = True
            self._fail(ConnectionError("a queued command could not be packed"))
            if self.transport is not None:
                self.transport.abort()
            return
        if self.transport is not None and not self.lost:
            self.transport.write(payload)

    def _check(self) -> None:
        """Close a connection whose oldest command has waited too long."""
        self.watchdog = None
        if not self.waiters:
            return
        waited = time.monotonic() - self.waiters[0][1]
        if waited >= REPLY_TIMEOUT_S:
            self._fail(ReplyTimeout("Redis did not answer in time"))
            if self.transport is not None:
                self.transport.abort()
            return
        self.watchdog = asyncio.get_running_loop().call_later(REPLY_TIMEOUT_S - waited, self._check)


class Wire:
    """One multiplexed connection to ``url`` (``redis://`` or ``rediss://``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.protocol: _Protocol | None = None
        self.connecting: asyncio.Lock = asyncio.Lock()
        self.loaded: set[bytes] = set()

    async def _connection(self) -> _Protocol:
        protocol = self.protocol
        if protocol is not None and not protocol.lost:
            return protocol
        async with self.connecting:
            if self.protocol is None or self.protocol.lost:
                self.protocol = await self._connect()
            return self.protocol

    async def _connect(self) -> _Protocol:
        parts = urlsplit(self.url)
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if parts.scheme == "rediss" else None
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    _Protocol, parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {exc}") from exc
        hello: list[tuple[Any, ...]] = []
        if parts.password:
            user = unquote(parts.username) if parts.username else None
            secret = unquote(parts.password)
            hello.append(("AUTH", user, secret) if user else ("AUTH", secret))
        db = parts.path.lstrip("/")
        if db and db != "0":
            hello.append(("SELECT", db))
        if hello:
            replies = await self._send(protocol, hello)
            refused = [r for r in replies if isinstance(r, hiredis.ReplyError)]
            if refused:
                if protocol.transport is not None:
                    protocol.transport.close()
                raise ConnectionError(f"Redis refused the connection: {refused[0]}")
        return protocol

    @staticmethod
    async def _send(protocol: _Protocol, commands: list[tuple[Any, ...]]) -> list[Any]:
        payload = b"".join(hiredis.pack_command(c) for c in commands)
        futures = protocol.send(payload, len(commands))
        return [await f for f in futures]

    def queue(self, command: Deferred, within_s: float) -> asyncio.Future[Any] | None:
        """Queue ``command`` on the open connection at once, ahead of anything sent later,
        to be packed when the next write goes out: with the next command sent without
        delay, or after ``within_s`` seconds at the latest. Its reply's future (raw: an
        error as ``hiredis.ReplyError``), or None when there is no open connection."""
        protocol = self.protocol
        if protocol is None or protocol.lost:
            return None
        return protocol.send(command, 1, within_s)[0]

    def hurry(self, within_s: float) -> None:
        """What is queued goes out within ``within_s`` seconds at the latest."""
        protocol = self.protocol
        if protocol is not None and not protocol.lost and protocol.pending:
            protocol.hurry(within_s)

    def queued_last(self, command: Deferred) -> bool:
        """Whether ``command`` is still unsent on the open connection and nothing was
        queued after it."""
        protocol = self.protocol
        return (
            protocol is not None
            and not protocol.lost
            and bool(protocol.pending)
            and protocol.pending[-1] is command
        )

    async def execute(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one write; their replies (errors as ``ResponseError``)."""
        replies = await self._send(await self._connection(), list(commands))
        return [ResponseError(str(r)) if isinstance(r, hiredis.ReplyError) else r for r in replies]

    async def evalsha(self, script: str, sha: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script by its hash, loading it first if Redis does not know it."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        protocol = self.protocol
        if protocol is not None and not protocol.lost:  # the hot path: one future to await
            reply = await protocol.send(hiredis.pack_command(command), 1)[0]
            if isinstance(reply, hiredis.ReplyError):
                reply = ResponseError(str(reply))
        else:
            (reply,) = await self.execute(command)
        if is_noscript(reply):
            await self.execute(("SCRIPT", "LOAD", script))
            (reply,) = await self.execute(command)
        if isinstance(reply, ResponseError):
            raise reply
        return reply


def is_noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError) or (
        isinstance(reply, (ResponseError, hiredis.ReplyError)) and str(reply).startswith("NOSCRIPT")
    )


# This event loop's connection to ``REDIS_URL``.
wire = PerLoop(lambda: Wire(settings.REDIS_URL))


def close_wires() -> None:
    """Close every loop's connection (the web process shutting down)."""
    for found in wire.all():
        protocol = found.protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
    wire.clear()
