"""One request through the upstream client: what is written, how answers of every shape are
read (the C parser, no body for HEAD/204/304, interim 1xx, chunks, malformed framing), and
the read deadline between reads. A CRM played byte for byte on 127.0.0.1."""

from __future__ import annotations

import asyncio

import aiohttp.http_parser
import pytest
from multidict import CIMultiDict

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.web.client import client as client_module
from gateway.web.client import connection
from tests.web.client.conftest import (
    OpenClient,
    RawCrm,
    StartCrm,
    answering,
    fetch,
    ok,
    read_request,
    upstream_errors,
)


def test_answers_are_read_by_aiohttps_llhttp_c_parser() -> None:
    """SM-2: several aiohttp advisories touch only the pure-Python parser."""
    # The name connection.py calls (an import there, not part of its interface).
    assert vars(connection)["HttpResponseParser"] is aiohttp.http_parser.HttpResponseParserC


# -- the request as written ----------------------------------------------------------------


async def test_the_request_goes_as_given_and_nothing_is_added(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    seen: list[bytes] = []

    async def record(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head, body = await read_request(reader)
        seen.append(head + body)
        writer.write(ok())
        await writer.drain()

    crm = await raw_crm(record)
    client = crm_client(crm)
    # Not re-quoted, not normalised; a byte that is not UTF-8 goes back as it came.
    target = "/a%2Fb/./c/../d;p=1?q=%E2%9C%93&q=2&e=&caf\udce9"
    headers = CIMultiDict(
        [("Host", "crm.example"), ("x-Lower", "1"), ("X-Two", "a"), ("X-Two", "b")]
    )
    response = await client.request("POST", target, headers, b"name=x")
    response.release()
    assert seen == [
        b"POST /a%2Fb/./c/../d;p=1?q=%E2%9C%93&q=2&e=&caf\xe9 HTTP/1.1\r\n"
        b"Host: crm.example\r\nx-Lower: 1\r\nX-Two: a\r\nX-Two: b\r\nContent-Length: 6\r\n\r\n"
        b"name=x"
    ]


@pytest.mark.parametrize(
    ("method", "body", "framing"),
    [
        ("GET", None, b""),
        ("HEAD", None, b""),
        ("POST", None, b"Content-Length: 0\r\n"),
        ("DELETE", None, b"Content-Length: 0\r\n"),
        ("PUT", b"abc", b"Content-Length: 3\r\n"),
        ("GET", b"", b"Content-Length: 0\r\n"),
    ],
)
def test_framing_is_the_gateways_own(method: str, body: bytes | None, framing: bytes) -> None:
    head = client_module.request_head(method, "/x", CIMultiDict({"Host": "h"}), body)
    assert head == f"{method} /x HTTP/1.1\r\nHost: h\r\n".encode() + framing + b"\r\n"


def test_a_length_the_caller_gave_is_replaced_by_the_bodys() -> None:
    head = client_module.request_head("PUT", "/x", CIMultiDict({"Content-Length": "99"}), b"ab")
    assert head == b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n"


@pytest.mark.parametrize(
    ("target", "value"),
    [
        ("/x", "a\r\nX-Injected: 1"),
        ("/x", "a\nb"),
        ("/x", "a\rb"),
        ("/x", "a\x00b"),
        ("/x y", "fine"),
        ("/x\r\nGET /admin", "fine"),
    ],
)
def test_a_head_that_would_not_be_read_as_judged_is_refused(target: str, value: str) -> None:
    """Request splitting (Apache CVE-2023-25690): never written, whoever built the value."""
    with pytest.raises(ValueError, match="cannot be sent"):
        client_module.request_head("GET", target, CIMultiDict({"X-Id": value}), None)


# -- answers of every shape ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/html\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b'HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: "e"\r\n\r\n'),
    ],
)
async def test_answers_without_a_body_end_at_their_head_and_keep_the_connection(
    raw_crm: StartCrm, crm_client: OpenClient, method: str, answer: bytes
) -> None:
    crm = await raw_crm(answering(lambda head, body: answer if b" /empty " in head else ok()))
    client = crm_client(crm, read=2.0)
    status, body = await asyncio.wait_for(fetch(client, method, "/empty"), 1.0)
    assert (status, body) == (int(answer[9:12]), b"")
    assert await fetch(client) == (200, b"ok")
    assert crm.connections == 1


