"""Faults with two gateway hosts behind nginx (tests/several_hosts.py), against servers the
test starts and stops itself: a PostgreSQL cluster of its own (pg_ctl), a redis-server of its
own, the gateway processes. Fail closed: what needs a store that is down gets 503 (a branded
page for browsers, JSON for API clients), never a pass-through; readyz says so; nothing
written is lost; when the store is back the gateways recover without a restart. A gateway
killed with SIGKILL mid-session: the person goes on through the other without signing in.
The demo CRM notes every request that reached it, so "never forwarded" is checked."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import pyotp
import pytest

from gateway.demo.crm import STATE
from tests import postgres_cluster as pg
from tests import several_hosts
from tests.conftest import Served
from tests.several_hosts import Deployment, Host, scripted_browser
from tests.signin_kit import ARRIVED, CRM_COOKIE, Browser, enrolled, field, noted_crm

postgres_cluster = pg.postgres_cluster
deployment = several_hosts.deployment
crm = pytest.fixture(name="crm")(noted_crm)


async def readiness(d: Deployment, host: Host) -> tuple[int, dict[str, object]]:
    """A gateway's own readyz (what a load balancer that polls it sees)."""
    async with d.http.get(f"{host.url}/_gateway/readyz") as r:
        return r.status, await r.json()


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30.0) -> float:
    """Seconds until `check()` is true, asked every 50 ms."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def both_ready(d: Deployment) -> bool:
    return all([(await readiness(d, h))[0] == 200 for h in d.hosts])


async def login_posted(b: Browser) -> tuple[int, str, dict[str, str], str]:
    """The CRM's login form posted through nginx: status, body, headers, request id."""
    form = await b.crm_login_form("alice", "alice-demo")
    status, body, r = await b.post("/login", form)
    return status, body, dict(r.headers), r.headers.get("X-Request-Id", "")


def crm_saw_a_session(crm: Served, since: int) -> list[str]:
    """Requests that reached the CRM with a CRM session cookie after arrival `since`."""
    return [f"{a.method} {a.path}" for a in crm.app[ARRIVED][since:] if CRM_COOKIE in a.cookies]


async def test_postgres_stopped_mid_run_fails_closed_and_recovers(
    deployment: Deployment,
) -> None:
    d = deployment
    alice = await scripted_browser(d.url)
    second = await scripted_browser(d.url)
    during = await scripted_browser(d.url)
    script = await scripted_browser(d.url, accept="application/json")
    halfway = await scripted_browser(d.url)  # at the challenge when PostgreSQL stops
    try:
        secret, codes = await enrolled(alice)
        # The last write before the stop: a recovery code used (and its sign-in audited).
        assert await second.crm_login("alice", "alice-demo") == "/_gateway/challenge"
        status, _, r = await second.answer(codes[0], factor="recovery")
        assert status == 303, status
        last_write = r.headers["X-Request-Id"]
        assert await halfway.crm_login("alice", "alice-demo") == "/_gateway/challenge"
        d.cluster.stop("immediate")  # a crash, as the server sees it

        # Signed-in requests need no PostgreSQL (tests/flows/test_several_hosts_statements.py):
        # alice goes on, on both gateways.
        for _ in range(4):
            status, html, _ = await alice.get("/contacts")
            assert status == 200
            assert "Contacts" in html
        for host in d.hosts:
            status, body = await readiness(d, host)
            assert status == 503, body
            assert body["reasons"] == ["durable_store_not_writable"]
        # A new sign-in needs it: 503, the branded page, and nothing of the CRM's session
        # reaches the browser (the CRM answered the password; its cookies stay held).
        status, html, headers, refused = await login_posted(during)
        assert status == 503
        assert "Sign-in is temporarily unavailable" in html
        assert "Set-Cookie" not in headers
        assert during.cookie(CRM_COOKIE) is None
        status, _, _ = await during.get("/contacts")
        assert status == 302  # the CRM's own login again: the sign-in did not happen
        # A script is told in JSON, never a page.
        status, text, headers, _ = await login_posted(script)
        assert status == 503
        assert headers["Content-Type"].startswith("application/json")
        assert '"error": "store_unavailable"' in text
        # alice's own account page reads her authenticators: 503 too, not a half page.
        status, html, _ = await alice.get("/_gateway/account")
        assert status == 503
        for _ in range(2):  # the challenge needs the factors on file: on both gateways
            status, html, _ = await halfway.get("/_gateway/challenge")
            assert status == 503
            assert "temporarily unavailable" in html

        d.cluster.start()
        started = time.monotonic()
        status, _, _, _ = await login_posted(during)
        signed_in_again = time.monotonic() - started
        assert status == 303, status  # at once, without a restart of either gateway
        ready_after = await wait_for(lambda: both_ready(d), "readyz 200 on both")
        print(
            f"PostgreSQL back: a sign-in passed after {signed_in_again:.3f} s, "
            f"readyz 200 on both gateways after {ready_after:.3f} s"
        )
        # Nothing written was lost: the code used just before the crash stays used, the
        # next one and the authenticator work, and the audit events are there, those of the
        # outage too (they waited in memory).
        status, html, _ = await during.answer(codes[0], factor="recovery")
        assert status == 400
        assert "not correct or was already used" in html
        status, _, _ = await during.answer(codes[1], factor="recovery")
        assert status == 303
        # The sign-in under way when it stopped goes on where it was.
        status, _, _ = await halfway.answer(pyotp.TOTP(secret).at(time.time() + 30))
        assert status == 303
        names = {
            rid: [row[0] for row in rows]
            for rid in (last_write, refused)
            for rows in [
                d.cluster.sql(f"SELECT name FROM audit_events WHERE request_id = '{rid}'")[0]
            ]
        }
        assert "signin.completed" in names[last_write], names
        deadline = time.monotonic() + 10  # a batch every 0.5 s once the store takes it
        while "signin.crm_ok" not in names[refused] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            rows = d.cluster.sql(f"SELECT name FROM audit_events WHERE request_id = '{refused}'")
            names[refused] = [row[0] for row in rows[0]]
        assert "signin.crm_ok" in names[refused], names
    finally:
        for b in (alice, second, during, script, halfway):
            await b.close()


