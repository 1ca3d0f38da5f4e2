"""The HTTP protocol the web process serves with: uvicorn's httptools protocol, its
writes to clients corked per turn of the event loop.

uvicorn writes an answer as it is sent: the head at ``http.response.start``, then each
body part, each a ``send`` system call that wakes the client. Under load the gateway
finishes many answers in one turn of the event loop, and a client woken by the first
finds the others only when woken again. :class:`Corked` holds a connection's writes
back until the end of the turn (:class:`Cork`) and writes them in one call: the answers
of a turn go out together, each head with its body. In bench-gateway (64 clients, one
worker), with the requests to replicas held back likewise (``upstream.Pool``), the
gateway spent an eighth less CPU per request with limits and metering off, and a sixth
less with them on, whose longer requests had woken the client more often (see
docs/benchmarks.md).

A quiet server holds nothing back that would wait for the next turn: when the last turn
wrote to one client only, the first client written to in this turn has its first write
held only until its second (an answer's head joins its body) and nothing else waits.

Header lines the application made itself may skip uvicorn's checks: a request's scope
carries its connection under ``extensions[HEAD]``, and lines set on its ``head_end``
(with the blank line that ends a head) end the next head it writes (that request's
answer: nothing else is written on the connection in between). The gateway does so
with the ``x-ratelimit-*`` lines of leased requests (rendered once per lease refresh,
from numbers), which in uvicorn's loop over header pairs cost as much as the rest of
the limiter's work per request.

Serve with ``uvicorn --http portal.gateway.server:HttpProtocol`` (:data:`HTTP_PROTOCOL`);
plain ``httptools`` serves the same answers, uncorked (the gateway then sends its
headers as pairs).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from portal.loops import PerLoop

HTTP_PROTOCOL = "portal.gateway.server:HttpProtocol"
HEAD = "openmaas.head"  # the scope extension: the request's Corked connection


class Cork:
    """This event loop's client connections with writes held back this turn."""

    __slots__ = ("busy", "first", "held", "loop", "open", "writers")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.held: list[Corked] = []
        self.open = False  # a flush is due at the end of this turn
        self.busy = False  # the last turn wrote to more than one connection
        self.first: Corked | None = None  # written at once this turn (when not busy)
        self.writers = 0  # connections written to this turn

    def hold(self, transport: Corked, data: bytes) -> None:
        transport.pending = [data]
        self.held.append(transport)
        if self.open:
            if transport is not self.first:
                self.writers += 1
            return
        self.open = True
        self.writers = 1
        self.loop.call_soon(self.flush)
        if not self.busy:
            self.first = transport

    def flush(self) -> None:
        """The end of the turn: write what each connection holds, in one call each."""
        self.open = False
        self.first = None
        self.busy = self.writers > 1
        self.writers = 0
        held, self.held = self.held, []
        for transport in held:
            transport.flush()


corks = PerLoop(Cork)


class Corked:
    """A client connection's transport whose writes wait for the end of the turn (see
    the module's text); everything else goes to the transport itself."""

    __slots__ = ("cork", "head_end", "pending", "transport")

    def __init__(self, transport: asyncio.Transport, cork: Cork) -> None:
        self.transport = transport
        self.cork = cork
        self.pending: list[bytes] | None = None  # held back this turn
        # Header lines (each ending in CRLF) and the blank line, to end the head written
        # next: the request's answer, which the application is working on.
        self.head_end = b""

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.head_end:
            if data.endswith(b"\r\n\r\n"):  # the head (always written whole)
                data = data[:-2] + self.head_end
            self.head_end = b""
        pending = self.pending
        if pending is None:
            self.cork.hold(self, data)
        elif self.cork.first is self:
            # A quiet turn's first connection: its second write takes the first along now.
            self.pending = None
            pending.append(data)
            self.transport.writelines(pending)
        else:
            pending.append(data)

    def writelines(self, data: Any) -> None:
        for part in data:
            self.write(part)

    def flush(self) -> None:
        pending, self.pending = self.pending, None
        if pending and not self.transport.is_closing():
            self.transport.writelines(pending)

    def close(self) -> None:
        """Close after what is held back (an answer sent with ``Connection: close``)."""
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.pending = None
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`Corked` transport, which each request's
    scope carries (``extensions[HEAD]``)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {HEAD: self.transport}  # type: ignore[dict-item]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport instances, hence the casts.)
        corked = Corked(cast(asyncio.Transport, transport), corks())
        super().connection_made(cast(asyncio.Transport, corked))
