"""Request bodies the gateway must read whole before it decides (the CRM's login form, a
POST whose fields could change the method judged): read up to a limit, 413 beyond it.
Every other body streams.

A client that sends `Expect: 100-continue` waits for a word before it sends the body: the
gateway gives it once the request may go on (our pages at once, a request for the CRM once
the rules have let it through), so a refused one gets its final answer and never sends its
body (RFC 9110 §10.1.1)."""

from __future__ import annotations

from aiohttp import StreamReader, hdrs, web
from aiohttp.http import HttpVersion11

from gateway.errors import ExpectationFailed, LoginInBody, PayloadTooLarge, UnsupportedEncoding
from gateway.signin.formscan import FormScan
from gateway.web.keys import WAITS_FOR_CONTINUE

FORM_LIMIT = 64 * 1024  # a POST read to look for `_method`: forms of this kind are small


async def read_whole(request: web.Request, limit: int, *, reason: str) -> bytes:
    """The whole body, as the client sent it, or PayloadTooLarge (`reason` for the log and
    the JSON body); UnsupportedEncoding for one with a Content-Encoding (gzip): its fields
    are judged as read, and a CRM that decodes it would read others."""
    refuse_encoded(request)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"a body of {request.content_length} bytes", reason=reason)
    body = await request.content.read(limit + 1)
    while len(body) <= limit and not request.content.at_eof():
        more = await request.content.read(limit + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > limit:
        raise PayloadTooLarge(f"a body over {limit} bytes", reason=reason)
    return body


def refuse_encoded(request: web.Request) -> None:
    """UnsupportedEncoding for a body with a Content-Encoding (gzip) whose fields are to be
    judged, read whole or looked at as it streams (HeldBack)."""
    encodings = request.headers.getall(hdrs.CONTENT_ENCODING, [])
    if any(e.strip().lower() not in ("", "identity") for e in encodings):
        raise UnsupportedEncoding(f"a body to judge in {', '.join(encodings)[:64]!r}")


class HeldBack:
    """A request body as it streams to the CRM, looked at by `scan` on the way, each chunk
    held back until the body cut after it is known to name no login (a CRM may run a body
    cut short: `…&action=Login` is held until what follows makes it another pair). When the
    body names the CRM's login (a login padded past login.max_body), LoginInBody is raised
    instead, and the CRM, given less than the whole body and no login, never runs the
    request (the client's upload cuts the connection). Back-pressure as the body's own: a
    chunk is read when one is asked for."""

    def __init__(self, source: StreamReader, scan: FormScan) -> None:
        self._source = source
        self.scan = scan
        self._held = b""
        self._ended = False

    async def readany(self) -> bytes:
        while not self._ended:
            chunk = await self._source.readany()
            if not chunk:
                self._ended = True
                self.scan.finish()
            else:
                self.scan.feed(chunk)
            if self.scan.refused:
                self._ended = True
                raise LoginInBody("a login in a body over login.max_body")
            self._held += chunk
            # At most a chunk more: the unfinished pair either grows into another or ends
            # as the login (refused).
            if chunk and self.scan.named_if_cut():
                continue
            given, self._held = self._held, b""
            if given:
                return given
        return b""


async def expect_continue_later(request: web.Request) -> None:
    """The route's expect handler: aiohttp's own would answer 100 Continue before any rule
    is judged. A 100-continue from an HTTP/1.1 client is noted for `go_on`; any other
    expectation is left to `refuse_unmet_expectation`, inside the pipeline, so that its
    417 is logged and counted like every refusal (aiohttp's handler runs before it)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11 and expect.lower() == "100-continue":
        request[WAITS_FOR_CONTINUE] = True


def refuse_unmet_expectation(request: web.Request) -> None:
    """ExpectationFailed (417) for an HTTP/1.1 request that expects anything but
    100-continue, as aiohttp answered it; HTTP/1.0 clients' Expect is ignored."""
    expect = request.headers.get(hdrs.EXPECT, "100-continue")
    if request.version == HttpVersion11 and expect.lower() != "100-continue":
        raise ExpectationFailed(f"unknown Expect: {expect[:64]!r}")


async def go_on(request: web.Request) -> None:
    """100 Continue to a client that waits for it (once): the request may send its body."""
    # Asked only of a request that sent Expect (a key missing from a request's state is a
    # KeyError raised and caught: most requests skip it).
    if hdrs.EXPECT in request.headers and request.get(WAITS_FOR_CONTINUE):
        request[WAITS_FOR_CONTINUE] = False
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own bytes are counted from here
