"""One request to the CRM: the head built once and written with a small body in one write, a
streamed body pumped with back-pressure beside the wait for the answer, and the answer
returned with its body still streaming. The one boundary where socket, TLS and parser errors
become the gateway's (502 UpstreamUnavailable, 504 UpstreamTimeout), counted by kind.

Retry rule (RFC 9112 §9.3.1): a request is sent again, once, on a new connection, only when
it failed on a connection that had carried an earlier request (the CRM may have closed it
while it sat idle), before any byte of an answer arrived, and either nothing of it had been
written (the connection was found closing) or it has an idempotent method (RFC 9110
§9.2.2) and a body the gateway still holds (none, or one that arrived whole). A POST that
was written, or a streamed body, is never sent twice; a timeout is never retried.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Protocol

import aiohttp
from aiohttp import StreamReader
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config.model import Upstream
from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import UPSTREAM_ERRORS
from gateway.web.client.connection import CrmConnection
from gateway.web.client.pool import CrmPool

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods sent without `Content-Length: 0` when they carry nothing (as aiohttp's client did).
_NO_EMPTY_LENGTH = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_LAST_CHUNK = b"0\r\n\r\n"


class Stream(Protocol):
    """A body that streams: aiohttp's StreamReader, or one that reads through it
    (gateway.web.bodies.HeldBack). `readany` gives b"" at its end."""

    async def readany(self) -> bytes: ...


Body = bytes | StreamReader | Stream | None


def verified_context() -> ssl.SSLContext:
    """TLS to an https:// CRM, verified as aiohttp's client did: the system's CAs (or
    SSL_CERT_FILE / SSL_CERT_DIR), the certificate's host name checked, HTTP/1.1 by ALPN."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class CrmClient:
    """The proxy path's client to the CRM. `on_stall` is told each time the CRM lets a
    request wait past the read timeout (readiness watches it)."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        on_stall: Callable[[], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if upstream.scheme == "https" and ssl_context is None:
            ssl_context = verified_context()
        self.upstream = upstream
        self.ssl_context = ssl_context
        self._on_stall = on_stall
        self.pool = CrmPool(upstream, ssl_context, self.failure)
        self._websockets: aiohttp.ClientSession | None = None

    def failure(self, kind: str, detail: str) -> UpstreamError:
        """The error a failure of `kind` answers with, counted in UPSTREAM_ERRORS: connect
        (502), broken (reset or malformed, 502), timeout (no slot or no connection in time,
        504) and stall (the CRM sent nothing within the read timeout, 504; told to
        readiness)."""
        if kind == "stall":
            if self._on_stall is not None:
                self._on_stall()
            kind = "timeout"
        UPSTREAM_ERRORS.labels(kind).inc()
        if kind == "timeout":
            return UpstreamTimeout(detail)
        return UpstreamUnavailable(detail)

    async def request(
        self, method: str, target: str, headers: CIMultiDict[str], body: Body = None
    ) -> CrmResponse:
        """Send `method target` (the target byte for byte) with `headers` (framing is
        set here, in `headers`) and return the answer once its head is in. Raises
        UpstreamError, counted; ValueError for a head that cannot be sent as it is."""
        if isinstance(body, StreamReader) and body.is_eof() and body.exception() is None:
            body = body.read_nowait(-1)  # all of it came with the head: one write
        head = request_head(method, target, headers, body)
        length = None
        streamed = body is not None and not isinstance(body, bytes)
        if streamed and "Content-Length" in headers:
            length = int(headers["Content-Length"])
        replayable = method in IDEMPOTENT and not streamed
        retried = False
        while True:
            try:
                conn = await self.pool.acquire()
            except TimeoutError as exc:
                raise self.failure("timeout", "no connection to the CRM in time") from exc
            except OSError as exc:
                raise self.failure("connect", f"cannot connect to the CRM: {exc}") from exc
            reused = conn.exchanges > 0
            try:
                return await self._exchange(conn, method, head, body, length)
            except TimeoutError as exc:
                raise self.failure("stall", str(exc)) from exc
            except (OSError, HttpProcessingError) as exc:
                safe = not conn.sent or replayable
                if reused and not conn.heard and safe and not retried:
                    retried = True  # a stale keep-alive connection: once more, on a new one
                    continue
                raise self.failure("broken", f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(
        self, conn: CrmConnection, method: str, head: bytes, body: Body, length: int | None
    ) -> CrmResponse:
        """`length`: a streamed body's Content-Length (None: sent in chunks)."""
        answered = conn.begin(head_only=method == "HEAD")
        upload: asyncio.Task[None] | None = None
        try:
            if body is not None and not isinstance(body, bytes):
                conn.write(head)
                upload = asyncio.get_running_loop().create_task(
                    _upload(conn, body, length), name="crm-upload"
                )
                upload.add_done_callback(_retrieve)
            else:
                conn.write(head + body if body else head)
                conn.watch_reads()
            await answered
        except BaseException:
            if upload is not None:
                upload.cancel()
            conn.finish()
            self.pool.release(conn, reuse=False)
            raise
        return CrmResponse(self.pool, conn, upload)

    def websockets(self) -> aiohttp.ClientSession:
        """aiohttp's client, for WebSocket upgrades only (web.websocket holds a slot of the
        pool for each): no pool of its own, no jar, no decompression, the same TLS."""
        if self._websockets is None:
            timeouts = self.upstream.timeouts
            self._websockets = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, force_close=True, ssl=self.ssl_context or True
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.connect,
                    sock_connect=timeouts.connect,
                    sock_read=timeouts.read,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                requote_redirect_url=False,
            )
        return self._websockets

    async def close(self) -> None:
        await self.pool.close()
        if self._websockets is not None:
            await self._websockets.close()


