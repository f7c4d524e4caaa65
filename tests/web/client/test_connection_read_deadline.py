"""Outsider's look at the read deadline after 1173834 (only bytes of the final answer start
it again; 1xx heads do not): heads that trickle, bodies that keep coming after 1xx heads,
uploads the CRM answers with 100 Continue or early, 103 Early Hints, keep-alive reuse after
interim heads, a large body held whole that the CRM takes steadily (its hole, older than
1173834, a strict xfail until mended in stop 30). A CRM played byte for byte on 127.0.0.1;
the real client and gateway."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict

from gateway.errors import UpstreamTimeout
from gateway.web.keys import UPSTREAM_CLIENT
from tests.conftest import GatewayFactory
from tests.web.client.conftest import (
    OpenClient,
    RawCrm,
    StartCrm,
    fetch,
    ok,
    read_request,
    until,
)

READ = 0.5  # the read timeout of every test here
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"


async def _slowly(writer: asyncio.StreamWriter, pieces: list[bytes], gap: float) -> None:
    for piece in pieces:
        await asyncio.sleep(gap)
        writer.write(piece)
        await writer.drain()


def _pieces(data: bytes, count: int) -> list[bytes]:
    size = -(-len(data) // count)
    return [data[at : at + size] for at in range(0, len(data), size)]


class SlowBody:
    """A streamed request body: `count` pieces of `size` bytes, one every `gap` seconds."""

    def __init__(self, count: int, size: int, gap: float) -> None:
        self.left = count
        self.size = size
        self.gap = gap

    async def readany(self) -> bytes:
        if self.left == 0:
            return b""
        self.left -= 1
        await asyncio.sleep(self.gap)
        return b"u" * self.size


# -- the final head ------------------------------------------------------------------------


async def test_a_head_in_pieces_within_the_read_timeout_is_read(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 4\r\n\r\n"

    async def trickle(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        await _slowly(writer, [*_pieces(head, 4), b"done"], 0.06)

    crm = await raw_crm(trickle)
    client = crm_client(crm, read=READ)
    response = await client.request("GET", "/", CIMultiDict({"Host": "crm"}))
    assert response.headers["X-Final"] == "yes"
    assert await response.content.read() == b"done"
    response.release()


async def test_a_head_trickling_longer_than_the_read_timeout_is_a_504_as_documented(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """docs/configuration.md: the read timeout covers waiting for the response headers from
    the request's end. Each piece comes within it, the whole head does not: 504."""
    head = b"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 4\r\n\r\n"

    async def trickle(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        await _slowly(writer, [*_pieces(head, 8), b"done"], READ * 0.6)

    crm = await raw_crm(trickle)
    client = crm_client(crm, read=READ)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout):
        await fetch(client)
    assert loop.time() - started < READ * 3


