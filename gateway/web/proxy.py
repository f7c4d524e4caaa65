"""Streams one request to the CRM and its answer back, never holding a whole body.

Headers are decided by gateway.web.forwarding; the CRM is asked through gateway.web.client,
which turns its failures into ours (502, 504) before they reach here. WebSocket upgrades go
to web.websocket.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers
from multidict import CIMultiDict

from gateway.errors import BadRequest, UpstreamCut, UpstreamError
from gateway.signin.identity import folded, sent_back
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
# What aiohttp's header serialization refuses (aiohttp.http_writer._safe_header: RFC 9110
# §5.5, RFC 9112 §4), in a CRM's reason phrase or header, which aiohttp's client lets through.
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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
    a CRM answer that sets a cookie first and names more; `body`: the request's body,
    already read."""
    raw_path = _checked_target(request, target)
    request[DECISION] = "forward"
    if is_websocket_upgrade(request):
        return await websocket.proxy(request, raw_path, adjust)
    # The body as it streams, or as the pipeline read it whole (`body`: to judge it).
    sent = body if body is not None else (request.content if request.body_exists else None)
    response = await send(request, raw_path, adjust=adjust, body=sent)
    try:
        if observe is not None and "Set-Cookie" in response.headers:
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
        # As the browser sends them back (a nameless `=sid=x` as `sid=x`), in any case (a CRM
        # that reads cookie names so takes `SID=` for its `sid`).
        dropped = folded(drop_cookies)
        kept = [
            c for c in headers.getall("Set-Cookie") if sent_back(c)[0].casefold() not in dropped
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
        # A head aiohttp cannot send is found as Relayed serializes it (no look here: a
        # microsecond a request, the most common answer's).
        data = await upstream.content.readexactly(length) if length else b""
        return (Relayed if typed else _UntypedRelayed)(
            upstream.status, upstream.reason, headers, data
        )
    if _unsendable(upstream.reason, headers):
        # aiohttp refuses such a head as it prepares it (header injection): the writer
        # would be left chunked and the error page after it framed twice. An honest 502.
        upstream.close()
        raise request.app[UPSTREAM_CLIENT].failure("broken", "a control character in its head")
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


class Relayed(web.Response):
    """A small CRM answer read whole, sent as aiohttp's web.Response would send it (the same
    bytes: Content-Length, Date, Server, Connection, the keep-alive decision), but head and
    body serialized and written in one step where aiohttp's preparation and end take about
    ten coroutines (about 20k instructions a request). Anything it does not cover (cookies
    set on it, compression, chunking, a body-less status, a response-prepare signal, a body
    replaced by one that is not bytes) goes aiohttp's way. It uses aiohttp's private
    attributes: tests/web/test_proxy_relay_fast.py fails loudly when aiohttp changes them."""

    _invent_type = True  # as aiohttp: a body without a Content-Type is octet-stream

    def __init__(
        self, status: int, reason: str | None, headers: CIMultiDict[str], body: bytes
    ) -> None:
        # web.Response's own __init__ copies the headers and checks text and content types:
        # these headers are the relay's own, made for this response.
        web.StreamResponse.__init__(self, status=status, reason=reason, _real_headers=headers)
        self._body = body
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        body = self._body
        if (
            # A body replaced after the relay made it (a str's payload, a bytearray): the
            # serialization below knows bytes only.
            not isinstance(body, bytes)
            or self._eof_sent
            or self._payload_writer is not None
            or self._cookies
            or self._compression
            or self._chunked
            or must_be_empty_body(request.method, self._status)
            or hdrs.CONTENT_LENGTH in self._headers
            or _signalled(request)
        ):
            if _unsendable(self._reason, self._headers):  # aiohttp would refuse it
                await request._payload_writer.write_eof(self._refusal(request))
                self._eof_sent = True
                return None
            return await super().prepare(request)
        # What aiohttp's Response._start, StreamResponse._prepare_headers, _write_headers and
        # write_eof do for a buffered body of bytes, in their order.
        writer = request._payload_writer
        self._must_be_empty_body = False
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        headers = self._headers
        headers[hdrs.CONTENT_LENGTH] = str(len(body))
        if not self._invent_type:
            headers.popall(hdrs.CONTENT_TYPE, None)
        elif body:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        version = request.version
        if hdrs.CONNECTION not in headers:
            if keep_alive:
                if version == HttpVersion10:
                    headers[hdrs.CONNECTION] = "keep-alive"
            elif version == HttpVersion11:
                headers[hdrs.CONNECTION] = "close"
        try:
            head = _serialize_headers(
                f"HTTP/{version[0]}.{version[1]} {self._status} {self._reason}", headers
            )
        except ValueError:  # a control character in the CRM's head: never sent on
            head, body = self._refusal(request), b""
        # Raises ConnectionError when the client has left, as aiohttp's write does.
        await writer.write_eof(head + body)
        self._eof_sent = True
        self._body_length = writer.output_size
        return None

    def _refusal(self, request: web.BaseRequest) -> bytes:
        """A 502 in place of a CRM answer whose head aiohttp refuses to send (a control
        character: header injection), the connection closed after it. Counted as a broken
        CRM answer and logged with the request id; the access log and the metrics have the
        502, decision error (gateway.web.scope records them once the answer is out)."""
        rid = request[VIEW].request_id
        request[DECISION] = "error"
        app = cast(web.Request, request).app
        app[UPSTREAM_CLIENT].failure("broken", "a control character in its head")
        log.warning("CRM answer with a control character in its head: sent 502 [%s]", rid)
        self._status, self._reason, self._keep_alive = 502, "Bad Gateway", False
        text = b"502 Bad Gateway\n"
        version = request.version
        return (
            f"HTTP/{version[0]}.{version[1]} 502 Bad Gateway\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(text)}\r\n"
            f"X-Request-Id: {rid}\r\nConnection: close\r\n\r\n"
        ).encode() + text


def _unsendable(reason: str | None, headers: CIMultiDict[str]) -> bool:
    """Whether aiohttp would refuse to send this head (aiohttp.http_writer._safe_header)."""
    return bool(_UNSENDABLE.search("".join((reason or "", *headers.keys(), *headers.values()))))


def _signalled(request: web.BaseRequest) -> bool:
    """Whether an app of the request has on_response_prepare receivers (the gateway has
    none: gateway.web.proxy's own subclasses do what a receiver would)."""
    match_info = getattr(request, "_match_info", None)
    return match_info is not None and any(app.on_response_prepare for app in match_info.apps)


class _UntypedRelayed(_UntypedStream, Relayed):
    """A Relayed answer without a Content-Type, sent without one, as _UntypedStream."""

    _invent_type = False
