"""The gateway's pool to the CRM seen from a browser: a client's Expect: 100-continue, a
browser that leaves, a streamed body on a stale connection, WebSockets in the pool's slots.
The real gateway app, the echo upstream or a CRM played byte for byte, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp

from gateway.web.keys import UPSTREAM_CLIENT
from tests.conftest import GatewayFactory, Served
from tests.upstreams import EVENTS
from tests.web.client.conftest import RawCrm, StartCrm, ok, read_request, until


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def test_a_clients_expect_100_continue_is_answered_by_the_gateway(
    gateway: Served,
) -> None:
    """The gateway answers 100 Continue itself; the CRM gets the body, never the Expect,
    over the pooled connection the next request uses too."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"POST /form HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"hello world")
    head, body = await _answer(reader)
    assert head.startswith(b"HTTP/1.1 200 ")
    seen = json.loads(body)
    assert seen["body_bytes"] == 11
    assert "expect" not in {name.lower() for name, _ in seen["headers"]}
    writer.write(b"GET /next HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    _, body = await _answer(reader)
    assert json.loads(body)["peer_port"] == seen["peer_port"]
    writer.close()


async def test_a_browser_that_leaves_mid_download_frees_the_connection(
    gateway: Served, upstream: Served, http: aiohttp.ClientSession
) -> None:
    """FL-16: the half-read connection is cut, not pooled; the pool serves the next one."""
    pool = gateway.app[UPSTREAM_CLIENT].pool
    async with http.get(f"{gateway.url}/slow-body") as response:
        await response.content.read(65536)
    await until(lambda: upstream.app[EVENTS] == ["download-aborted"])
    await until(lambda: pool.size == 0)
    async with http.get(f"{gateway.url}/x") as response:
        assert response.status == 200
    assert (pool.size, pool.idle) == (1, 1)


async def test_a_streamed_body_is_never_sent_twice(
    raw_crm: StartCrm, start_gateway: GatewayFactory
) -> None:
    """A PUT whose body streams meets a keep-alive connection the CRM is closing: 502, not
    a second copy (the first may have reached the CRM's application)."""

    async def second_request_finds_it_closing(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head, _ = await read_request(reader)
        crm.requests.append((crm.connections, head.split(b"\r\n", 1)[0]))
        writer.write(ok())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        crm.requests.append((crm.connections, head.split(b"\r\n", 1)[0]))

    crm = await raw_crm(second_request_finds_it_closing)
    gw = await start_gateway(f"http://127.0.0.1:{crm.port}")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/first") as response:
            assert response.status == 200

        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"p" * 1000
                await asyncio.sleep(0.05)

        async with http.put(f"{gw.url}/doc", data=pieces()) as response:
            assert response.status == 502
    assert [line for _, line in crm.requests] == [b"GET /first HTTP/1.1", b"PUT /doc HTTP/1.1"]


async def test_websockets_hold_slots_of_the_pool(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """max_connections counts WebSockets too (as the aiohttp pool did): with one slot and
    a socket open, a request waits its timeouts.pool and gets 504; then it goes through."""
    gw = await start_gateway(
        upstream.url, upstream_extra="max_connections: 1\ntimeouts: {pool: 300ms}"
    )
    async with http.ws_connect(f"{gw.url}/ws") as ws:
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "echo: hi"
        async with http.get(f"{gw.url}/x") as response:
            assert response.status == 504
            assert (await response.json())["error"] == "upstream_timeout"
    await until(lambda: gw.app[UPSTREAM_CLIENT].pool.size == 0)
    async with http.get(f"{gw.url}/x") as response:
        assert response.status == 200


async def test_an_upload_waits_for_a_crm_that_does_not_read(
    raw_crm: StartCrm, start_gateway: GatewayFactory
) -> None:
    """FL-3 for uploads: while the CRM reads nothing, the browser's sending stalls too (the
    gateway holds a window, not the body), and everything arrives once the CRM reads."""
    size = 128 << 20
    reading = asyncio.Event()
    arrived = 0

    async def late_reader(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal arrived
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"content-length: %d" % size in head.lower()
        await reading.wait()
        while arrived < size:
            arrived += len(await reader.read(1 << 20))
        writer.write(ok())
        await writer.drain()

    crm = await raw_crm(late_reader)
    gw = await start_gateway(f"http://127.0.0.1:{crm.port}")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"PUT /file HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size)
    sent = 0

    async def send() -> None:
        nonlocal sent
        block = b"u" * (1 << 20)
        while sent < size:
            writer.write(block)
            await writer.drain()
            sent += len(block)

    sending = asyncio.create_task(send())
    await asyncio.sleep(1.0)
    # Loopback socket buffers on both legs hold some megabytes; the rest must wait.
    assert sent < size // 3, sent
    reading.set()
    await asyncio.wait_for(sending, 30)
    head, _ = await _answer(reader)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert arrived == size
    writer.close()
