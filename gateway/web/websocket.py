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

from gateway.errors import HttpError
from gateway.web.audit import audit_event
from gateway.web.keys import CONFIG, UPSTREAM_CLIENT, VIEW
from gateway.web.socketwatch import LOOK_EVERY, WATCH, SocketWatch
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
# The frames a watched socket passes only while it may (gateway.web.socketwatch): all but the
# close, which ends it anyway.
_FRAMES = frozenset({WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG})


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
    watch = request.get(WATCH)
    try:
        await client_ws.prepare(request)
        ended = await _relay_both_ways(client_ws, upstream_ws, watch)
        if ended:
            await _close_for(request, ended, client_ws, upstream_ws)
    finally:
        await upstream_ws.close()
        if not client_ws.closed:
            await client_ws.close(code=WSCloseCode.GOING_AWAY)
    return client_ws


async def _relay_both_ways(
    client_ws: web.WebSocketResponse,
    upstream_ws: aiohttp.ClientWebSocketResponse,
    watch: SocketWatch | None = None,
) -> str:
    """Relay until one side closes (""), or until `watch` says why the socket may not go on:
    then the reason, both sides still open for the caller to close."""
    to_upstream = asyncio.create_task(_pump(client_ws, upstream_ws, watch), name="ws-client-to-crm")
    to_client = asyncio.create_task(_pump(upstream_ws, client_ws, watch), name="ws-crm-to-client")
    pumps = {to_upstream, to_client}
    tasks = set(pumps)
    if watch is not None:
        tasks.add(asyncio.create_task(_keep_watch(watch), name="ws-watch"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        ended = next((t.result() for t in done if not t.exception() and t.result()), "")
        if ended:
            return ended
        for task in done - pumps:  # the watch never ends without a reason: say why it did
            log.error("websocket watch failed; the socket closes", exc_info=task.exception())
        # One side closed: give the close handshake a moment to finish on the other, then stop.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait(pumps - done, timeout=10.0)
        return ""
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _keep_watch(watch: SocketWatch) -> str:
    """Look every LOOK_EVERY seconds, or at the deadline when it comes first: the reason the
    socket must close, once there is one. A store that does not answer is asked again at the
    next look (as gateway.web.revocations does); the deadline holds meanwhile."""
    clock = watch.clock
    while True:
        await asyncio.sleep(max(0.0, min(LOOK_EVERY, watch.deadline - clock.now())))
        try:
            ended = await watch.look()
        except HttpError:
            ended = watch.due()
        if ended:
            return ended


async def _close_for(
    request: web.Request,
    reason: str,
    client_ws: web.WebSocketResponse,
    upstream_ws: aiohttp.ClientWebSocketResponse,
) -> None:
    """The socket may not go on (gateway.web.socketwatch): the browser hears 1008 (policy
    violation) with the reason, the CRM 1001 (going away, as when the user leaves the page),
    and the closing is audited."""
    audit_event(request, "websocket.closed", outcome="refused", reason=reason)
    log.info("websocket closed: %s [%s]", reason, request[VIEW].request_id)
    with contextlib.suppress(Exception):
        await upstream_ws.close(code=WSCloseCode.GOING_AWAY)
    with contextlib.suppress(Exception):
        await client_ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode())


async def _pump(source: AnyWebSocket, sink: AnyWebSocket, watch: SocketWatch | None) -> str:
    """Relay `source` to `sink` until a close (""), or until a frame comes that `watch` says
    may not pass any more: the reason, the frame not sent."""
    while True:
        message = await source.receive()
        kind = message.type
        if watch is not None and kind in _FRAMES and (ended := await watch.check()):
            return ended
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
            return ""
        else:  # CLOSING, CLOSED, ERROR: the source is gone.
            # aiohttp has already closed the source with the right code (1009 when a frame
            # was too big); the other side hears the same code.
            fallback = (
                WSCloseCode.INTERNAL_ERROR if kind is WSMsgType.ERROR else WSCloseCode.GOING_AWAY
            )
            code = source.close_code or fallback
            if not sink.closed:
                await sink.close(code=code)
            return ""
