"""The gateway's HTTP/1.1 client for model replicas.

A replica is always ``http://IP:port`` (the address resolved when its node registered),
the request always a POST of a JSON body, the answer JSON or a server-sent event stream.
For that much, aiohttp's general-purpose client cost over a third of the gateway's CPU
time per request (URL objects, header multidicts, its connector and response classes).
This module keeps keep-alive connections per replica on plain asyncio protocols and
parses answers with httptools (llhttp, the parser uvicorn reads the gateway's own
requests with).

Under load, the requests sent in one turn of the event loop are written together at its
end (when the gateway is quiet, the first at once): see :meth:`Pool.write_soon`.

* :func:`fetch`: a whole answer, ``(status, content type, body)``.
* :func:`open_stream`: an :class:`Answer` as soon as its head arrived; :meth:`Answer.read`
  then returns the body as it comes (reading from the replica pauses while more than
  :data:`MAX_BUFFER` bytes wait for the client).

Errors: :class:`Unreachable` when no answer began (refused, reset before the first byte,
connect timeout): the caller may try another replica. A kept-alive connection that the
replica closed just as it was reused is retried once on a new one first.
:class:`BrokenOff` when an answer stopped halfway, was not HTTP, or nothing arrived for
``GATEWAY_UPSTREAM_TIMEOUT_S``. A caller cancelled while it waits (its client hung up)
closes the connection, which a replica takes as the request's cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from django.conf import settings

from portal.loops import PerLoop

CONNECT_TIMEOUT_S = 5.0
MAX_BUFFER = 1 << 20  # body bytes held for a slow client before reading pauses
MAX_IDLE = 512  # kept-alive connections per replica
_HEAD = (
    b"POST %b HTTP/1.1\r\nHost: %b\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer %b\r\nContent-Length: %d\r\n\r\n"
)


class UpstreamError(Exception):
    """A replica failed to answer."""


class Unreachable(UpstreamError):
    """No answer began: the request may go to another replica."""


class BrokenOff(UpstreamError):
    """The answer began but did not end well."""


class Answer(asyncio.Protocol):
    """One connection to a replica and the answer it is reading (one at a time)."""

    __slots__ = (
        "buffered",
        "chunks",
        "complete",
        "content_type",
        "error",
        "head",
        "idle",
        "keep_alive",
        "last_read",
        "parser",
        "paused",
        "pool",
        "replica",
        "reused",
        "started",
        "status",
        "transport",
        "waiter",
        "watchdog",
    )

    def __init__(self, pool: Pool, replica: tuple[str, int]) -> None:
        self.pool = pool
        self.replica = replica
        self.transport: asyncio.Transport | None = None
        self.reused = False
        self.idle = False  # kept in the pool, waiting for a request
        self.waiter: asyncio.Future[None] | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.parser = httptools.HttpResponseParser(self)  # it reads one answer after another
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.keep_alive = False
        self.content_type = b"application/json"
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.started = False  # a byte of this answer arrived
        self.head = False  # its status line and headers arrived
        self.complete = False
        self.error: UpstreamError | None = None
        self.last_read = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.started = True
        self.last_read = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenOff(f"the replica's answer is not HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.forget(self)
        if not self.complete and self.error is None:
            why = f": {exc}" if exc else ""
            if self.started:
                self.error = BrokenOff(f"the replica closed the connection mid-answer{why}")
            else:
                self.error = Unreachable(f"the replica closed the connection{why}")
            self._wake()

    # --- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 12 and name.lower() == b"content-type":
            self.content_type = value

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = parser.get_status_code()
        self.keep_alive = parser.should_keep_alive()  # (not known once the answer ended)
        self.head = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > MAX_BUFFER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- the caller's side ------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.abort()
        self._wake()

    async def _wait(self) -> None:
        """Until the next callback of the answer (or its failure)."""
        if self.error is not None:
            raise self.error
        self.waiter = self.pool.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def until_head(self) -> None:
        while not self.head:
            await self._wait()

    def send(self, path: bytes, host: bytes, secret: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.pool.write_soon(self, (_HEAD % (path, host, secret, len(body)), body))
        self.last_read = self.pool.loop.time()
        self.watchdog = self.pool.loop.call_at(
            self.last_read + settings.GATEWAY_UPSTREAM_TIMEOUT_S, self._check_silence
        )

    def _check_silence(self) -> None:
        timeout = settings.GATEWAY_UPSTREAM_TIMEOUT_S
        quiet = self.pool.loop.time() - self.last_read
        if quiet >= timeout:
            self.watchdog = None
            self._fail(BrokenOff(f"the replica sent nothing for {timeout} s"))
        else:
            self.watchdog = self.pool.loop.call_at(self.last_read + timeout, self._check_silence)

    async def read(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); b"" at
        the end of the answer."""
        while not self.chunks and not self.complete:
            await self._wait()
        chunks = self.chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def read_all(self) -> bytes:
        """The rest of the body (read as it comes, so that reading never pauses)."""
        parts = []
        while data := await self.read():
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """The caller is done: a complete answer's connection is kept for the next
        request to this replica; any other is closed (ending the replica's work)."""
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.complete and self.keep_alive and self.error is None and self.transport is not None:
            self._reset()
            self.reused = True
            self.pool.keep(self)
        else:
            self.abort()

    def abort(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


class Pool:
    """This event loop's kept-alive connections, by replica."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle: dict[tuple[str, int], list[Answer]] = {}
        self.addresses: dict[str, tuple[tuple[str, int], bytes]] = {}
        self.outgoing: list[tuple[Answer, tuple[bytes, bytes]]] = []  # held back this turn
        self.turn_open = False  # a request was written this turn of the loop
        self.busy = False  # the last turn sent more than one request: hold back all

    def write_soon(self, answer: Answer, request: tuple[bytes, bytes]) -> None:
        """Send ``request`` on ``answer``'s connection at the end of this turn of the
        event loop, with the others of the turn (:meth:`write_all`); but the first of a
        turn at once when the last turn sent one request or none (no delay when the
        gateway is not busy)."""
        if self.turn_open:
            self.outgoing.append((answer, request))
            return
        self.turn_open = True
        self.loop.call_soon(self.write_all)
        if self.busy:
            self.outgoing.append((answer, request))
            return
        assert answer.transport is not None
        answer.transport.writelines(request)

    def write_all(self) -> None:
        """Write the requests held back this turn of the loop, one after the other. Under
        load this costs a fifth to a quarter less CPU per request than writing each as it
        comes (bench-gateway, 64 clients; see docs/benchmarks.md): the replica woken by
        the first write finds the rest waiting, and the answers come back together, so
        the loop wakes once for many. A connection that closed meanwhile is skipped: its
        answer failed with it (:meth:`Answer.connection_lost`), or its caller gave it up
        (:meth:`Answer.abort`)."""
        self.turn_open = False
        outgoing, self.outgoing = self.outgoing, []
        # Busy when this turn sent more than one request (the first went at once unless
        # the turn before was busy too).
        self.busy = len(outgoing) > (1 if self.busy else 0)
        for answer, request in outgoing:
            transport = answer.transport
            if transport is not None and not transport.is_closing():
                transport.writelines(request)

    def address(self, url: str) -> tuple[tuple[str, int], bytes]:
        """(host, port) and the Host header of a replica's ``http://host:port``."""
        found = self.addresses.get(url)
        if found is None:
            if not url.startswith("http://"):
                raise Unreachable(f"not an http:// replica address: {url}")
            netloc = url[len("http://") :].rstrip("/")
            host, _, port = netloc.rpartition(":")
            if not host or not port.isdigit():
                raise Unreachable(f"a replica address needs host:port: {url}")
            if len(self.addresses) >= 10_000:
                self.addresses.clear()
            found = self.addresses[url] = ((host.strip("[]"), int(port)), netloc.encode())
        return found

    async def connect(self, replica: tuple[str, int], *, fresh: bool = False) -> Answer:
        if not fresh:
            idle = self.idle.get(replica)
            while idle:
                answer = idle.pop()
                answer.idle = False
                if answer.transport is not None and not answer.transport.is_closing():
                    return answer
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, answer = await self.loop.create_connection(
                    lambda: Answer(self, replica), *replica
                )
        except (OSError, TimeoutError) as exc:
            raise Unreachable(f"cannot connect to the replica: {exc or 'timed out'}") from None
        return answer

    def keep(self, answer: Answer) -> None:
        idle = self.idle.setdefault(answer.replica, [])
        if len(idle) < MAX_IDLE:
            answer.idle = True
            idle.append(answer)
        else:
            answer.abort()

    def forget(self, answer: Answer) -> None:
        """A kept connection closed (the replica's keep-alive timeout, or it stopped)."""
        if answer.idle:
            answer.idle = False
            self.idle[answer.replica].remove(answer)

    def close(self) -> None:
        for idle in self.idle.values():
            for answer in idle:
                answer.idle = False
                if answer.transport is not None:
                    answer.transport.close()
        self.idle.clear()


pools = PerLoop(Pool)


async def open_stream(replica_url: str, path: str, body: bytes, secret: str) -> Answer:
    """Send the request; the answer once its head arrived (read its body, then
    :meth:`Answer.close` it). Cancelling the caller meanwhile closes the connection."""
    pool = pools()
    replica, host = pool.address(replica_url)
    answer = await pool.connect(replica)
    for attempt in range(2):
        try:
            answer.send(path.encode(), host, secret.encode(), body)
            await answer.until_head()
            return answer
        except Unreachable:
            answer.abort()
            if attempt or not answer.reused:
                raise
            # A kept-alive connection closed just as it was reused: once more, on a new one.
            answer = await pool.connect(replica, fresh=True)
        except BaseException:
            answer.abort()
            raise
    raise AssertionError("unreachable")


async def fetch(replica_url: str, path: str, body: bytes, secret: str) -> tuple[int, bytes, bytes]:
    """A whole answer: (status, content type, body)."""
    answer = await open_stream(replica_url, path, body, secret)
    try:
        payload = await answer.read_all()
    except BaseException:
        answer.abort()
        raise
    status, content_type = answer.status, answer.content_type
    answer.close()
    return status, content_type, payload


def close() -> None:
    """Close this event loop's kept-alive connections (the process is stopping)."""
    found = pools.existing()
    if found is not None:
        found.close()


def stats() -> dict[str, Any]:
    """Kept-alive connections per replica (for tests and debugging)."""
    found = pools.existing()
    return {f"{h}:{p}": len(c) for (h, p), c in (found.idle if found else {}).items()}