class CrmResponse:
    """The CRM's answer: its status line and headers as received, and `content`, the body as
    it streams (aiohttp's StreamReader). `release()` when done: the connection goes back to
    the pool only if the whole answer was read; `close()` gives up on it."""

    __slots__ = ("_conn", "_pool", "_upload", "chunked", "content", "headers", "reason", "status")

    def __init__(self, pool: CrmPool, conn: CrmConnection, upload: asyncio.Task[None] | None):
        message = conn.message
        body = conn.body
        assert message is not None
        assert body is not None
        self.status: int = message.code
        self.reason: str = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.chunked: bool = bool(message.chunked)
        self.content: StreamReader = body
        self._pool = pool
        self._conn: CrmConnection | None = conn
        self._upload = upload

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None

    def release(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        clean = conn.finish()
        upload = self._upload
        if upload is not None and not (upload.done() and _succeeded(upload)):
            upload.cancel()  # the CRM answered before the request ended: cut, not reused
            clean = False
        self._pool.release(conn, clean)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.spoiled = True
        self.release()


def request_head(method: str, target: str, headers: CIMultiDict[str], body: Body) -> bytes:
    """The request line and headers as one buffer, with framing the gateway chose (SM-2):
    the length of a body held whole, the client's length for a streamed body that gave one,
    chunks otherwise. Refuses CR, LF or NUL anywhere and a space in the target: the CRM must
    read exactly the request that was judged."""
    if isinstance(body, bytes):
        headers["Content-Length"] = str(len(body))
    elif body is not None:
        if "Content-Length" not in headers:
            headers["Transfer-Encoding"] = "chunked"
    elif method not in _NO_EMPTY_LENGTH and "Content-Length" not in headers:
        headers["Content-Length"] = "0"
    # str.join over the pairs: about a third of the cost of formatting each line.
    fields = "\r\n".join(map(": ".join, headers.items()))
    if fields:
        text = f"{method} {target} HTTP/1.1\r\n{fields}\r\n\r\n"
    else:
        text = f"{method} {target} HTTP/1.1\r\n\r\n"
    lines = len(headers) + 2
    if (
        text.count("\n") != lines
        or text.count("\r") != lines
        or "\x00" in text
        or " " in target
        or " " in method
    ):
        raise ValueError("a request line or header that cannot be sent as judged")
    return text.encode("utf-8", "surrogateescape")


async def _upload(conn: CrmConnection, body: StreamReader | Stream, length: int | None) -> None:
    """The client's body to the CRM as it arrives, waiting while the CRM does not take it.
    Any failure (the client gone, its body short) cuts the connection, so the CRM never
    takes part of a body for the whole (FL-15). Then the answer's read deadline starts."""
    sent = 0
    try:
        while chunk := await body.readany():
            sent += len(chunk)
            if length is None:
                conn.write_all([b"%x\r\n" % len(chunk), chunk, b"\r\n"])
            else:
                conn.write(chunk)
            await conn.drain()
        if length is None:
            conn.write(_LAST_CHUNK)
        elif sent != length:
            raise ConnectionError(f"the client's body ended at {sent} of {length} bytes")
    except BaseException:
        conn.spoiled = True
        conn.abort()
        raise
    conn.watch_reads()


def _succeeded(task: asyncio.Task[None]) -> bool:
    return not task.cancelled() and task.exception() is None


def _retrieve(task: asyncio.Task[None]) -> None:
    """The upload's own failure shows as the exchange's (the connection is cut); its
    exception is taken here so asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()
