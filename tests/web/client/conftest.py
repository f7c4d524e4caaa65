"""A CRM played by hand for the upstream client's tests: raw asyncio servers on 127.0.0.1:0
that answer byte for byte (keep-alive or not, HTTP/1.0, cut bodies, answers out of turn),
and CrmClients to them with small timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from gateway.config.model import Timeouts, Upstream
from gateway.web.client import CrmClient

Handler = Callable[["RawCrm", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawCrm:
    server: asyncio.Server
    port: int
    connections: int = 0  # accepted so far
    requests: list[tuple[int, bytes]] = field(default_factory=list)  # (connection, line)
    closed_by_peer: list[int] = field(default_factory=list)  # connections the client ended

    def upstream(self, **options: object) -> Upstream:
        timeouts = Timeouts(
            connect=float(options.pop("connect", 2.0)),  # type: ignore[arg-type]
            read=float(options.pop("read", 5.0)),  # type: ignore[arg-type]
            pool=float(options.pop("pool", 5.0)),  # type: ignore[arg-type]
        )
        return Upstream(
            url=f"http://127.0.0.1:{self.port}",
            scheme="http",
            host=f"127.0.0.1:{self.port}",
            hostname="127.0.0.1",
            port=self.port,
            timeouts=timeouts,
            **options,  # type: ignore[arg-type]
        )


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by Content-Length or chunks); (b"", b"") at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b"", b""
    lower = head.lower()
    if b"\r\ntransfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                return head, body
    at = lower.find(b"\r\ncontent-length: ")
    if at < 0:
        return head, b""
    length = int(lower[at + 18 : lower.index(b"\r\n", at + 18)])
    return head, await reader.readexactly(length)


StartCrm = Callable[[Handler], Awaitable[RawCrm]]


@pytest.fixture
async def raw_crm() -> AsyncIterator[StartCrm]:
    """`await raw_crm(handler)`: handler(crm, reader, writer) serves each connection
    (`crm.connections` is its number)."""
    started: list[RawCrm] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> RawCrm:
        crm: RawCrm

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            crm.connections += 1
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await handler(crm, reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass  # the client went, or the test ended
            finally:
                writer.close()
                tasks.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        crm = RawCrm(server, server.sockets[0].getsockname()[1])
        started.append(crm)
        return crm

    yield start
    for crm in started:
        crm.server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for crm in started:
        await crm.server.wait_closed()


OpenClient = Callable[..., CrmClient]


@pytest.fixture
async def crm_client() -> AsyncIterator[OpenClient]:
    """`crm_client(crm, read=0.3, max_connections=1, …)`: a CrmClient to a RawCrm."""
    opened: list[CrmClient] = []

    def open_client(crm: RawCrm, **options: object) -> CrmClient:
        on_stall = options.pop("on_stall", None)
        client = CrmClient(crm.upstream(**options), on_stall=on_stall)  # type: ignore[arg-type]
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


async def fetch(
    client: CrmClient,
    method: str = "GET",
    target: str = "/",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request through the client, its whole body read, the connection released."""
    response = await client.request(
        method, target, CIMultiDict({"Host": "crm", **(headers or {})}), body
    )
    try:
        return response.status, await response.content.read()
    finally:
        response.release()


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def answering(answer: Callable[[bytes, bytes], bytes] = lambda head, body: ok()) -> Handler:
    """A keep-alive CRM: each request (noted in crm.requests) gets `answer(head, body)`;
    a connection the client ends is noted in crm.closed_by_peer."""

    async def handle(
        crm: RawCrm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        number = crm.connections
        while True:
            try:
                head, body = await read_request(reader)
            except ConnectionError:
                head = b""
            if not head:
                crm.closed_by_peer.append(number)
                return
            crm.requests.append((number, head.split(b"\r\n", 1)[0]))
            writer.write(answer(head, body))
            try:
                await writer.drain()
            except ConnectionError:  # ended while the answer was still being written
                crm.closed_by_peer.append(number)
                return

    return handle


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for something the event loop brings about (a socket closed, a slot let go); the
    deadline only stops a test that would otherwise hang, it is not what the test checks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def upstream_errors(kind: str) -> float:
    """crm_gateway_upstream_errors_total{kind} so far (0 before the first)."""
    return REGISTRY.get_sample_value("crm_gateway_upstream_errors_total", {"kind": kind}) or 0.0
