"""One HTTP/1.1 connection to the CRM: feeds what arrives to aiohttp's llhttp response parser,
holds the transport back when the body reader is full (and the writer when the CRM's window
is), and watches for a CRM that stops sending. It never decides to reuse itself: it says
whether the last exchange ended cleanly and the pool decides.

One request at a time (no pipelining): bytes the CRM sends when nothing was asked, or a
second answer to one request, spoil the connection for reuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage

# The old client's read_bufsize: the body reader holds up to twice this before the transport
# is paused, so a slow browser never makes the gateway hold a whole download (FL-3).
READ_BUFFER = 2**16
# aiohttp's client limits for a response head (a status line or a header field).
MAX_LINE = 8190
MAX_FIELD = 8190

# What a failure of the response body becomes, by kind ("broken": cut or malformed, "stall":
# nothing within the read timeout): the client turns it into the gateway's error, counted
# and, for a stall, told to readiness.
BodyFailure = Callable[[str, str], Exception]


class CrmConnection(asyncio.Protocol):
    """The protocol of one connection; `head` resolves when a final answer's head is in."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        body_failure: BodyFailure,
        on_lost: Callable[[CrmConnection], None],
    ) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._body_failure = body_failure
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._parser: HttpResponseParser | None = None  # the exchange's, None when idle
        self._kept_parser: HttpResponseParser | None = None  # reused across exchanges
        self.head: asyncio.Future[None] | None = None
        self.message: RawResponseMessage | None = None
        self.body: StreamReader | None = None
        self.exchanges = 0  # requests started on this connection
        self.sent = False  # a byte of the current exchange's request was written
        self.heard = False  # a byte of the current exchange's answer has arrived
        self.spoiled = False  # said something out of turn: never reused
        self.idle = False  # in the pool's idle list
        self.idle_since = 0.0
        self._reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None
        # The read deadline: one timer at most, moved on only when it fires (a request that
        # is answered in time costs no timer operation at all).
        self._watching = False
        self._last_read = 0.0
        self._unsent = 0  # bytes of the request still in the transport at the last look
        self._watch: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            # Nothing was asked: a CRM that speaks now cannot be trusted with the next one.
            self.spoiled = True
            self.abort()
            return
        self.heard = True
        try:
            messages, _, _ = parser.feed_data(data)
        except Exception as exc:  # the parser's own errors: a malformed answer
            self._fail(exc)
            return
        for message, payload in messages:
            self._answer(message, payload)
        if self.message is not None:
            # Bytes of the final answer: the wait for the next starts again. Informational
            # heads (1xx) do not move it, so the final head must come within the read timeout
            # of the request, however many of them a CRM sends (a login would wait for ever).
            self._last_read = self._loop.time()

    def eof_received(self) -> bool:
        self.spoiled = True  # the CRM is closing: never handed out again
        return False  # close the transport; connection_lost ends the exchange

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self._watching = False
        self._writing_paused = False
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        head, body = self.head, self.body
        if head is not None and not head.done():
            lost = ConnectionResetError("the CRM closed the connection before answering")
            head.set_exception(lost)
        elif body is not None and not body.is_eof() and body.exception() is None:
            try:
                # Ends a body read to the connection's end; raises for one cut short.
                assert self._parser is not None
                self._parser.feed_eof()
            except Exception as cut:
                body.set_exception(self._body_failure("broken", f"response cut mid-body: {cut}"))
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("the CRM closed the connection"))
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- what aiohttp's StreamReader asks of its protocol ---------------------------------

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self._last_read = self._loop.time()  # the pause was ours, not the CRM's
            self.transport.resume_reading()

    # -- one exchange ---------------------------------------------------------------------

    def begin(self, *, head_only: bool) -> asyncio.Future[None]:
        """A request is about to be written; `head_only`: an answer to HEAD (no body)."""
        if head_only:
            self._parser = self._new_parser(with_body=False)
        else:
            if self._kept_parser is None:
                self._kept_parser = self._new_parser(with_body=True)
            self._parser = self._kept_parser
        self.exchanges += 1
        self.sent = False
        self.heard = False
        self.message = None
        self.body = None
        self.head = head = self._loop.create_future()
        return head

    def _new_parser(self, *, with_body: bool) -> HttpResponseParser:
        # The StreamReader the parser makes calls pause_reading / resume_reading on us.
        return HttpResponseParser(
            cast(BaseProtocol, self),
            self._loop,
            READ_BUFFER,
            max_line_size=MAX_LINE,
            max_field_size=MAX_FIELD,
            response_with_body=with_body,
            read_until_eof=True,  # a body with neither length nor chunks ends at close
            auto_decompress=False,
        )

    def _answer(self, message: RawResponseMessage, payload: StreamReader) -> None:
        head = self.head
        if head is None or head.done():
            self.spoiled = True  # a second answer to one request
            return
        code = message.code
        if code < 200:
            if code == 101:  # never asked for here: web.websocket makes upgrades
                self._fail(ConnectionError("the CRM switched protocols unasked"))
            return  # 100 Continue, 103 Early Hints: the final answer follows
        self.message = message
        self.body = payload
        head.set_result(None)
        if not self._watching and not payload.is_eof():
            self.watch_reads()  # answered before the upload ended: the body is watched too

    def _fail(self, exc: Exception) -> None:
        head, body = self.head, self.body
        if head is not None and not head.done():
            head.set_exception(exc)
        elif body is not None and not body.is_eof():
            body.set_exception(self._body_failure("broken", f"malformed response body: {exc}"))
        self.spoiled = True
        self.abort()

    def finish(self) -> bool:
        """The exchange is over; whether the connection may carry another request: the whole
        answer was read, nothing was said out of turn, and neither side asked to close."""
        self._watching = False
        message, body = self.message, self.body
        clean = (
            self.transport is not None
            and not self.spoiled
            and message is not None
            and not message.should_close  # Connection: close, HTTP/1.0, a body read to close
            and body is not None
            and body.at_eof()
            and body.exception() is None
        )
        self._parser = None
        self.head = None
        self.message = None
        self.body = None
        return clean

    # -- writing --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the CRM closed the connection")
        transport.write(data)
        self.sent = True

    def write_all(self, parts: list[bytes]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the CRM closed the connection")
        transport.writelines(parts)

    async def drain(self) -> None:
        """Back-pressure: wait while the CRM is not taking what was written."""
        if self.transport is None:
            raise ConnectionResetError("the CRM closed the connection")
        if not self._writing_paused:
            return
        self._drain = self._loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.close()

    # -- the read deadline ----------------------------------------------------------------

    def watch_reads(self) -> None:
        """The request is written: from now on the CRM must send something at least every
        `read_timeout` seconds (headers, then body), or take more of a request still being
        sent, or the exchange fails (FL-9). A download that keeps coming never dies of age."""
        self._watching = True
        now = self._loop.time()
        self._last_read = now
        self._unsent = self.transport.get_write_buffer_size() if self.transport else 0
        if self._watch is None:
            self._watch = self._loop.call_at(now + self._read_timeout, self._check_reads)

    def _check_reads(self) -> None:
        self._watch = None
        if not self._watching or self.transport is None:
            return
        head, body = self.head, self.body
        if head is not None and head.done() and (body is None or body.is_eof()):
            self._watching = False  # the whole answer is in: nothing more to wait for
            return
        now = self._loop.time()
        # A CRM still taking a request written whole (a large body) is busy, not silent: what
        # it took since the last look counts as a read.
        unsent = self.transport.get_write_buffer_size()
        if unsent < self._unsent:
            self._last_read = now
        self._unsent = unsent
        # While the transport is paused the wait is the browser's, not the CRM's.
        last = now if self._reading_paused else self._last_read
        due = last + self._read_timeout
        if due > now:
            self._watch = self._loop.call_at(due, self._check_reads)
            return
        self._watching = False
        detail = f"the CRM sent nothing for {self._read_timeout:g}s"
        if head is not None and not head.done():
            head.set_exception(TimeoutError(detail))
        elif body is not None and not body.is_eof():
            body.set_exception(self._body_failure("stall", detail))
        self.spoiled = True
        self.abort()
