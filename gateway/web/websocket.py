"""Proxies a WebSocket: the CRM must answer 101 before the client is upgraded (WS-4).

Frames are relayed as they come, both ways: text, binary, ping and pong (no auto-answering on
our side, so the two ends see each other's), and close codes are passed through. The upgrade
and the frames use aiohttp's client (gateway.web.client speaks plain HTTP/1.1 only), in a
slot of the gateway's pool to the CRM, so `max_connections` counts WebSockets too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from gateway.web.keys import CONFIG, UPSTREAM_CLIENT
from gateway.web.upstream import Adjust, headers_for_crm, upstream_error

log = logging.getLogger("gateway.websocket")

# Negotiated separately on each leg by aiohttp itself; never copied across.
HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)

AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _protocols(request: web.Request) -> tuple[str, ...]:
    offered = ",".join(request.headers.getall("Sec-WebSocket-Protocol", ()))
    return tuple(p.strip() for p in offered.split(",") if p.strip())


async def proxy(
    request: web.Request, target: str, adjust: Adjust | None = None
) -> web.StreamResponse:
    config = request.app[CONFIG]
    upstream = config.upstream
    headers = headers_for_crm(request, HANDSHAKE_HEADERS)
    if adjust is not None:
        adjust(headers)
    scheme = "wss" if upstream.scheme == "https" else "ws"
    url = URL(f"{scheme}://{upstream.host}{target}", encoded=True)
    client = request.app[UPSTREAM_CLIENT]
    try:
        await client.pool.reserve()
    except TimeoutError as exc:
        raise client.failure("timeout", "no connection to the CRM in time") from exc
    except OSError as exc:  # the gateway is stopping
        raise client.failure("broken", str(exc)) from exc
    try:
        return await _tunnel(request, client.websockets(), url, headers)
    finally:
        client.pool.unreserve()


async def _tunnel(
    request: web.Request, session: aiohttp.ClientSession, url: URL, headers: CIMultiDict[str]
) -> web.StreamResponse:
    upstream = request.app[CONFIG].upstream
    try:
        upstream_ws = await session.ws_connect(
            url,
            headers=headers,
            protocols=_protocols(request),
            autoping=False,
            autoclose=False,
            max_msg_size=upstream.websocket_max_message,
            timeout=aiohttp.ClientWSTimeout(ws_close=10.0),
        )
    except aiohttp.WSServerHandshakeError as exc:
        # The CRM refused the upgrade: say what it said, and never open a tunnel.
        if exc.status in (0, 101) or exc.status >= 500:
            raise upstream_error(exc) from exc
        return web.Response(status=exc.status, text=f"{exc.status} {exc.message}\n")
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise upstream_error(exc) from exc

    client_ws = web.WebSocketResponse(
        protocols=(upstream_ws.protocol,) if upstream_ws.protocol else (),
        autoping=False,
        autoclose=False,
        max_msg_size=upstream.websocket_max_message,
    )
    try:
        await client_ws.prepare(request)
        await _relay_both_ways(client_ws, upstream_ws)
    finally:
        await upstream_ws.close()
        if not client_ws.closed:
            await client_ws.close(code=WSCloseCode.GOING_AWAY)
    return client_ws


async def _relay_both_ways(
    client_ws: web.WebSocketResponse, upstream_ws: aiohttp.ClientWebSocketResponse
) -> None:
    to_upstream = asyncio.create_task(_pump(client_ws, upstream_ws), name="ws-client-to-crm")
    to_client = asyncio.create_task(_pump(upstream_ws, client_ws), name="ws-crm-to-client")
    try:
        _, pending = await asyncio.wait(
            {to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED
        )
        # One side closed: give the close handshake a moment to finish on the other, then stop.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait(pending, timeout=10.0)
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)


async def _pump(source: AnyWebSocket, sink: AnyWebSocket) -> None:
    while True:
        message = await source.receive()
        kind = message.type
        if kind is WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif kind is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif kind is WSMsgType.PING:
            await sink.ping(message.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(message.data)
        elif kind is WSMsgType.CLOSE:
            code = message.data if isinstance(message.data, int) else WSCloseCode.OK
            # Answer the closer and pass its code on. aiohttp's close() on the answering side
            # also completes the handshake there.
            await sink.close(code=code, message=(message.extra or "").encode()[:123])
            await source.close(code=code)
            return
        else:  # CLOSING, CLOSED, ERROR: the source is gone.
            # aiohttp has already closed the source with the right code (1009 when a frame
            # was too big); the other side hears the same code.
            fallback = (
                WSCloseCode.INTERNAL_ERROR if kind is WSMsgType.ERROR else WSCloseCode.GOING_AWAY
            )
            code = source.close_code or fallback
            if not sink.closed:
                await sink.close(code=code)
            return
