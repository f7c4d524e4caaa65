"""1 GB up and 1 GB down through the real gateway process, its memory read from /proc.

The gateway must stream with back-pressure: its resident memory may grow by less than 30 MB
(the foundation issue's bound) while a gigabyte passes each way.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.demo.crm import pattern_chunk
from tests.conftest import Served
from tests.process import QUICK, GatewayProcess, start_gateway_process, write_config

GIB = 1024**3
RSS_GROWTH_LIMIT_KIB = 30 * 1024

pytestmark = pytest.mark.slow


@pytest.fixture
async def gateway_process(crm: Served, tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    gw = await start_gateway_process(
        write_config(tmp_path, crm.url, "logging: {access_log: false}\n")
    )
    # Warm up the paths a transfer uses, so one-off allocations are in the baseline.
    async with aiohttp.ClientSession(timeout=QUICK) as http:
        async with http.get(f"{gw.url}/diag/stream?bytes=4194304") as r:
            await r.read()
        async with http.post(f"{gw.url}/diag/sink", data=io.BytesIO(b"x" * 4194304)) as r:
            await r.read()
    yield gw
    await gw.stop()


async def test_one_gigabyte_download_with_bounded_memory(gateway_process: GatewayProcess) -> None:
    gw = gateway_process
    baseline = gw.rss_kib()
    # The demo CRM sends bytes(range(256)) over and over: byte n of the body is n % 256.
    pattern = pattern_chunk(2 << 20)
    misplaced = 0  # chunks whose bytes are not the ones sent at that offset
    received = 0
    peak = baseline
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gw.url}/diag/stream?bytes={GIB}&chunked=1") as r,
    ):
        assert r.status == 200
        async for chunk in r.content.iter_chunked(1 << 20):
            start = received % 256
            misplaced += chunk != pattern[start : start + len(chunk)]
            received += len(chunk)
            if received % (64 << 20) < len(chunk):
                peak = max(peak, gw.rss_kib())
    peak = max(peak, gw.rss_kib("VmHWM"))
    assert received == GIB
    assert misplaced == 0
    growth = peak - baseline
    print(f"download: baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB")
    assert growth < RSS_GROWTH_LIMIT_KIB


async def test_one_gigabyte_upload_with_bounded_memory(gateway_process: GatewayProcess) -> None:
    gw = gateway_process
    baseline = gw.rss_kib()
    chunk = pattern_chunk(1 << 20)
    expected = hashlib.sha256()
    peaks = [baseline]

    async def body() -> AsyncIterator[bytes]:
        for i in range(GIB // len(chunk)):
            expected.update(chunk)
            if i % 64 == 0:
                peaks.append(gw.rss_kib())
            yield chunk

    async with aiohttp.ClientSession() as http, http.post(f"{gw.url}/diag/sink", data=body()) as r:
        assert r.status == 200
        seen = await r.json()
    peak = max(*peaks, gw.rss_kib("VmHWM"))
    assert seen["bytes"] == GIB
    assert seen["sha256"] == expected.hexdigest()
    growth = peak - baseline
    print(f"upload: baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB")
    assert growth < RSS_GROWTH_LIMIT_KIB