async def test_redis_stopped_mid_run_fails_closed_and_recovers(
    deployment: Deployment, crm: Served
) -> None:
    d = deployment
    alice = await scripted_browser(d.url)
    script = await scripted_browser(d.url, accept="application/json")
    newcomer = await scripted_browser(d.url)
    try:
        await enrolled(alice)
        for cookie in alice.jar:  # the same session, asked for by a script
            script.jar.update_cookies({cookie.key: cookie.value})
        d.redis.stop()
        since = len(crm.app[ARRIVED])

        for _ in range(2):  # one on each gateway
            status, html, _ = await alice.get("/contacts")
            assert status == 503
            assert "temporarily unavailable" in html
        status, body, r = await script.get("/contacts")
        assert status == 503
        assert r.headers["Content-Type"].startswith("application/json")
        assert '"error": "store_unavailable"' in body
        status, html, _, _ = await login_posted(newcomer)
        assert status == 503
        for host in d.hosts:
            status, ready = await readiness(d, host)
            assert status == 503, ready
            assert ready["reasons"] == ["shared_store_unavailable"]
        assert crm_saw_a_session(crm, since) == []
        assert [(a.method, a.path) for a in crm.app[ARRIVED][since:]] == [("GET", "/login")]

        d.redis.start()
        started = time.monotonic()

        async def alice_served() -> bool:
            return (await alice.get("/contacts"))[0] == 200

        back = await wait_for(alice_served, "alice served again")
        ready_after = await wait_for(lambda: both_ready(d), "readyz 200 on both")
        print(f"Redis back: alice served after {back:.3f} s, readyz 200 after {ready_after:.3f} s")
        # Without signing in again (Redis kept the session on disk), on both gateways.
        for _ in range(4):
            status, html, _ = await alice.get("/contacts")
            assert status == 200
            assert "Contacts" in html
        assert await newcomer.crm_login("alice", "alice-demo") == "/_gateway/challenge"
        assert time.monotonic() - started < 30
    finally:
        for b in (alice, script, newcomer):
            await b.close()


async def test_a_gateway_killed_mid_session_the_person_goes_on_through_the_other(
    deployment: Deployment, crm: Served
) -> None:
    d = deployment
    alice = await scripted_browser(d.url)
    try:
        await enrolled(alice)
        seen = set()
        for _ in range(4):
            status, _, r = await alice.get("/contacts")
            assert status == 200
            seen.add((await d.served_by(r.headers["X-Request-Id"])).name)
        assert seen == {"a", "b"}  # the session was in use on both

        killed = d.host("a")
        os.kill(killed.process.process.pid, signal.SIGKILL)
        await killed.process.process.wait()
        started = time.monotonic()
        status, html, r = await alice.get("/contacts")
        first = time.monotonic() - started
        assert status == 200
        assert "Contacts" in html
        served = [await d.served_by(r.headers["X-Request-Id"])]
        for _ in range(5):
            status, _, r = await alice.get("/contacts")
            assert status == 200
            served.append(await d.served_by(r.headers["X-Request-Id"]))
        # A form saved through the survivor: work goes on, not only page views.
        status, html, _ = await alice.get("/contacts/new")
        assert status == 200
        status, _, r = await alice.post(
            "/contacts",
            {"csrf_token": field(html, "csrf_token"), "name": "Ada", "company": "", "email": ""},
        )
        assert status == 303
        assert r.headers["Location"] == "/contacts"
        served.append(await d.served_by(r.headers["X-Request-Id"]))
        assert {h.name for h in served} == {"b"}
        assert [c["name"] for c in crm.app[STATE].contacts].count("Ada") == 1  # saved once
        print(f"gateway a killed: the first request after it took {first:.3f} s, served by b")
    finally:
        await alice.close()
