"""The gateway's HTTP/1.1 client for replicas (``portal/gateway/upstream.py``) against
real sockets: small asyncio servers in the test's own event loop that answer, stall,
break off or close as a replica might."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from portal.gateway import upstream

BODY = b'{"model": "m", "messages": []}'
JSON_ANSWER = b'{"ok": true}'
PATH = "/v1/chat/completions"


def head(length: int, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\ncontent-length: %d\r\n\r\n" % (
        content_type,
        length,
    )


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Replica:
    """A TCP server on 127.0.0.1 that hands each connection to ``handler`` (with the
    connection's number) and counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.closed_by_client = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
        upstream.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request's head and body; b"" when the client closed the connection."""
        try:
            raw_head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client.set()
            return b""
        length = next(
            int(line.split(b":")[1])
            for line in raw_head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        self.requests += 1
        return raw_head + await reader.readexactly(length)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_answers_come_whole_and_connections_are_reused() -> None:
    async def test() -> None:
        async def handler(reader: Any, writer: Any, number: int) -> None:
            while request := await replica.read_request(reader):
                assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
                assert b"\r\nAuthorization: Bearer s3cret\r\n" in request
                assert request.endswith(BODY)
                writer.write(head(len(JSON_ANSWER)) + JSON_ANSWER)

        replica = Replica(handler)
        async with replica as url:
            for _ in range(10):
                answer = await upstream.fetch(url, PATH, BODY, "s3cret")
                assert answer == (200, b"application/json", JSON_ANSWER)
            assert (replica.connections, replica.requests) == (1, 10)
            # At once: one connection each; afterwards all are kept for reuse.
            answers = await asyncio.gather(
                *(upstream.fetch(url, PATH, BODY, "s3cret") for _ in range(5))
            )
            assert all(a[0] == 200 for a in answers)
            assert replica.connections == 5
            assert list(upstream.stats().values()) == [5]

    run(test)


def test_requests_sent_in_one_turn_of_the_loop_all_go_out() -> None:
    """On kept connections, requests sent together in one turn of the event loop: the
    first is written at once, the others at the end of the turn; after such a busy turn,
    all of them at its end; every one is answered. A turn with one request makes the
    pool quiet again (its next first request goes at once)."""

    async def test() -> None:
        async def handler(reader: Any, writer: Any, number: int) -> None:
            while request := await replica.read_request(reader):
                tag = request.rsplit(b'"tag": ', 1)[1].rstrip(b"}")
                answer = b'{"tag": %b}' % tag
                writer.write(head(len(answer)) + answer)

        def body(tag: int) -> bytes:
            return b'{"model": "m", "messages": [], "tag": %d}' % tag

        replica = Replica(handler)
        async with replica as url, asyncio.timeout(10):  # a request never written: no answer
            await asyncio.gather(*(upstream.fetch(url, PATH, body(i), "") for i in range(8)))
            assert list(upstream.stats().values()) == [8]
            answers = await asyncio.gather(
                *(upstream.fetch(url, PATH, body(i), "") for i in range(8))
            )
            assert [a[2] for a in answers] == [b'{"tag": %d}' % i for i in range(8)]
            assert (replica.connections, replica.requests) == (8, 16)
            pool = upstream.pools()
            assert pool.busy  # the last turn that wrote sent eight
            assert (await upstream.fetch(url, PATH, body(16), ""))[2] == b'{"tag": 16}'
            assert not pool.busy  # held back all the same, alone in its turn
            assert (await upstream.fetch(url, PATH, body(17), ""))[2] == b'{"tag": 17}'

    run(test)


def test_a_kept_connection_the_replica_just_closed_is_retried_on_a_new_one() -> None:
    """A replica closes a kept-alive connection (its keep-alive timeout) just as the
    next request arrives on it: that request goes again on a new connection rather than
    failing, which would take the replica out of routing."""

    async def test() -> None:
        async def handler(reader: Any, writer: Any, number: int) -> None:
            await replica.read_request(reader)
            writer.write(head(len(JSON_ANSWER)) + JSON_ANSWER)
            await writer.drain()
            await replica.read_request(reader)  # the next request: closed unanswered

        replica = Replica(handler)
        async with replica as url:
            assert (await upstream.fetch(url, PATH, BODY, ""))[0] == 200
            assert (await upstream.fetch(url, PATH, BODY, ""))[0] == 200
            assert replica.connections == 2 and replica.requests == 3

    run(test)


def test_a_replica_that_cannot_be_reached_is_unreachable() -> None:
    async def test() -> None:
        async def handler(reader: Any, writer: Any, number: int) -> None:
            await replica.read_request(reader)  # closed without an answer

        replica = Replica(handler)
        async with replica as url:
            with pytest.raises(upstream.Unreachable):
                await upstream.fetch(url, PATH, BODY, "")
        with pytest.raises(upstream.Unreachable):
            await upstream.fetch(url, PATH, BODY, "")  # nothing listens there now
        with pytest.raises(upstream.Unreachable):
            await upstream.fetch("https://127.0.0.1:1", PATH, BODY, "")

    run(test)


def test_answers_that_break_off_or_are_not_http_are_broken_off() -> None:
    async def test() -> None:
        async def handler(reader: Any, writer: Any, number: int) -> None:
            await replica.read_request(reader)
            if number == 1:
                writer.write(head(100) + b'{"ok":')  # then the connection closes
            elif number == 2:
                writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            else:
                writer.write(STREAM_HEAD + chunked(b"data: {}\n\n"))

        replica = Replica(handler)
        async with replica as url:
            with pytest.raises(upstream.BrokenOff, match="mid-answer"):
                await upstream.fetch(url, PATH, BODY, "")
            with pytest.raises(upstream.BrokenOff, match="not HTTP"):
                await upstream.fetch(url, PATH, BODY, "")
            stream = await upstream.open_stream(url, PATH, BODY, "")
            assert (stream.status, stream.content_type) == (200, b"text/event-stream")
            assert await stream.read() == b"data: {}\n\n"
            with pytest.raises(upstream.BrokenOff):
                await stream.read()
            stream.close()
            assert upstream.stats() == {}  # nothing broken is kept

    run(test)


def test_a_silent_replica_is_given_up_after_the_upstream_timeout(settings: Any) -> None:
    settings.GATEWAY_UPSTREAM_TIMEOUT_S = 1

    async def test() -> None:
        async def handler(reader: Any, writer: Any, number: int) -> None:
            await replica.read_request(reader)
            writer.write(STREAM_HEAD + chunked(b"data: 1\n\n"))
            await asyncio.sleep(0.6)
            writer.write(chunked(b"data: 2\n\n"))  # data in time resets the clock
            await asyncio.sleep(5)

        replica = Replica(handler)
        async with replica as url:
            stream = await upstream.open_stream(url, PATH, BODY, "")
            started = asyncio.get_running_loop().time()
            assert await stream.read() == b"data: 1\n\n"
            assert await stream.read() == b"data: 2\n\n"
            with pytest.raises(upstream.BrokenOff, match="nothing for 1 s"):
                await stream.read()
            assert 1.5 <= asyncio.get_running_loop().time() - started < 4
            stream.close()

    run(test)


def test_a_caller_that_gives_up_closes_the_connection() -> None:
    """The client hung up: the connection to the replica closes, which is how a replica
    learns to stop generating."""

    async def test() -> None:
        async def handler(reader: Any, writer: Any, number: int) -> None:
            await replica.read_request(reader)
            await replica.read_request(reader)  # waits until the client closes

        replica = Replica(handler)
        async with replica as url:
            waiting = asyncio.ensure_future(upstream.fetch(url, PATH, BODY, ""))
            while not replica.requests:
                await asyncio.sleep(0.01)
            waiting.cancel()
            await asyncio.wait_for(replica.closed_by_client.wait(), 5)
            assert upstream.stats() == {}

    run(test)


def test_a_stream_read_slowly_pauses_the_replica_and_loses_nothing() -> None:
    async def test() -> None:
        event = b"data: " + b"x" * 4090 + b"\n\n"

        async def handler(reader: Any, writer: Any, number: int) -> None:
            await replica.read_request(reader)
            writer.write(STREAM_HEAD)
            for _ in range(2048):  # 8 MiB
                writer.write(chunked(event))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

        replica = Replica(handler)
        async with replica as url:
            stream = await upstream.open_stream(url, PATH, BODY, "")
            await asyncio.sleep(0.5)  # the client is slow: reading pauses at the limit
            assert stream.transport is not None and not stream.transport.is_reading()
            assert stream.buffered <= upstream.MAX_BUFFER + 512 * 1024  # one read over
            received = 0
            while data := await stream.read():
                received += len(data)
            assert received == 2048 * len(event)
            stream.close()
            assert list(upstream.stats().values()) == [1]  # ended well: kept

    run(test)


def test_a_whole_answer_larger_than_the_buffer_comes_whole() -> None:
    """Past ``MAX_BUFFER`` a stream pauses for its reader; a whole answer is read as it
    comes, so it never waits on itself."""

    async def test() -> None:
        big = b"x" * (4 * upstream.MAX_BUFFER)

        async def handler(reader: Any, writer: Any, number: int) -> None:
            await replica.read_request(reader)
            writer.write(head(len(big)))
            for at in range(0, len(big), 65536):
                writer.write(big[at : at + 65536])
                await writer.drain()

        replica = Replica(handler)
        async with replica as url:
            answer = await asyncio.wait_for(upstream.fetch(url, PATH, BODY, ""), 10)
            assert answer == (200, b"application/json", big)

    run(test)