async def test_interim_answers_are_passed_over(raw_crm: StartCrm, crm_client: OpenClient) -> None:
    """100 Continue (sent unasked) and 103 Early Hints come before the answer."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
    crm = await raw_crm(answering(lambda head, body: interim + ok(b"final")))
    client = crm_client(crm)
    assert await fetch(client, "POST", body=b"x") == (200, b"final")
    assert await fetch(client, "POST", body=b"x") == (200, b"final")
    assert crm.connections == 1


async def test_a_chunked_answer_is_read_whole(raw_crm: StartCrm, crm_client: OpenClient) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    crm = await raw_crm(answering(lambda head, body: chunked))
    client = crm_client(crm)
    response = await client.request("GET", "/", CIMultiDict())
    assert response.chunked
    assert await response.content.read() == b"hello world"
    response.release()
    assert await fetch(client) == (200, b"hello world")
    assert crm.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"hello there\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
    ],
)
async def test_an_ambiguous_or_malformed_answer_is_a_502(
    raw_crm: StartCrm, crm_client: OpenClient, answer: bytes
) -> None:
    """SM-3: never forwarded; the connection is not used again."""
    crm = await raw_crm(answering(lambda head, body: answer))
    client = crm_client(crm)
    before = upstream_errors("broken")
    with pytest.raises(UpstreamUnavailable):
        await fetch(client)
    assert upstream_errors("broken") == before + 1
    assert client.pool.size == 0


@pytest.mark.parametrize(
    "framing", [b"Content-Length: 100000\r\n", b"Transfer-Encoding: chunked\r\n"]
)
async def test_a_body_cut_mid_way_fails_and_never_looks_complete(
    raw_crm: StartCrm, crm_client: OpenClient, framing: bytes
) -> None:
    """FL-7: the reader gets an error, not a short body that ends well."""

    async def cut(crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        part = b"x" * 1000
        if b"chunked" in framing:
            part = b"3e8\r\n" + part + b"\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n" + part)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    crm = await raw_crm(cut)
    client = crm_client(crm)
    response = await client.request("GET", "/", CIMultiDict())
    with pytest.raises(UpstreamUnavailable, match="cut mid-body"):
        await response.content.read()
    response.release()
    assert client.pool.size == 0


# -- the read deadline ---------------------------------------------------------------------


async def test_no_answer_within_the_read_timeout_is_a_504_told_to_readiness(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    stalls: list[str] = []

    async def silent(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    crm = await raw_crm(silent)
    client = crm_client(crm, read=0.2, on_stall=lambda: stalls.append("stalled"))
    before = upstream_errors("timeout")
    with pytest.raises(UpstreamTimeout):
        await fetch(client)
    assert stalls == ["stalled"]
    assert upstream_errors("timeout") == before + 1
    assert client.pool.size == 0


async def test_a_slow_steady_download_outlives_the_read_timeout(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """FL-9: the deadline is between two reads, never the answer's age."""

    async def trickle(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")
        for _ in range(12):
            await asyncio.sleep(0.1)
            writer.write(b"z")
            await writer.drain()

    crm = await raw_crm(trickle)
    client = crm_client(crm, read=0.4)
    assert await fetch(client) == (200, b"z" * 12)  # 1.3 s in all


async def test_a_stall_mid_body_fails_the_body_and_is_told(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    stalls: list[str] = []

    async def stall(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(10)

    crm = await raw_crm(stall)
    client = crm_client(crm, read=0.2, on_stall=lambda: stalls.append("stalled"))
    response = await client.request("GET", "/", CIMultiDict())
    with pytest.raises(UpstreamTimeout):
        await response.content.read()
    response.release()
    assert stalls == ["stalled"]


async def test_a_slow_reader_holds_the_crm_back_and_is_not_timed_out(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """FL-3: past the reader's buffer the CRM's writes wait (nothing piles up in the
    gateway), and that wait, the browser's, is not the CRM's stall."""
    size = 16 << 20
    finished_writing: list[float] = []
    loop = asyncio.get_running_loop()

    async def big(crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"b" * 65536)
            await writer.drain()
        finished_writing.append(loop.time())

    crm = await raw_crm(big)
    client = crm_client(crm, read=0.2)
    response = await client.request("GET", "/", CIMultiDict())
    received = len(await response.content.readany())
    await asyncio.sleep(0.6)  # three read timeouts with the transport paused
    resumed = loop.time()
    assert finished_writing == []  # held back
    while chunk := await response.content.readany():
        received += len(chunk)
    response.release()
    assert received == size
    assert finished_writing[0] > resumed
    assert client.pool.idle == 1
