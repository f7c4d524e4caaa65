"""A graceful stop of the real program (SIGTERM): readyz turns 503 while new connections are
still served for the drain delay, then the listener closes and uploads and downloads in
flight finish with every byte within the grace. One worker and two (the supervisor's copy of
the socket must not keep the port open for nobody)."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import AppStarter
from tests.process import GatewayProcess, start_gateway_process, write_config

CHUNK = b"0123456789abcdef" * 4096  # 64 KiB
CHUNKS = 16
PAUSE = 0.25  # seconds between chunks: each transfer needs about 4 s
ARRIVED = web.AppKey("arrived", dict)


def _slow_crm() -> web.Application:
    """A CRM whose uploads and downloads take seconds, as a large file over a slow line."""

    async def upload(request: web.Request) -> web.Response:
        request.app[ARRIVED]["upload"].set()
        digest, size = hashlib.sha256(), 0
        async for piece in request.content.iter_any():
            digest.update(piece)
            size += len(piece)
        return web.json_response({"bytes": size, "sha256": digest.hexdigest()})

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = CHUNK_TOTAL
        await response.prepare(request)
        for _ in range(CHUNKS):
            await response.write(CHUNK)
            await asyncio.sleep(PAUSE)
        await response.write_eof()
        return response

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application(client_max_size=64 * 1024**2)
    app[ARRIVED] = {"upload": asyncio.Event()}
    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    app.router.add_get("/hello", hello)
    return app


CHUNK_TOTAL = len(CHUNK) * CHUNKS
WHOLE = hashlib.sha256(CHUNK * CHUNKS).hexdigest()


async def _upload(url: str) -> tuple[int, dict[str, object]]:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(CHUNKS):
            yield CHUNK
            await asyncio.sleep(PAUSE)

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(f"{url}/upload", data=body()) as r,
    ):
        return r.status, await r.json()


async def _download(url: str, first_byte: asyncio.Event) -> tuple[int, int, str]:
    digest, size = hashlib.sha256(), 0
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.get(f"{url}/download") as r,
    ):
        async for piece in r.content.iter_any():
            first_byte.set()
            digest.update(piece)
            size += len(piece)
        return r.status, size, digest.hexdigest()


async def _get(url: str) -> tuple[int, dict[str, object] | str]:
    """A new connection each time: what a client arriving now gets."""
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
        http.get(url) as r,
    ):
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def _until_refused(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        writer.close()
        await asyncio.sleep(0.05)
    raise AssertionError("the listener never closed")


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
async def draining_gateway(
    request: pytest.FixtureRequest, start_app: AppStarter, tmp_path: Path
) -> AsyncIterator[tuple[GatewayProcess, web.Application]]:
    crm = await start_app(_slow_crm())
    config = write_config(
        tmp_path, crm.url, f"workers: {request.param}\nshutdown: {{drain_delay: 2s, grace: 20s}}\n"
    )
    process = await start_gateway_process(config)
    yield process, crm.app
    await process.stop()


async def test_a_stop_drains_readyz_first_serves_newcomers_and_finishes_transfers(
    draining_gateway: tuple[GatewayProcess, web.Application],
) -> None:
    gw, crm_app = draining_gateway
    # A load balancer polls readyz.
    status, body = await _get(f"{gw.url}/_gateway/readyz")
    assert status == 200, body
    first_byte = asyncio.Event()
    upload = asyncio.create_task(_upload(gw.url))
    download = asyncio.create_task(_download(gw.url, first_byte))
    await asyncio.wait_for(crm_app[ARRIVED]["upload"].wait(), 10)
    await asyncio.wait_for(first_byte.wait(), 10)

    gw.process.send_signal(signal.SIGTERM)
    # readyz says 503 (draining) while the listener still serves: the load balancer moves.
    for _ in range(40):
        status, body = await _get(f"{gw.url}/_gateway/readyz")
        if status == 503:
            break
        await asyncio.sleep(0.02)
    assert (status, body) == (503, {"status": "draining", "reasons": ["draining"]})
    # A client that arrives during the drain delay is served.
    assert await _get(f"{gw.url}/hello") == (200, "hello")
    # Then the port closes (refused at once, not left to hang), while the transfers go on.
    await _until_refused(gw.port)
    assert await upload == (200, {"bytes": CHUNK_TOTAL, "sha256": WHOLE})
    assert await download == (200, CHUNK_TOTAL, WHOLE)
    assert await asyncio.wait_for(gw.process.wait(), 30) == 0
    log = gw.log.decode(errors="replace")
    assert "readyz answers 503" in log, log
    assert "still running after the grace" not in log, log
