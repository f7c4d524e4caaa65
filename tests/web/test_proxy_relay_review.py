"""gateway.web.proxy.Relayed where its one-step write is not the whole story: a body someone
replaced after the relay made it (text, a bytearray) goes aiohttp's way, and pipelined
requests on one connection get their answers whole and in order, as from web.Response."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.web import proxy

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
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@pytest.fixture
async def old() -> AsyncIterator[int]:
    async for port in _serve(_reference):
        yield port


@pytest.fixture
async def new() -> AsyncIterator[int]:
    async for port in _serve(proxy.Relayed):
        yield port


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request + b"GET /kept HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: *\r\n", raw)


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
