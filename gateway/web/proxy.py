"""Streams one request to the CRM and its answer back, never holding a whole body.

Headers are decided by gateway.web.forwarding; the CRM is asked through gateway.web.client,
which turns its failures into ours (502, 504) before they reach here. WebSocket upgrades go
to web.websocket.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import BadRequest, UpstreamCut, UpstreamError
from gateway.signin.identity import set_cookie_names
from gateway.web import websocket
from gateway.web.client import Body, CrmResponse
from gateway.web.forwarding import downstream_response_headers
from gateway.web.health import READINESS
from gateway.web.keys import DECISION, REWRITER, UPSTREAM_CLIENT, VIEW
from gateway.web.upstream import Adjust, headers_for_crm

log = logging.getLogger("gateway.proxy")

# A response body up to this size that announces its length is read in one go and sent with
# one write: fewer syscalls and task switches for the many small pages a CRM serves.
SMALL_BODY = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


def is_websocket_upgrade(request: web.Request) -> bool:
    upgrade = request.headers.get("Upgrade", "")
    return (
        request.method == "GET"
        and upgrade.lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def _abort(request: web.Request) -> None:
    """Cut the client connection so a half-sent response can never look complete (FL-7)."""
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.abort()


async def handle(
    request: web.Request,
    target: str | None = None,
    *,
    adjust: Adjust | None = None,
    add_headers: list[tuple[str, str]] | None = None,
    observe: Callable[[CrmResponse], Awaitable[frozenset[str]]] | None = None,
    drop_cookies: frozenset[str] = frozenset(),
    body: Body = None,
) -> web.StreamResponse:
    """Forward to the CRM; `target` is the judged (normalised) path+query when a guard ran,
    `adjust` changes the CRM-bound headers (sign-in strips cookies, adds the identity),
    `add_headers` are extra response headers (ending our session on the CRM's logout),
    `drop_cookies` names cookies the CRM may not set for this browser, and `observe` sees
    the CRM's answer first and names more; `body`: the request's body, already read."""
    raw_path = _checked_target(request, target)
    request[DECISION] = "forward"
    if is_websocket_upgrade(request):
        return await websocket.proxy(request, raw_path, adjust)
    # The body as it streams, or as the pipeline read it whole (`body`: to judge it).
    sent = body if body is not None else (request.content if request.body_exists else None)
    response = await send(request, raw_path, adjust=adjust, body=sent)
    try:
        if observe is not None:
            drop_cookies = drop_cookies | await observe(response)
        return await relay(request, response, add_headers, drop_cookies=drop_cookies)
    finally:
        response.release()


def _checked_target(request: web.Request, target: str | None) -> str:
    raw_path = target if target is not None else request.raw_path
    if not raw_path.startswith("/"):
        # Absolute-form targets (`GET http://other/x`) would let the client pick a host; the
        # upstream comes from configuration only (PN-3).
        raise BadRequest("request target must be a path", reason="bad_request_target")
    return raw_path


async def send(
    request: web.Request,
    raw_path: str,
    *,
    adjust: Adjust | None = None,
    body: Body = None,
) -> CrmResponse:
    """The CRM's answer (headers read, body not yet); the caller releases it. Redirects are
    the browser's to follow (FL-12); nothing is decompressed and no cookie is kept."""
    headers = headers_for_crm(request)
    if adjust is not None:
        adjust(headers)
    response = await request.app[UPSTREAM_CLIENT].request(request.method, raw_path, headers, body)
    request.app[READINESS].crm.answered()  # readyz: the CRM answers
    return response


async def relay(
    request: web.Request,
    upstream: CrmResponse,
    add_headers: list[tuple[str, str]] | None = None,
    *,
    drop_cookies: frozenset[str] = frozenset(),
) -> web.StreamResponse:
    headers = downstream_response_headers(upstream.headers, request.app[REWRITER])
    if drop_cookies and "Set-Cookie" in headers:
        kept = [
            c
            for c in headers.getall("Set-Cookie")
            if not set_cookie_names([c]).keys() & drop_cookies
        ]
        headers.popall("Set-Cookie")
        for cookie in kept:
            headers.add("Set-Cookie", cookie)
    headers["X-Request-Id"] = request[VIEW].request_id
    for name, value in add_headers or ():
        headers.add(name, value)
    length = upstream.content_length
    chunked = upstream.chunked
    no_body = request.method == "HEAD" or upstream.status in _NO_BODY_STATUS
    typed = "Content-Type" in upstream.headers  # else none is invented (_UntypedResponse)
    if not no_body and length is not None and length <= SMALL_BODY and not chunked:
        # One buffered Response: the headers and the body leave in a single write.
        # A cut or stalled body raises UpstreamError here: nothing sent yet, an honest 502/504.
        data = await upstream.content.readexactly(length) if length else b""
        return (web.Response if typed else _UntypedResponse)(
            status=upstream.status, reason=upstream.reason, headers=headers, body=data
        )
    out = (web.StreamResponse if typed else _UntypedStream)(
        status=upstream.status, reason=upstream.reason, headers=headers
    )
    if length is not None and not chunked:
        out.content_length = length
    await out.prepare(request)
    if no_body:
        await out.write_eof()
        return out
    try:
        async for chunk in upstream.content.iter_any():
            await out.write(chunk)
    except UpstreamError as exc:
        # Headers are out: the only honest signal left is a cut connection (FL-7).
        log.warning(
            "upstream response cut mid-body: %s %s: %s [%s]",
            request.method,
            request.path,
            exc.detail,
            request[VIEW].request_id,
        )
        upstream.close()
        _abort(request)
        request[DECISION] = "upstream_cut"
        raise UpstreamCut(out.status) from None
    await out.write_eof()
    return out


# aiohttp gives a body without a type `application/octet-stream` as it prepares the headers;
# a CRM page that sent none must reach the browser as sent (its sniffing depends on it). A
# subclass, not an on_response_prepare signal: with no receiver, aiohttp sends no signal for
# any response (about 11k instructions a request).


class _UntypedStream(web.StreamResponse):
    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Content-Type", None)


class _UntypedResponse(_UntypedStream, web.Response):
    """A buffered web.Response that prepares its headers as _UntypedStream does (web.Response
    inherits StreamResponse's preparation, so the override comes first)."""
