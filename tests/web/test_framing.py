"""Raw-socket framing attacks (shared/reference/security-tests.md B.13, B.6): the gateway's
parser refuses ambiguous requests and never forwards the client's framing as is."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.conftest import Served
from tests.upstreams import EVENTS


async def _exchange(port: int, raw: bytes, wait: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    chunks = []
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), wait)
            if not data:
                break
            chunks.append(data)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)


SMUGGLING = {
    "SMUG-CL-TE-BOTH": b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: gw\r\n\r\n",
    "SMUG-DUPLICATE-CL": b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "SMUG-CL-NEGATIVE": b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n",
    "SMUG-CL-HEX-PREFIX": b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 0x10\r\n\r\n",
    "SMUG-TE-XCHUNKED": b"POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "SMUG-TE-NOT-FINAL-CHUNKED": b"POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "SMUG-TE-OBS-FOLD": b"POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "SMUG-CHUNK-EXT-LF": b"POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n",
    "SMUG-CHUNK-BARE-CR-TERM": b"POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3\rabc\r\n0\r\n\r\n",
    "header-with-nul": b"GET /x HTTP/1.1\r\nHost: gw\r\nX-A: a\x00b\r\n\r\n",
    "lowercase-method": b"get /x HTTP/1.1\r\nHost: gw\r\n\r\n",
    "unknown-method-token": b"FOO /x HTTP/1.1\r\nHost: gw\r\n\r\n",
    "oversized-request-line": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_ambiguous_framing_is_refused_and_nothing_reaches_crm(
    gateway: Served, upstream: Served, name: str
) -> None:
    raw = await _exchange(gateway.port, SMUGGLING[name])
    assert raw.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"413", b"414", b"431", b"501"), raw[
        :200
    ]
    assert len(re.findall(rb"(?m)^HTTP/1\.[01] \d{3}", raw)) == 1  # no smuggled second answer
    assert upstream.app[EVENTS] == []


async def test_pipelined_requests_are_each_answered_in_order(gateway: Served) -> None:
    """SM-5: every pipelined request is handled on its own, responses in order."""
    raw = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: gw\r\n\r\n".encode() for i in range(20))
    raw += b"GET /last HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    answer = await _exchange(gateway.port, raw, wait=5)
    bodies = [
        json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])
        for part in answer.split(b"HTTP/1.1 200 OK")[1:]
    ]
    assert [b["raw_path"] for b in bodies] == [f"/p{i}" for i in range(20)] + ["/last"]


async def test_trace_is_forwarded_like_any_method_not_echoed_by_gateway(gateway: Served) -> None:
    """The gateway itself never answers TRACE by echoing the request (B.6)."""
    raw = await _exchange(
        gateway.port,
        b"TRACE /x HTTP/1.1\r\nHost: gw\r\nCookie: secret=1\r\nConnection: close\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"message/http" not in head
    assert json.loads(body)["method"] == "TRACE"