async def test_interim_heads_every_fifth_of_the_timeout_end_in_a_504(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """The mend itself: heads of 100 Continue do not keep a request waiting for ever."""

    async def chatter(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        await _slowly(writer, [CONTINUE] * 50, READ / 5)

    crm = await raw_crm(chatter)
    client = crm_client(crm, read=READ)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout):
        await fetch(client, "POST", body=b"x")
    assert loop.time() - started < READ * 3
    assert client.pool.size == 0


async def test_early_hints_then_the_answer_within_the_timeout_keep_the_final_headers(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    final = b"HTTP/1.1 201 Created\r\nX-Final: yes\r\nContent-Length: 5\r\n\r\nfinal"

    async def hints(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while (await read_request(reader))[0]:
            await _slowly(writer, [CONTINUE, HINTS, HINTS, final], READ / 6)

    crm = await raw_crm(hints)
    client = crm_client(crm, read=READ)
    for _ in range(2):
        response = await client.request("POST", "/", CIMultiDict({"Host": "crm"}), b"x")
        assert (response.status, response.reason) == (201, "Created")
        assert response.headers["X-Final"] == "yes"
        assert "Link" not in response.headers
        assert await response.content.read() == b"final"
        response.release()
    assert crm.connections == 1


# -- bodies that keep coming ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "chunks", "tail"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            [b"1\r\nz\r\n"] * 8,
            b"0\r\n\r\n",
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", [b"z"] * 8, b""),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n", [b"z"] * 8, b""),
    ],
    ids=["chunked", "read-to-close", "length"],
)
async def test_a_body_that_keeps_coming_after_interim_heads_is_never_cut(
    raw_crm: StartCrm, crm_client: OpenClient, head: bytes, chunks: list[bytes], tail: bytes
) -> None:
    """Each piece within the read timeout, the whole body over four of them."""

    async def trickle(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        await _slowly(writer, [CONTINUE, HINTS, head], READ / 4)
        await _slowly(writer, [*chunks, tail], READ * 0.5)
        if b"close" in head:
            writer.close()

    crm = await raw_crm(trickle)
    client = crm_client(crm, read=READ)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await fetch(client, "POST", body=b"x") == (200, b"z" * 8)
    assert loop.time() - started > READ * 4


# -- keep-alive reuse ----------------------------------------------------------------------


async def test_the_next_request_after_interim_heads_gets_its_own_full_timeout(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """The first answer comes late in its window after 1xx heads; the second, on the same
    connection, comes late in its own window: no deadline left over from the first."""

    async def late(crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await _slowly(writer, [CONTINUE, HINTS], READ / 4)
        await asyncio.sleep(READ / 4)
        writer.write(ok(b"one"))
        await writer.drain()
        await read_request(reader)
        await asyncio.sleep(READ * 0.8)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        await _slowly(writer, [b"t", b"w", b"o", b"!"], READ * 0.6)
        await read_request(reader)

    crm = await raw_crm(late)
    client = crm_client(crm, read=READ, max_connections=1)
    assert await fetch(client, "POST", body=b"x") == (200, b"one")
    assert await fetch(client) == (200, b"two!")
    assert crm.connections == 1


# -- uploads -------------------------------------------------------------------------------


async def test_a_crm_answering_before_a_slow_upload_ends_is_read_whole(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """The final head comes while the upload is still going; its body keeps coming (each
    piece within the timeout) for longer than one timeout, as does the upload."""

    async def early(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(CONTINUE + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await _slowly(writer, [b"1\r\nz\r\n"] * 6 + [b"0\r\n\r\n"], READ * 0.5)
        while await reader.read(65536):
            pass

    crm = await raw_crm(early)
    client = crm_client(crm, read=READ)
    response = await client.request(
        "PUT", "/doc", CIMultiDict({"Host": "crm"}), SlowBody(6, 100, READ * 0.5)
    )
    assert response.status == 200
    assert await response.content.read() == b"z" * 6
    response.release()


async def test_a_slow_upload_through_the_gateway_after_100_continue_is_not_a_504(
    raw_crm: StartCrm, start_gateway: GatewayFactory
) -> None:
    """A browser's Expect: 100-continue; the gateway answers it, the CRM sends its own 100
    Continue at once, then reads the upload over four read timeouts, then answers: 200."""
    parts, gap = 8, READ * 0.5
    got: list[int] = []

    async def continues(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(CONTINUE)
        await writer.drain()
        body = await read_request_body(reader, parts * 100)
        got.append(len(body))
        writer.write(ok(b"stored"))
        await writer.drain()
        await read_request(reader)

    crm = await raw_crm(continues)
    gw = await start_gateway(
        f"http://127.0.0.1:{crm.port}", upstream_extra="timeouts: {read: 500ms}"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(
        b"PUT /doc HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % (parts * 100)
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == CONTINUE
    for _ in range(parts):
        await asyncio.sleep(gap)
        writer.write(b"u" * 100)
        await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert await asyncio.wait_for(reader.readexactly(6), 5) == b"stored"
    assert got == [parts * 100]
    writer.close()
    pool = gw.app[UPSTREAM_CLIENT].pool
    await until(lambda: pool.idle == 1)


async def read_request_body(reader: asyncio.StreamReader, length: int) -> bytes:
    """The rest of a request whose head was read already: `length` bytes, or chunks."""
    first = await reader.readexactly(1)
    if first.isdigit() or first in b"abcdef":
        # Chunked: the gateway chose chunks for a streamed body it could not size.
        body = b""
        line = first + await reader.readuntil(b"\r\n")
        while True:
            size = int(line.split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                return body
            line = await reader.readuntil(b"\r\n")
    return first + await reader.readexactly(length - 1)


async def test_a_crm_reading_a_large_held_body_steadily_is_not_timed_out(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """The client as the gateway uses it with a body it holds whole (`bytes`): the request
    is handed to the transport in one write, and the CRM takes it steadily for about one and
    a half times the read timeout before it answers. What it takes is progress, not silence: no 504.
    (A strict xfail until stop 30: the deadline started at the write. What the kernels'
    buffers hold is not seen, so the CRM must take their last few MB within the timeout:
    here about 0.2 s of the 1 s this test gives.) Through the gateway held bodies are small by default
    (FORM_LIMIT and login.max_body, 64 KiB): a CRM meets this with a large login.max_body."""
    size = 48 << 20

    async def slow_reader(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        taken = 0
        while taken < size:
            taken += len(await reader.read(1 << 20))
            await asyncio.sleep(0.01)
        writer.write(ok(b"taken"))
        await writer.drain()

    crm = await raw_crm(slow_reader)
    client = crm_client(crm, read=1.0)
    assert await fetch(client, "PUT", body=b"b" * size) == (200, b"taken")


async def test_interim_heads_while_a_slow_upload_streams_do_not_cut_it(
    raw_crm: StartCrm, crm_client: OpenClient
) -> None:
    """1xx heads during the upload (before the deadline is armed), the final answer within
    the read timeout of the upload's end."""
    seen: list[int] = []

    async def chatty(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            writer.write(CONTINUE)
            if size == 0:
                break
        seen.append(len(body))
        await asyncio.sleep(READ * 0.6)
        writer.write(ok(b"done"))
        await writer.drain()
        await read_request(reader)

    crm = await raw_crm(chatty)
    client = crm_client(crm, read=READ)
    response = await client.request(
        "PUT", "/doc", CIMultiDict({"Host": "crm"}), SlowBody(6, 10, READ * 0.5)
    )
    assert response.status == 200
    assert await response.content.read() == b"done"
    response.release()
    assert seen == [60]
    assert client.pool.idle == 1
