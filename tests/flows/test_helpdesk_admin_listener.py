"""The console on the admin listener (`admin.console.at: admin_listener`), as `crm-gateway
run` serves it: /metrics and the console on the admin port (with two workers, the metrics of
both added up), the console nowhere on the main port, and an administrator signing in and
acting there through the same gateway."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import aiohttp
import redis.asyncio

from gateway.crypto import new_key_line
from tests.conftest import Served
from tests.helpdesk_kit import ADMIN, CONSOLE_POLICY
from tests.process import GatewayProcess, start_gateway_process
from tests.signin_kit import DEMO_LOGIN, Browser, enrolled

_ADMIN_URL = re.compile(rb"metrics on http://(?P<host>[^ ]+):(?P<port>\d+)/metrics")


class _Clock:
    def now(self) -> float:
        return time.time()


class _Gateway:
    """What the scripted browser needs of a gateway: where it is, and the time of its codes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clock = _Clock()


def _config(tmp_path: Path, crm: str, extra: str = "") -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.yaml").write_text(CONSOLE_POLICY)
    for name in ("session", "seal"):
        (tmp_path / f"{name}.keys").write_text(new_key_line("k1") + "\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        f"upstream:\n  url: {crm}\n"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
        f"policies: {tmp_path / 'policies'}\n"
        "admin:\n  listen: 127.0.0.1:0\n"
        "  console: {at: admin_listener, networks: [office]}\n"
        "logging: {access_log: false}\n"
        f"audit: {{file: {tmp_path}/audit.jsonl}}\n"
        f"{DEMO_LOGIN}"
        f"secrets:\n  session_keys: {{file: {tmp_path}/session.keys}}\n"
        f"  seal_keys: {{file: {tmp_path}/seal.keys}}\n"
        f"{extra}"
    )
    return config


def admin_url(process: GatewayProcess) -> str:
    found = _ADMIN_URL.search(bytes(process.log))
    assert found, process.log.decode(errors="replace")
    return f"http://{found['host'].decode()}:{int(found['port'])}"


async def status_of(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as r:
        return r.status, await r.text()


async def test_the_console_and_the_metrics_share_the_admin_port(
    crm: Served, tmp_path: Path
) -> None:
    process = await start_gateway_process(_config(tmp_path, crm.url))
    try:
        admin = admin_url(process)
        assert b"and the helpdesk console at /_gateway/admin/" in process.log
        status, text = await status_of(f"{admin}/metrics")
        assert status == 200 and "crm_gateway_requests_total" in text
        assert (await status_of(f"{process.url}{ADMIN}"))[0] == 404
        status, text = await status_of(f"{admin}{ADMIN}")
        assert status == 401 and "Sign in first" in text
        # alice signs in on the admin port (the CRM's login passes there too) and acts.
        alice = Browser(_Gateway(admin))  # type: ignore[arg-type]
        carol = Browser(_Gateway(process.url))  # type: ignore[arg-type]
        try:
            await enrolled(carol, "carol", "carol-demo")
            await enrolled(alice, "alice", "alice-demo")
            status, html, _ = await alice.get(f"{ADMIN}user?u=carol")
            assert status == 200 and "User carol" in html
            csrf = re.search(r'name="csrf" value="([^"]+)"', html)
            assert csrf
            status, _, r = await alice.post(
                f"{ADMIN}act", {"csrf": csrf[1], "user": "carol", "action": "revoke"}
            )
            assert (status, r.headers["Location"]) == (303, f"{ADMIN}user?u=carol&done=revoked")
            assert (await carol.get("/contacts"))[0] == 302  # signed out on the main port
            async with alice.http.get(f"{process.url}{ADMIN}user?u=carol") as r:
                assert r.status == 404  # signed in, but this is not the console's listener
        finally:
            await alice.close()
            await carol.close()
    finally:
        assert await process.stop() == 0


async def test_two_workers_metrics_are_added_up_on_the_admin_port(
    crm: Served, tmp_path: Path, redis_url: str
) -> None:
    prefix = f"crm-gateway-test:{secrets.token_hex(6)}:"
    shared = f"state:\n  shared: {{type: redis, url: '{redis_url}', prefix: '{prefix}'}}\n"
    config = _config(tmp_path, crm.url, "workers: 2\n")
    config.write_text(config.read_text().replace("state:\n", shared))
    process = await start_gateway_process(config)
    try:
        assert len(process.children()) == 2
        async with aiohttp.ClientSession() as http:
            for _ in range(30):  # new connections: the kernel spreads them over both workers
                async with http.get(f"{process.url}/login", headers={"Connection": "close"}) as r:
                    assert r.status == 200
        status, text = await status_of(f"{admin_url(process)}/metrics")
    finally:
        assert await process.stop() == 0
        client = redis.asyncio.Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    assert status == 200
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('crm_gateway_requests_total{decision="forward"}')
    )
    assert float(line.rsplit(" ", 1)[1]) == 30
