"""Sign-in with two worker processes sharing Redis: a session, the held CRM cookies, the
replay guard and the lockout made in one worker hold in the other. The real `python -m
gateway` process, the demo CRM, a real Redis and real TOTP codes on the system clock."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio

from gateway.clock import SystemClock
from gateway.crypto import new_key_line
from tests.conftest import Served
from tests.process import GatewayProcess, start_gateway_process
from tests.signin_kit import DEMO_LOGIN, DEMO_POLICY, Browser, enrolled, wrong_code


@dataclass
class ProcessGateway:
    """What tests.signin_kit.Browser needs of a gateway: its address and its clock."""

    url: str
    clock: SystemClock = field(default_factory=SystemClock)


def write_redis_config(
    tmp_path: Path, crm_url: str, redis_url: str, policy: str = DEMO_POLICY, extra: str = ""
) -> tuple[Path, str]:
    """gateway.yaml in `tmp_path` for gateways sharing the machine's Redis under a key prefix
    of their own, with the demo CRM's login watched, `policy` and new keys beside it, and
    `extra` config lines: the config's path and the prefix (forget_prefix, after)."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.yaml").write_text(policy)
    for name in ("session", "seal"):
        (tmp_path / f"{name}.keys").write_text(new_key_line("k1") + "\n")
    prefix = f"crm-gateway-test:{secrets.token_hex(6)}:"  # keys of this test only
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        f"upstream:\n  url: {crm_url}\n"
        "state:\n"
        f"  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
        f"  shared: {{type: redis, url: '{redis_url}', prefix: '{prefix}'}}\n"
        f"policies: {tmp_path / 'policies'}\n"
        f"{DEMO_LOGIN}"
        f"secrets:\n  session_keys: {{file: {tmp_path}/session.keys}}\n"
        f"  seal_keys: {{file: {tmp_path}/seal.keys}}\n"
        "logging: {access_log: false}\n"
        f"{extra}"
    )
    return config, prefix


async def forget_prefix(redis_url: str, prefix: str) -> None:
    """The Redis keys under `prefix` deleted: nothing of a test is left behind."""
    client = redis.asyncio.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def gateway(crm: Served, tmp_path: Path, redis_url: str) -> AsyncIterator[GatewayProcess]:
    config, prefix = write_redis_config(tmp_path, crm.url, redis_url, extra="workers: 2\n")
    process = await start_gateway_process(config)
    yield process
    await process.stop()
    await forget_prefix(redis_url, prefix)


async def spread_browser(gateway: GatewayProcess) -> Browser:
    """A browser that opens a new connection for every request, so its requests land on
    both workers."""
    browser = Browser(ProcessGateway(gateway.url))  # type: ignore[arg-type]
    headers = dict(browser.http.headers)
    await browser.http.close()
    browser.http = aiohttp.ClientSession(
        cookie_jar=browser.jar,
        headers=headers,
        connector=aiohttp.TCPConnector(force_close=True),
    )
    return browser


async def test_a_sign_in_spans_both_workers(gateway: GatewayProcess) -> None:
    assert len(gateway.children()) == 2
    b = await spread_browser(gateway)
    try:
        _, codes = await enrolled(b)
        for _ in range(6):  # whichever worker answers, the session is there
            status, html, _ = await b.get("/contacts")
            assert status == 200
            assert "Contacts" in html
        # Another browser: the code just used for enrolment is refused as a replay in
        # whichever worker checks it (it is still inside the ±30 s window); then a recovery
        # code works once.
        other = await spread_browser(gateway)
        third = await spread_browser(gateway)
        try:
            assert await other.crm_login("alice", "alice-demo") == "/_gateway/challenge"
            status, html, _ = await other.answer(b.enrolment_code)
            assert status == 400
            assert "already used" in html
            status, _, _ = await other.answer(codes[0], factor="recovery")
            assert status == 303
            assert await third.crm_login("alice", "alice-demo") == "/_gateway/challenge"
            status, html, _ = await third.answer(codes[0], factor="recovery")
            assert status == 400
            assert "already used" in html
        finally:
            await other.close()
            await third.close()
    finally:
        await b.close()


async def test_a_lockout_made_in_one_worker_holds_in_the_other(gateway: GatewayProcess) -> None:
    b = await spread_browser(gateway)
    try:
        secret, _ = await enrolled(b, "bob", "bob-demo")
        attacker = await spread_browser(gateway)
        try:
            await attacker.crm_login("bob", "bob-demo")
            statuses = []
            for _ in range(5):
                status, _, _ = await attacker.answer(wrong_code(attacker, secret))
                statuses.append(status)
            assert statuses == [400, 400, 400, 400, 429]
            for _ in range(4):  # every worker now shows the lockout, with no form
                status, html, _ = await attacker.get("/_gateway/challenge")
                assert status == 429
                assert 'name="code"' not in html
        finally:
            await attacker.close()
    finally:
        await b.close()
