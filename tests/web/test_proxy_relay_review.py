"""gateway.web.proxy.Relayed where its one-step write is not the whole story: a body someone
replaced after the relay made it (text, a bytearray) goes aiohttp's way, and pipelined
requests on one connection get their answers whole and in order, as from web.Response; a CRM
head aiohttp refuses to send (a control character) is a 502, on either path of the relay."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.web import proxy
from tests.conftest import GatewayFactory, send_raw, serve
from tests.web.test_proxy_relay_fast import _exchange as fast_exchange

Make = Callable[[int, str | None, CIMultiDict[str], bytes], web.Response]


def _reference(
    status: int, reason: str | None, headers: CIMultiDict[str], body: bytes
) -> web.Response:
    return web.Response(status=status, reason=reason, headers=headers, body=body)


async def _serve(make: Make) -> AsyncIterator[int]:
    async def answer(request: web.Request) -> web.StreamResponse:
        headers = CIMultiDict({"Content-Type": "text/plain", "Set-Cookie": "a=1; Path=/"})
        response = make(200, None, headers, b"from the CRM")
        replaced = request.match_info["name"]
        if replaced == "text":
            response.text = "replaced"
        elif replaced == "str":
            response.body = "replaced as a payload"
        elif replaced == "bytearray":
            response.body = bytearray(b"replaced as a bytearray")
        return response

    app = web.Application()
    app.router.add_get("/{name}", answer)
    served = await serve(app)
    try:
        yield served.port
    finally:
        await served.runner.cleanup()


@pytest.fixture
async def old() -> AsyncIterator[int]:
    async for port in _serve(_reference):
        yield port


@pytest.fixture
async def new() -> AsyncIterator[int]:
    async for port in _serve(proxy.Relayed):
        yield port


async def _exchange(port: int, request: bytes) -> bytes:
    return await fast_exchange(port, request, b"/kept")


@pytest.mark.parametrize("replaced", ["text", "str", "bytearray"])
async def test_a_replaced_body_is_sent_as_aiohttp_sends_it(
    old: int, new: int, replaced: str
) -> None:
    request = f"GET /{replaced} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    sent = await _exchange(old, request)
    assert sent.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert await _exchange(new, request) == sent


async def test_pipelined_requests_get_their_answers_in_order(old: int, new: int) -> None:
    request = (
        b"".join(f"GET /kept?{n} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for n in range(5))
        + b"GET /text HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    sent = await _exchange(old, request)
    assert sent.count(b"HTTP/1.") == 7
    assert await _exchange(new, request) == sent


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 O\x7fK\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000,
        b"HTTP/1.1 200 OK\r\nX-A: a\x1bb\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ],
)
async def test_a_crm_head_aiohttp_cannot_send_is_an_honest_502(
    start_gateway: GatewayFactory, head: bytes
) -> None:
    """A control character in the CRM's reason or a header (aiohttp's client lets it in,
    its server refuses to send it): not a closed connection without an answer, nor an error
    page framed both by length and in chunks."""

    async def crm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(crm, "127.0.0.1", 0)
    try:
        gw = await start_gateway(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        raw = await send_raw(gw.port, b"GET /p HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    finally:
        server.close()
        await server.wait_closed()
    answer, _, body = raw.partition(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert b"transfer-encoding" not in answer.lower()
    length = re.search(rb"\r\nContent-Length: (\d+)", answer)
    assert length is not None and int(length[1]) == len(body)
    assert b"x" * 2 not in body and b"\x01" not in raw
