"""Which connection carries a request: reuse, the CRM closing, answers that spoil a connection,
the limit, the line for a slot and the keep-alive time. Real sockets on 127.0.0.1, a CRM
played byte for byte (tests/web/client/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from multidict import CIMultiDict

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from tests.web.client.conftest import (
    OpenClient,
    RawCrm,
    StartCrm,
    answering,
    fetch,
    ok,
    read_request,
    until,
    upstream_errors,
)


async def test_sequential_requests_share_one_connection(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    crm = await raw_crm(answering())
    client = crm_client(crm)
    for _ in range(5):
        assert await fetch(client) == (200, b"ok")
    assert crm.connections == 1
    assert (client.pool.size, client.pool.idle) == (1, 1)


async def test_a_connection_the_crm_closed_while_idle_is_not_reused(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    async def once_then_close(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(ok())
        await writer.drain()
        await asyncio.sleep(0.05)  # idle on the CRM's side too, then its keep-alive ends

    crm = await raw_crm(once_then_close)
    client = crm_client(crm)
    assert await fetch(client) == (200, b"ok")
    await until(lambda: client.pool.idle == 0)  # the pool let it go when the CRM closed
    assert client.pool.size == 0
    assert await fetch(client) == (200, b"ok")
    assert crm.connections == 2


async def _closes_on_second_request(
    crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answers a connection's first request; its second finds the connection closing, as
    when a CRM's keep-alive ends while the gateway's request is on the way."""
    head, _ = await read_request(reader)
    crm.requests.append((crm.connections, head.split(b"\r\n", 1)[0]))
    writer.write(ok()[:-2] if head.startswith(b"HEAD ") else ok())  # HEAD: no body
    await writer.drain()
    head, _ = await read_request(reader)
    if head:
        crm.requests.append((crm.connections, head.split(b"\r\n", 1)[0]))


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
async def test_an_idempotent_request_on_a_stale_connection_is_retried_once(
    raw_crm: StartCrm, crm_client: OpenClient, method: str
) -> None:
    crm = await raw_crm(_closes_on_second_request)
    client = crm_client(crm)
    assert (await fetch(client))[0] == 200
    before = upstream_errors("broken")
    status, _ = await fetch(client, method, "/again", body=b"x" if method == "PUT" else None)
    assert status == 200
    assert [line for _, line in crm.requests] == [
        b"GET / HTTP/1.1",
        method.encode() + b" /again HTTP/1.1",  # reached the closing connection
        method.encode() + b" /again HTTP/1.1",  # sent again on a new one
    ]
    assert crm.connections == 2
    assert upstream_errors("broken") == before  # a retry that worked is not an error


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_non_idempotent_request_is_never_sent_twice(
    raw_crm: StartCrm, crm_client: OpenClient, method: str
) -> None:
    crm = await raw_crm(_closes_on_second_request)
    client = crm_client(crm)
    assert (await fetch(client))[0] == 200
    before = upstream_errors("broken")
    with pytest.raises(UpstreamUnavailable):
        await fetch(client, method, "/order", body=b"pay=1")
    assert [line for _, line in crm.requests] == [
        b"GET / HTTP/1.1",
        method.encode() + b" /order HTTP/1.1",
    ]
    assert upstream_errors("broken") == before + 1


