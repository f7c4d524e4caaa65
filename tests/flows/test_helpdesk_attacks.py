"""Attacks on the helpdesk console (issue 19), by an outsider and by a malicious helpdesk user
or auditor, against the real gateway over loopback: acting on oneself, on several users at
once or as an auditor; forged and misplaced CSRF tokens and other methods; addresses claimed
in headers; a factor that is not fresh (a remembered device); API tokens; the console's path
spelled otherwise; secrets in any page or file; bad input (dates, bytes that are not UTF-8,
page numbers); formulas in the CSV; markup in names and user agents. Each refusal is checked
for what the CRM and the store saw, not only for its status."""

from __future__ import annotations

import pytest

from gateway.stores import AuditQuery
from gateway.web.keys import AUDIT
from tests.conftest import Served
from tests.helpdesk_kit import ADMIN, CONSOLE_POLICY, console_gateway
from tests.signin_kit import (
    ARRIVED,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    enrolled,
    field,
    noted_crm,
)

crm = pytest.fixture(noted_crm)


async def refusals(gw: SignInGateway) -> list[tuple[str, str]]:
    """(reason, user acted on) of every console refusal so far."""
    await gw.served.app[AUDIT].flush()
    found = await gw.signin.durable.audit_events(AuditQuery(names=("admin.console_refused",)))
    return [(e.reason, e.user) for _, e in found]


async def csrf_of(b: Browser, user: str = "carol") -> str:
    status, html, _ = await b.get(f"{ADMIN}user?u={user}")
    assert status == 200, html[:300]
    return field(html, "csrf")


@pytest.fixture
async def gw(crm: Served, start: Start) -> SignInGateway:
    return await console_gateway(start, crm.url)


@pytest.fixture
async def alice(gw: SignInGateway, browsers: Browsers) -> Browser:
    """alice (helpdesk) signed in; carol enrolled before her."""
    await enrolled(browsers(gw), "carol", "carol-demo")
    gw.clock.advance(30)
    b = browsers(gw)
    await enrolled(b, "alice", "alice-demo")
    return b


async def test_activity_dates_at_the_ends_of_the_calendar_are_never_a_500(
    gw: SignInGateway, alice: Browser
) -> None:
    for query in (
        "per=day&since=0001-01-01T00:00:00%2B14:00&until=0001-01-03",
        "per=hour&since=0001-01-01T00:00:00%2B14:00&until=0001-01-01T05:00",
        "per=day&since=9999-12-30&until=9999-12-31T23:59:59-14:00",
        "per=day&until=0001-01-01T00:00:00%2B14:00",
        "since=" + "9" * 400 + "d",
        "until=" + "9" * 400 + "w",
        "before=999999999999999999",
    ):
        status, html, _ = await alice.get(f"{ADMIN}activity?{query}")
        assert status in (200, 400), (query, status, html[:300])
    # Before year 1 in UTC: said beside the form, as any time that cannot be read.
    status, html, _ = await alice.get(
        f"{ADMIN}activity?per=day&since=0001-01-01T00:00:00%2B14:00&until=0001-01-03"
    )
    assert status == 400 and "From: enter a time" in html


async def test_bytes_that_are_not_utf8_are_refused_or_read_never_a_500(
    gw: SignInGateway, alice: Browser
) -> None:
    for path in ("?q=%ff%fe", "user?u=%ff", "activity?user=%c3%28", "sms?quarter=%ff"):
        status, html, _ = await alice.get(f"{ADMIN}{path}")
        assert status in (200, 400, 404), (path, status, html[:300])
    csrf = await csrf_of(alice)
    body = f"csrf={csrf}&user=car%ffol&action=unlock".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with alice.http.post(
        f"{gw.url}{ADMIN}act", data=body, headers=headers, allow_redirects=False
    ) as r:
        assert r.status == 404, await r.text()
    latin = "application/x-www-form-urlencoded; charset=latin-1"
    async with alice.http.post(
        f"{gw.url}{ADMIN}act", data=body, headers={"Content-Type": latin}, allow_redirects=False
    ) as r:
        assert r.status in (400, 404), await r.text()


async def test_an_address_claimed_in_headers_never_opens_the_console(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    # The console is for 10.0.0.0/8; the browsers are at 127.0.0.1, which no proxy vouches for.
    policy = CONSOLE_POLICY.replace('office: [127.0.0.0/8, "::1/128"]', "office: [10.0.0.0/8]")
    gw = await console_gateway(start, crm.url, policy=policy)
    b = browsers(gw)
    await enrolled(b, "alice", "alice-demo")
    for claimed in (
        {"X-Forwarded-For": "10.1.2.3"},
        {"X-Real-IP": "10.1.2.3"},
        {"Forwarded": "for=10.1.2.3"},
        {"X-Forwarded-For": "10.1.2.3, 10.1.2.4", "X-Client-IP": "10.1.2.3"},
    ):
        async with b.http.get(f"{gw.url}{ADMIN}", headers=claimed, allow_redirects=False) as r:
            assert r.status == 403, claimed
    # Behind a trusted proxy, the address it saw is the client's, not one the client named.
    behind = await console_gateway(
        start, crm.url, policy=policy, extra="trusted_proxies: [127.0.0.1/32]\n"
    )
    b = browsers(behind, headers={"X-Forwarded-For": "10.1.2.3, 198.51.100.7"})
    await enrolled(b, "alice", "alice-demo")
    assert (await b.get(ADMIN))[0] == 403
    assert list(await refusals(behind)) == [("network", "")]
    assert not [a for a in crm.app[ARRIVED] if "admin" in a.path.lower()]


async def test_a_session_opened_by_a_remembered_device_is_not_a_fresh_factor(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b, "alice", "alice-demo")
    gw.clock.advance(60)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    status, _, r = await b.answer(b.code(secret), remember=True)
    assert status == 303
    gw.clock.advance(20 * 60)
    b.jar.clear(lambda c: c.key == "crm_gateway")  # the session ends; the device cookie stays
    assert await b.crm_login("alice", "alice-demo") == "/contacts"  # the device stood in
    status, _, r = await b.get(ADMIN)
    assert (status, r.headers.get("Location")) == (303, "/_gateway/challenge")


async def test_actions_go_by_post_only(gw: SignInGateway, alice: Browser) -> None:
    csrf = await csrf_of(alice)
    data = {"csrf": csrf, "user": "carol", "action": "revoke"}
    for method in ("PUT", "PATCH", "DELETE"):
        async with alice.http.request(
            method, f"{gw.url}{ADMIN}act", data=data, allow_redirects=False
        ) as r:
            assert r.status == 405, (method, r.status)
    status, _, _ = await alice.get(f"{ADMIN}act?csrf={csrf}&user=carol&action=revoke")
    assert status == 405
    await gw.served.app[AUDIT].flush()
    done = await gw.signin.durable.audit_events(AuditQuery(names=("admin.sessions_revoked",)))
    assert done == []
