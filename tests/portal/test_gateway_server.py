"""The web process's HTTP protocol (``portal.gateway.server``): writes to clients corked
per turn of the event loop. On real sockets: what is held back and when it goes out, and
the whole portal served through it answering many clients at once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from portal.gateway.server import Cork, Corked


async def _connected() -> tuple[asyncio.Transport, socket.socket]:
    """A transport on one end of a socket pair, and the other end to read from."""
    ours, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, sock=ours)
    theirs.setblocking(False)
    return transport, theirs  # type: ignore[return-value]


async def _read(peer: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``peer``, or what came before the connection closed."""
    data = b""
    while len(data) < size:
        chunk = await asyncio.get_running_loop().sock_recv(peer, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def run(test: Callable[[], Awaitable[Any]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(10):  # a write held back for good: fail, not hang
            await test()

    asyncio.run(bounded())


def test_a_quiet_turn_sends_its_first_answer_at_once_head_and_body_together() -> None:
    async def test() -> None:
        cork = Cork()
        transport, peer = await _connected()
        client = Corked(transport, cork)
        client.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert client.pending is not None  # the head waits for its body...
        client.write(b"{}")
        assert client.pending is None  # ...which takes it along at once
        assert await _read(peer, 40) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"

    run(test)


def test_a_busy_turn_writes_every_answer_at_its_end_and_the_next_turn_too() -> None:
    async def test() -> None:
        cork = Cork()
        ends = [await _connected() for _ in range(3)]
        clients = [Corked(transport, cork) for transport, _ in ends]
        for number, client in enumerate(clients):
            client.write(b"head %d;" % number)
            client.write(b"body %d;" % number)
        # The first (a quiet turn's) went at once; the others wait for the turn's end.
        assert clients[0].pending is None
        assert clients[1].pending == [b"head 1;", b"body 1;"]
        assert clients[2].pending == [b"head 2;", b"body 2;"]
        for number, (_, peer) in enumerate(ends):
            assert await _read(peer, 14) == b"head %d;body %d;" % (number, number)
        assert cork.busy and all(client.pending is None for client in clients)
        # After a busy turn, even the first connection written to waits for the end.
        clients[0].write(b"again;")
        clients[0].write(b"more;")
        assert clients[0].pending == [b"again;", b"more;"]
        assert await _read(ends[0][1], 11) == b"again;more;"
        assert not cork.busy  # that turn wrote to one connection only

    run(test)


def test_closing_sends_what_is_held_back_first() -> None:
    async def test() -> None:
        cork = Cork()
        cork.busy = True
        transport, peer = await _connected()
        client = Corked(transport, cork)
        client.write(b"the answer")
        assert client.pending == [b"the answer"]
        client.close()
        assert await _read(peer, 100) == b"the answer"  # then the end of the stream
        assert client.is_closing()
        await asyncio.sleep(0)  # the turn's end finds nothing left to write
        assert client.pending is None

    run(test)


def test_aborting_drops_what_is_held_back() -> None:
    async def test() -> None:
        cork = Cork()
        cork.busy = True
        transport, peer = await _connected()
        client = Corked(transport, cork)
        client.write(b"never sent")
        client.abort()
        assert await _read(peer, 100) == b""
        await asyncio.sleep(0)
        assert client.pending is None

    run(test)


def test_the_portal_served_corked_answers_many_clients_at_once(
    live_portal: str, owner: Any
) -> None:
    """Many connections ask at once, twice each (kept alive), and one asks to close:
    every answer arrives whole, on its own connection, and the closing one ends after
    its answer."""
    host, port = live_portal.removeprefix("http://").split(":")
    request = b"GET /v1/models?n=%%d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\n%%b\r\n" % (
        owner.key.encode()
    )

    async def answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(length)

    async def test() -> None:
        streams = [await asyncio.open_connection(host, int(port)) for _ in range(24)]
        for turn in range(2):
            for number, (_, writer) in enumerate(streams):
                writer.write(request % (number, b""))
            for number, (reader, _) in enumerate(streams):
                head, body = await answer(reader)
                assert head.startswith(b"HTTP/1.1 200 "), (turn, number, head)
                assert b'"object":"list"' in body.replace(b" ", b"")
        reader, writer = streams[0]
        writer.write(request % (0, b"Connection: close\r\n"))
        head, body = await answer(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower()
        assert await reader.read() == b""  # closed after the answer
        for _, writer in streams:
            writer.close()

    run(test)
