"""WebSockets through the gateway: both directions, every frame kind, close codes, refusals."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.conftest import GatewayFactory, Served
from tests.upstreams import EVENTS


async def test_text_and_binary_frames_pass_both_ways(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{gateway.url}/ws", protocols=("crm.v2",)) as ws:
        assert ws.protocol == "crm.v2"
        await ws.send_str("hello")
        assert (await ws.receive_str(timeout=5)) == "echo: hello"
        await ws.send_bytes(b"\x00\x01\x02\xff")
        assert (await ws.receive_bytes(timeout=5)) == b"\xff\x02\x01\x00"
        big = "x" * 1_000_000
        await ws.send_str(big)
        assert (await ws.receive_str(timeout=5)) == "echo: " + big


async def test_ping_and_pong_are_relayed(
    gateway: Served, upstream: Served, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{gateway.url}/ws", autoping=False) as ws:
        # Client ping reaches the CRM, whose pong comes back.
        await ws.ping(b"from-client")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.PONG
        assert message.data == b"from-client"
        # CRM ping reaches the client; the client's pong reaches the CRM.
        await ws.send_str("ping-me")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.PING
        assert message.data == b"from-crm"
        await ws.pong(b"answer")
        assert (await ws.receive_str(timeout=5)) == "pong: answer"
    assert "ws-ping:from-client" in upstream.app[EVENTS]


async def test_close_code_from_crm_reaches_client(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{gateway.url}/ws") as ws:
        await ws.send_str("close:4001")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert message.data == 4001
    assert ws.close_code == 4001


async def test_close_code_from_client_reaches_crm(
    gateway: Served, upstream: Served, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{gateway.url}/ws") as ws:
        await ws.send_str("hi")
        await ws.receive_str(timeout=5)
        await ws.close(code=4002, message=b"done")
    for _ in range(100):
        if any(e.startswith("ws-closed") for e in upstream.app[EVENTS]):
            break
        await asyncio.sleep(0.02)
    assert "ws-closed:4002" in upstream.app[EVENTS]


async def test_handshake_headers_reach_crm_with_forwarding_headers(
    gateway: Served, upstream: Served, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(
        f"{gateway.url}/ws", headers={"Cookie": "crm_session=abc", "X-Forwarded-For": "10.6.6.6"}
    ) as ws:
        await ws.send_str("x")
        await ws.receive_str(timeout=5)
    (seen,) = [
        json.loads(e.split(":", 1)[1]) for e in upstream.app[EVENTS] if e.startswith("ws-headers:")
    ]
    assert seen["Cookie"] == "crm_session=abc"
    assert seen["X-Forwarded-For"] == "127.0.0.1"


async def test_refused_upgrade_is_passed_on_and_never_tunnelled(gateway: Served) -> None:
    """WS-4: a CRM that answers 403 gives the client 403, and the socket is not a tunnel."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"GET /ws-refuse HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 403")
    assert b"Upgrade: websocket" not in head


async def test_h2c_upgrade_is_not_honoured(gateway: Served) -> None:
    """WS-3: Upgrade other than websocket is stripped and a plain request forwarded."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"GET /x HTTP/1.1\r\nHost: gw\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    body = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    names = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert not names & {"upgrade", "http2-settings"}


async def test_oversized_message_closes_with_1009(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream.url, upstream_extra="websocket: {max_message_size: 64KiB}")
    async with http.ws_connect(f"{gw.url}/ws") as ws:
        await ws.send_str("y" * 100_000)
        message = await ws.receive(timeout=5)
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert ws.close_code == 1009


async def test_upstream_down_gives_502_to_websocket_clients(
    start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway("http://127.0.0.1:9")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with http.ws_connect(f"{gw.url}/ws"):
            pass
    assert refused.value.status == 502
