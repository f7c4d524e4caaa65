"""Health endpoints under the reserved prefix, and the prefix never reaching the CRM."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from gateway.config import parse_config
from gateway.web.app import build_app
from gateway.web.keys import DURABLE
from tests.conftest import GatewayFactory, Served, send_raw, serve


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
        assert set(body["checks"]) == {"upstream", "durable_store", "shared_store"}


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
