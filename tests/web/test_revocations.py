"""Revocations reach a gateway before its first request. Sessions outlive a gateway (in
Redis), so a session revoked while a gateway was stopped must be refused by the first request
after its start, not from the watcher's first look on: that look may be slow or fail (the
store down, or busy), and until it succeeds the revoked session would pass. A real gateway
app on PostgreSQL (a database of the test's own) and Redis, the demo CRM, real TOTP."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg

from gateway.clock import FakeClock
from gateway.config.load import parse_config
from gateway.stores import open_durable
from gateway.web.app import build_app
from tests.conftest import Served, serve
from tests.postgres_server import Databases
from tests.signin_kit import DEMO_LOGIN, DEMO_POLICY, Browser, SignInGateway, enrolled, write_keys


def _config_text(crm: Served, folder: Path, postgres: str, redis: str, prefix: str) -> str:
    (folder / "policies").mkdir(exist_ok=True)
    (folder / "policies" / "policy.yaml").write_text(DEMO_POLICY)
    return (
        "listen: 127.0.0.1:0\n"
        f"upstream:\n  url: {crm.url}\n"
        "state:\n"
        f"  durable: {{type: postgres, url: '{postgres}'}}\n"
        f"  shared: {{type: redis, url: '{redis}', prefix: '{prefix}'}}\n"
        f"policies: {folder / 'policies'}\n"
        f"{DEMO_LOGIN}{write_keys(folder, reuse=True)}"
        "logging: {access_log: false}\n"
    )


async def test_a_session_revoked_while_stopped_is_refused_by_the_first_request(
    crm: Served, tmp_path: Path, postgres_databases: Databases, redis_url: str
) -> None:
    postgres = postgres_databases.create("revocations")
    text = _config_text(crm, tmp_path, postgres, redis_url, f"test:{secrets.token_hex(6)}:")
    config = parse_config(text, "test gateway.yaml")
    clock = FakeClock(1_800_000_000.0)
    first = await serve(build_app(config, clock=clock), handler_cancellation=True)
    b = Browser(SignInGateway(first, clock))
    locker = await asyncpg.connect(postgres)
    starting: asyncio.Task[Served] | None = None
    try:
        await enrolled(b)
        assert (await b.get("/contacts"))[0] == 200
        await first.runner.cleanup()
        # While it is stopped, an administrator ends alice's sessions (`sessions revoke`).
        store = await open_durable(config.state.durable, create=False)
        await store.revoke_sessions("alice", clock.now() + 1)
        await store.close()
        clock.advance(5)
        # The store is slow to give the revocations at the next start (a long lock here; a
        # store gone down, in production): the gateway must not serve until it has them.
        slow = locker.transaction()
        await slow.start()
        await locker.execute("LOCK TABLE session_revocations IN ACCESS EXCLUSIVE MODE")
        starting = asyncio.create_task(serve(build_app(config, clock=clock)))
        await asyncio.wait({starting}, timeout=3.0)
        if starting.done():
            # Serving already (as before the fix): the revoked session must not pass. It did,
            # with a 200, until the revocations were read before the first request.
            b.gw = SignInGateway(starting.result(), clock)
            status, _, _ = await b.get("/contacts")
            assert status == 302, "a session revoked while the gateway was stopped passed"
        await slow.rollback()
        b.gw = SignInGateway(await starting, clock)
        status, _, r = await b.get("/contacts")
        assert status == 302
        assert r.headers["Location"].startswith("/login")
    finally:
        await b.close()
        await locker.close()
        if starting is not None and starting.done() and not starting.exception():
            await starting.result().runner.cleanup()
