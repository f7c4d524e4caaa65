"""Health endpoints under the reserved prefix, and the prefix never reaching the CRM.

readyz is checked against real faults: a durable store on which writes fail as on a full
disk (the gateway process's file size limit lowered to one byte with prlimit: it holds for
root too, unlike chmod), a Redis of the test's own that is stopped, and a CRM that lets a
request wait past the read timeout."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.clock import FakeClock
from gateway.config.load import parse_config
from gateway.web.app import build_app
from gateway.web.health import CACHE_FOR, STALL_MEMORY
from gateway.web.keys import DURABLE
from tests.conftest import GatewayFactory, Served, send_raw, serve
from tests.process import free_port, start_gateway_process, write_config
from tests.redis_server import _answers, _binary


async def test_healthz_answers(gateway: Served, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/_gateway/healthz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok"}
        assert r.headers["Cache-Control"] == "no-store"


async def test_readyz_reports_upstream_and_stores(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/_gateway/readyz") as r:
        body = await r.json()
        assert r.status == 200
        assert body["status"] == "ok"
        assert body["reasons"] == []
        assert set(body["checks"]) == {"upstream", "durable_store", "shared_store"}
        assert {check["status"] for check in body["checks"].values()} == {"ok"}


async def _ready(url: str) -> tuple[int, dict[str, Any]]:  # readyz's JSON
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_gateway/readyz") as r:
        return r.status, await r.json()


async def _until_ready(url: str, want: int) -> dict[str, Any]:
    """readyz polled as a load balancer does, until it answers `want` (10 s at most)."""
    status = 0
    body: dict[str, Any] = {}
    for _ in range(100):
        status, body = await _ready(url)
        if status == want:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"readyz stayed {status}: {body}")


async def _healthz(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_gateway/healthz") as r:
        return r.status


async def test_readyz_is_503_while_the_durable_store_cannot_be_written(
    upstream: Served, tmp_path: Path
) -> None:
    """A full disk still lets SQLite read: only a write shows it (a read probe said 200)."""
    config = write_config(tmp_path, upstream.url, "shutdown: {drain_delay: 0s}\n")
    gw = await start_gateway_process(config)
    pid = gw.process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    try:
        assert (await _ready(gw.url))[0] == 200
        # Every write past the first byte of any file now fails (EFBIG), as on a full disk.
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, limits[1]))
        body = await _until_ready(gw.url, 503)
        assert body["reasons"] == ["durable_store_not_writable"]
        durable = body["checks"]["durable_store"]
        assert (durable["status"], durable["reason"]) == ("failed", "durable_store_not_writable")
        assert await _healthz(gw.url) == 200  # the process is fine: not a reason to restart it
        resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)
        await _until_ready(gw.url, 200)
    finally:
        if gw.process.returncode is None:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)
        assert await gw.stop() == 0
    assert b"not ready: durable_store_not_writable (sqlite " in gw.log
    assert b"ready again (was: durable_store_not_writable)" in gw.log


NOTHING_ON_DISK = ("--save", "", "--appendonly", "no")


class OwnRedis:
    """A redis-server of this test's own on a free port, stopped and started at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_binary(), "--port", str(self.port), "--bind", "127.0.0.1", *NOTHING_ON_DISK],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if _answers(self.port):
                return
            assert self.process.poll() is None, "redis-server did not start"
            subprocess.run(["sleep", "0.05"], check=True)
        raise AssertionError("redis-server did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    redis = OwnRedis()
    redis.start()
    yield redis
    redis.stop()


async def test_readyz_is_503_while_the_shared_store_is_down(
    upstream: Served, tmp_path: Path, own_redis: OwnRedis
) -> None:
    config = parse_config(
        f"listen: 127.0.0.1:0\nupstream: {{url: {upstream.url}}}\n"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
        f"  shared: {{type: redis, url: 'redis://127.0.0.1:{own_redis.port}/0'}}\n"
        "logging: {access_log: false}\n"
    )
    gw = await serve(build_app(config))
    try:
        assert (await _ready(gw.url))[0] == 200
        own_redis.stop()
        body = await _until_ready(gw.url, 503)
        assert body["reasons"] == ["shared_store_unavailable"]
        shared = body["checks"]["shared_store"]
        assert (shared["status"], shared["reason"]) == ("failed", "shared_store_unavailable")
        assert "redis" not in json.dumps(body).lower()  # the error's text stays in the log
        assert await _healthz(gw.url) == 200
        own_redis.start()
        await _until_ready(gw.url, 200)
    finally:
        await gw.runner.cleanup()


@pytest.fixture
async def fake_time_gateway(
    upstream: Served, tmp_path: Path
) -> AsyncIterator[tuple[Served, FakeClock]]:
    """The gateway on a fake clock (readyz's cache and memory move only when told), with a
    CRM read timeout short enough to hit."""
    config = parse_config(
        f"listen: 127.0.0.1:0\nupstream: {{url: {upstream.url}, timeouts: {{read: 300ms}}}}\n"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
        "logging: {access_log: false}\n"
    )
    clock = FakeClock()
    served = await serve(build_app(config, clock=clock), handler_cancellation=True)
    yield served, clock
    await served.runner.cleanup()


async def test_readyz_is_503_after_the_crm_left_a_request_past_the_read_timeout(
    fake_time_gateway: tuple[Served, FakeClock], http: aiohttp.ClientSession
) -> None:
    """The CRM accepts connections (a connect probe passes) but does not answer."""
    gw, clock = fake_time_gateway
    assert (await _ready(gw.url))[0] == 200
    async with http.get(f"{gw.url}/slow-headers?s=1") as r:
        assert r.status == 504
    clock.advance(CACHE_FOR)
    status, body = await _ready(gw.url)
    assert status == 503, body
    assert body["reasons"] == ["upstream_not_answering"]
    assert body["checks"]["upstream"]["reason"] == "upstream_not_answering"
    assert await _healthz(gw.url) == 200
    # An answer from the CRM ends it.
    async with http.get(f"{gw.url}/hello") as r:
        assert r.status == 200
    clock.advance(CACHE_FOR)
    assert (await _ready(gw.url))[0] == 200
    # With no traffic (the load balancer moved it away) nothing would show the CRM is
    # back: a stall counts for STALL_MEMORY, then readyz lets traffic try again.
    async with http.get(f"{gw.url}/slow-headers?s=1") as r:
        assert r.status == 504
    clock.advance(CACHE_FOR)
    assert (await _ready(gw.url))[0] == 503
    clock.advance(STALL_MEMORY)
    assert (await _ready(gw.url))[0] == 200


async def test_readyz_polled_in_a_burst_probes_once_a_second(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The connect probe reaches the CRM once for 60 polls within the cache's second."""
    accepted = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    crm = await asyncio.start_server(count, "127.0.0.1", 0)
    port = crm.sockets[0].getsockname()[1]
    config = parse_config(
        f"listen: 127.0.0.1:0\nupstream: {{url: 'http://127.0.0.1:{port}'}}\n"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
    )
    gw = await serve(build_app(config, clock=FakeClock()))
    try:
        polls = [_ready(gw.url) for _ in range(30)]
        answers = await asyncio.gather(*polls)
        answers += [await _ready(gw.url) for _ in range(30)]
        assert {status for status, _ in answers} == {200}
        assert accepted == 1
    finally:
        await gw.runner.cleanup()
        crm.close()
        await crm.wait_closed()


async def test_readyz_is_503_when_upstream_is_down(
    start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway("http://127.0.0.1:9")
    async with http.get(f"{gw.url}/_gateway/readyz") as r:
        body = await r.json()
        assert r.status == 503
        assert body["checks"]["upstream"]["status"].startswith("failed")
        assert body["checks"]["durable_store"]["status"] == "ok"
    async with http.get(f"{gw.url}/_gateway/healthz") as r:
        assert r.status == 200  # alive, only not ready


async def test_readyz_is_503_when_the_durable_store_stops_answering(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    # Closing the real SQLite store is what a failed disk or shutdown leaves behind.
    await gateway.app[DURABLE].close()
    async with http.get(f"{gateway.url}/_gateway/readyz") as r:
        body = await r.json()
    assert r.status == 503
    assert body["status"] == "unavailable"
    assert body["reasons"] == ["durable_store_not_writable"]
    assert body["checks"]["durable_store"]["status"].startswith("failed")
    assert body["checks"]["upstream"]["status"] == "ok"


async def test_gateway_does_not_start_when_store_cannot_open(
    upstream: Served, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = parse_config(
        f"listen: 127.0.0.1:0\nupstream: {{url: {upstream.url}}}\n"
        f"state: {{durable: {{type: sqlite, path: {blocker}/sub/gateway.db}}}}\n"
    )
    with pytest.raises(Exception, match=r"gateway\.db|Not a directory|File exists"):
        await serve(build_app(config))


@pytest.mark.parametrize(
    "path",
    [
        "/_gateway/healthz",
        "/_GATEWAY/healthz",
        "/%5fgateway/healthz",
        "//_gateway/healthz",
        "/x/../_gateway/healthz",
        "/_gateway/./healthz",
    ],
)
async def test_reserved_prefix_in_any_spelling_is_the_gateways(gateway: Served, path: str) -> None:
    """PN-2: never proxied; the CRM can never serve content under the prefix."""
    request = f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    raw = await send_raw(gateway.port, request.encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body) == {"status": "ok"}


async def test_unknown_gateway_path_is_404_not_proxied(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/_gateway/admin", headers={"Accept": "text/html"}) as r:
        assert r.status == 404
        assert "Page not found" in await r.text()
    async with http.post(f"{gateway.url}/_gateway/healthz") as r:
        assert r.status == 405


async def test_custom_prefix_moves_health_and_frees_default(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream.url, "path_prefix: /.well-known/gw/\n")
    async with http.get(f"{gw.url}/.well-known/gw/healthz") as r:
        assert r.status == 200
    async with http.get(f"{gw.url}/_gateway/healthz") as r:
        body = await r.json()
        assert body["raw_path"] == "/_gateway/healthz"  # the CRM's now