async def test_a_post_that_found_its_connection_closing_goes_on_a_new_one(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """Nothing of it was written (the connection was closing as it was handed out): safe
    for any method, so it goes once, on a new connection."""
    crm = await raw_crm(answering())
    client = crm_client(crm)
    assert (await fetch(client))[0] == 200
    conn = await client.pool.acquire()
    assert conn.transport is not None
    conn.transport.close()  # closing, not yet closed: the race with a CRM's own close
    client.pool.release(conn, reuse=True)
    assert await fetch(client, "POST", "/order", body=b"pay=1") == (200, b"ok")
    assert [line for _, line in crm.requests] == [b"GET / HTTP/1.1", b"POST /order HTTP/1.1"]
    assert crm.connections == 2


async def test_a_failure_on_a_new_connection_is_not_retried(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    async def hang_up(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head, _ = await read_request(reader)
        crm.requests.append((crm.connections, head))

    crm = await raw_crm(hang_up)
    with pytest.raises(UpstreamUnavailable):
        await fetch(crm_client(crm))
    assert len(crm.requests) == 1


async def test_a_half_read_answer_never_goes_back_to_the_pool(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    big = b"x" * (4 << 20)
    crm = await raw_crm(answering(lambda head, body: ok(big) if b" /big " in head else ok()))
    client = crm_client(crm)
    response = await client.request("GET", "/big", CIMultiDict({"Host": "crm"}))
    assert len(await response.content.readany()) > 0
    response.release()  # the caller gave up half way (a browser that left)
    assert (client.pool.size, client.pool.idle) == (0, 0)
    await until(lambda: crm.closed_by_peer == [1])  # cut, not left half-read
    assert await fetch(client) == (200, b"ok")
    assert crm.connections == 2


async def test_connection_close_from_the_crm_is_honoured(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """The CRM says close but leaves the socket open: the gateway must not send more on it."""
    crm = await raw_crm(answering(lambda head, body: ok(extra=b"Connection: close\r\n")))
    client = crm_client(crm)
    for _ in range(3):
        assert await fetch(client) == (200, b"ok")
    assert crm.connections == 3
    assert [number for number, _ in crm.requests] == [1, 2, 3]


async def test_an_http_1_0_crm_is_read_to_its_close_and_not_reused(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    async def old(crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for part in (b"no length, ", b"ends when ", b"the CRM closes"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)

    crm = await raw_crm(old)
    client = crm_client(crm)
    assert await fetch(client) == (200, b"no length, ends when the CRM closes")
    assert await fetch(client) == (200, b"no length, ends when the CRM closes")
    assert crm.connections == 2


async def test_an_http_1_0_crm_that_asks_for_keep_alive_is_reused(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    answer = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    crm = await raw_crm(answering(lambda head, body: answer))
    client = crm_client(crm)
    assert await fetch(client) == (200, b"ok")
    assert await fetch(client) == (200, b"ok")
    assert crm.connections == 1


async def test_an_answer_without_length_on_http_1_1_is_read_to_close(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    async def unframed(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"y" * 300_000)
        await writer.drain()

    crm = await raw_crm(unframed)
    client = crm_client(crm)
    assert await fetch(client) == (200, b"y" * 300_000)
    assert client.pool.size == 0  # never reused: its end was the connection's end


@pytest.mark.parametrize("later", [0.0, 0.05])
async def test_bytes_said_out_of_turn_spoil_the_connection(
    raw_crm: StartCrm, crm_client: OpenClient, later: float
) -> None:
    """A second answer to one request, with it or after it, is never taken for the answer to
    the next request (no response desync): the connection is dropped."""
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
    said: list[bytes] = []

    async def chatty(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while head := (await read_request(reader))[0]:
            writer.write(ok())
            if b" /chatty " in head:
                if later:
                    await writer.drain()
                    await asyncio.sleep(later)
                writer.write(forged)
                said.append(forged)
            await writer.drain()

    crm = await raw_crm(chatty)
    client = crm_client(crm)
    assert await fetch(client, target="/chatty") == (200, b"ok")
    # The next request waits for the bytes out of turn and for the pool to drop their
    # connection (a fixed pause could end before a loaded machine has sent them).
    await until(lambda: said == [forged] and client.pool.idle == 0)
    assert await fetch(client, target="/next") == (200, b"ok")
    assert crm.connections == 2


async def test_requests_are_never_pipelined_and_the_limit_holds(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """Ten requests at once over at most two connections: each connection carries one
    request at a time (nothing more arrives before its answer is sent)."""
    open_now = 0
    most = 0
    early: list[bytes] = []

    async def slow(crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while True:
                head, _ = await read_request(reader)
                if not head:
                    return
                with contextlib.suppress(TimeoutError):
                    early.append(await asyncio.wait_for(reader.read(1), 0.05))
                writer.write(ok())
                await writer.drain()
        finally:
            open_now -= 1

    crm = await raw_crm(slow)
    client = crm_client(crm, max_connections=2)
    answers = await asyncio.gather(*(fetch(client, target=f"/{i}") for i in range(10)))
    assert answers == [(200, b"ok")] * 10
    assert early == []
    assert most == 2
    assert crm.connections == 2


async def test_a_full_pool_answers_504_after_timeouts_pool(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """As the aiohttp client did (FL-11): a request with no slot within timeouts.pool gets
    UpstreamTimeout (504), counted as a timeout; the busy request is not disturbed."""
    release = asyncio.Event()

    async def held(crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()
        writer.write(ok())
        await writer.drain()

    crm = await raw_crm(held)
    client = crm_client(crm, max_connections=1, pool=0.2)
    busy = asyncio.create_task(fetch(client))
    await until(lambda: crm.connections == 1)
    before = upstream_errors("timeout")
    with pytest.raises(UpstreamTimeout):
        await fetch(client)
    assert upstream_errors("timeout") == before + 1
    release.set()
    assert await busy == (200, b"ok")
    assert (client.pool.size, client.pool.idle) == (1, 1)


async def test_a_released_connection_goes_to_the_first_in_line(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    crm = await raw_crm(answering())
    client = crm_client(crm, max_connections=1)
    results = await asyncio.gather(*(fetch(client, target=f"/{i}") for i in range(6)))
    assert results == [(200, b"ok")] * 6
    assert [line for _, line in crm.requests] == [f"GET /{i} HTTP/1.1".encode() for i in range(6)]
    assert crm.connections == 1


async def test_a_request_that_leaves_the_line_gives_nothing_away(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """A client that disconnects while its request waits for a slot: no slot is lost."""
    release = asyncio.Event()

    async def held(crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await read_request(reader))[0]:
            await release.wait()
            writer.write(ok())
            await writer.drain()

    crm = await raw_crm(held)
    client = crm_client(crm, max_connections=1)
    busy = asyncio.create_task(fetch(client))
    await until(lambda: crm.connections == 1)
    waiting = asyncio.create_task(fetch(client))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    assert await busy == (200, b"ok")
    assert await fetch(client) == (200, b"ok")
    assert (client.pool.size, client.pool.idle, crm.connections) == (1, 1, 1)


async def test_idle_connections_close_after_keepalive(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    crm = await raw_crm(answering())
    client = crm_client(crm, keepalive=0.2)
    await asyncio.gather(*(fetch(client) for _ in range(3)))
    assert client.pool.idle == 3
    await until(lambda: client.pool.idle == 0)
    assert client.pool.size == 0
    await until(lambda: sorted(crm.closed_by_peer) == [1, 2, 3])  # closed, on our side
    assert await fetch(client) == (200, b"ok")


async def test_a_connection_kept_busy_outlives_keepalive(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    crm = await raw_crm(answering())
    client = crm_client(crm, keepalive=0.2)
    for _ in range(8):
        assert await fetch(client) == (200, b"ok")
        await asyncio.sleep(0.05)
    assert crm.connections == 1


async def test_refused_connections_give_502_and_free_their_slot(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    crm = await raw_crm(answering())
    crm.server.close()
    await crm.server.wait_closed()
    client = crm_client(crm, max_connections=1)
    before = upstream_errors("connect")
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            await fetch(client)
    assert upstream_errors("connect") == before + 3
    assert client.pool.size == 0
