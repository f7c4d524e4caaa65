"""Attacks on the helpdesk console (issue 19), by an outsider and by a malicious helpdesk user
or auditor, against the real gateway over loopback: acting on oneself, on several users at
once or as an auditor; forged and misplaced CSRF tokens and other methods; addresses claimed
in headers; a factor that is not fresh (a remembered device); API tokens; the console's path
spelled otherwise; secrets in any page or file; bad input (dates, bytes that are not UTF-8,
page numbers); formulas in the CSV; markup in names and user agents. Each refusal is checked
for what the CRM and the store saw, not only for its status."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import redis.asyncio
from yarl import URL

from gateway.clock import FakeClock
from gateway.config.load import parse_config
from gateway.model import AuditEvent
from gateway.policy.tokens import digest
from gateway.stores import AuditQuery, LedgerRow
from gateway.web.app import build_app
from gateway.web.guard import GUARD
from gateway.web.keys import AUDIT
from tests.conftest import Served, serve
from tests.flows.test_helpdesk_admin_listener import _config as listener_config
from tests.flows.test_helpdesk_admin_listener import admin_url
from tests.helpdesk_kit import (
    ADMIN,
    CONSOLE_POLICY,
    alice,
    console_gateway,
    csrf_of,
    gw,
)
from tests.process import start_gateway_process
from tests.signin_kit import (
    ARRIVED,
    DEMO_LOGIN,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    audit_trail,
    enrolled,
    field,
    noted_crm,
    write_keys,
)

__all__ = ["alice", "gw"]  # the fixtures, by name

crm = pytest.fixture(noted_crm)


async def refusals(gw: SignInGateway) -> list[tuple[str, str]]:
    """(reason, user acted on) of every console refusal so far."""
    return [(e.reason, e.user) for e in await audit_trail(gw.served, "admin.console_refused")]


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


async def test_an_api_token_never_opens_the_console(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    policy = CONSOLE_POLICY + "api:\n  tokens:\n    - {header: Authorization, schemes: [Bearer]}\n"
    gw = await console_gateway(start, crm.url, policy=policy)
    token = secrets.token_urlsafe(32)
    await gw.signin.durable.add_token("tok_alice", "alice", digest(token), "", 0.0)
    await gw.served.app[GUARD].refresh_tokens()
    bearer = {"Authorization": f"Bearer {token}", "Accept": "text/html"}
    # alone: a script is answered as a script (JSON), never with a page
    token_only = browsers(gw, headers=bearer)
    for path in ("", "user?u=carol", "activity", "sms.csv"):
        status, body, r = await token_only.get(f"{ADMIN}{path}")
        assert (status, r.content_type) == (403, "application/json"), (path, body[:200])
        assert json.loads(body)["error"] == "api_credential"
    # with the administrator's own session beside it: the request reads two ways
    b = browsers(gw)
    await enrolled(b, "alice", "alice-demo")
    assert (await b.get(ADMIN))[0] == 200
    async with b.http.get(f"{gw.url}{ADMIN}", headers=bearer, allow_redirects=False) as r:
        assert (r.status, r.content_type) == (403, "application/json")
    assert {reason for reason, _ in await refusals(gw)} == {"api_credential"}


@pytest.mark.parametrize(
    "path",
    [
        "/_gateway/Admin/user?u=carol",
        "/_GATEWAY/admin/user?u=carol",
        "//_gateway//admin//user?u=carol",
        "/_gateway/admin/./user?u=carol",
        "/_gateway/admin/../admin/user?u=carol",
        "/x/../_gateway/admin/user?u=carol",
        "/_gateway/admin%2fuser?u=carol",
        "/_gateway%2fadmin%2fuser?u=carol",
        "/%5fgateway/admin/user?u=carol",
        "/_gateway/%61dmin/user?u=carol",
        "/_gateway\\admin\\user?u=carol",
        "/_gateway/admin/user/?u=carol",
        "/_gateway/admin/user;x?u=carol",
        "/_gateway/admin/user%00?u=carol",
    ],
)
async def test_the_console_spelled_otherwise_is_the_console_or_nothing(
    crm: Served, gw: SignInGateway, browsers: Browsers, path: str
) -> None:
    """Every spelling is the gateway's (never the CRM's), and none skips a check: carol (no
    admin role, signed in) and a stranger (not signed in) never see a console page."""
    await enrolled(browsers(gw), "alice", "alice-demo")  # the console has someone to show
    carol = browsers(gw)
    await enrolled(carol, "carol", "carol-demo")
    stranger = browsers(gw)
    before = len(crm.app[ARRIVED])
    for b in (carol, stranger):
        async with b.http.get(gw.url + path, allow_redirects=False) as r:
            html = await r.text()
            assert r.status in (400, 401, 403, 404), (path, r.status)
            assert "Sign-in methods" not in html
    assert crm.app[ARRIVED][before:] == []


async def test_no_page_or_file_shows_a_secret(
    gw: SignInGateway, alice: Browser, browsers: Browsers
) -> None:
    """carol's whole phone number and e-mail address, her TOTP key, her recovery codes and
    session ids: in no console page, chart, CSV or refusal, whatever is asked."""
    carol = browsers(gw)
    secret, codes = await enrolled(carol, "bob", "bob-demo")  # bob's too: an auditor
    store = gw.signin.durable
    now = gw.clock.now()
    await store.record_message(
        LedgerRow(now, "carol", "customers", "sms", "quixx", "sent", 1, "0.10", "EUR")
    )
    carols = [c.value for c in alice.jar if c.key == "crm_gateway"]
    pages = [
        "",
        "?q=carol",
        "user?u=carol",
        "user?u=carol&ip=127.0.0.1&method=POST&path=/contacts",
        "user?u=bob",
        "activity",
        "activity?user=carol&event=*",
        "activity?event=admin.*",
        "sms",
        "sms?channel=all&by=group",
        "sms.csv",
        "sms.csv?channel=all",
    ]
    secrets_ = ["1234 5678", "612345678", "carol@example.nl", secret, *codes, *carols]
    for page in pages:
        _, body, _ = await alice.get(f"{ADMIN}{page}")
        for found in secrets_:
            assert found not in body, (page, found)
    await gw.served.app[AUDIT].flush()
    trail = json.dumps([e.details for _, e in await store.audit_events(AuditQuery())])
    for found in (secret, *codes):
        assert found not in trail


async def test_formulas_in_names_are_text_in_the_csv_and_markup_is_text_everywhere(
    gw: SignInGateway, alice: Browser, browsers: Browsers
) -> None:
    now = gw.clock.now()
    store = gw.signin.durable
    names = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1"]
    names += ['<svg onload="alert(1)">', "</title><script>alert(1)</script>"]
    names += ["carol\r=HYPERLINK(1)", "carol\n@SUM(1)"]  # a row break inside a name
    for name in names:
        await store.record_message(
            LedgerRow(now, name, name, "sms", "quixx", "sent", 1, "0.10", "EUR")
        )
    # markup reaches the trail from outside too: a login form naming anyone
    stranger = browsers(gw, headers={"Accept": "text/html", "User-Agent": "<svg onload=x>"})
    await stranger.crm_login_form("x", "y")
    await stranger.post("/login", {"username": names[6], "password": "wrong"})
    await store.add_audit_events(
        [AuditEvent(now, "ip.denied", "denied", user=names[7], ip="192.0.2.1", reason=names[6])]
    )
    for by in ("user", "group"):
        _, csv_text, r = await alice.get(f"{ADMIN}sms.csv?by={by}")
        assert r.content_type == "text/csv"
        for line in csv_text.splitlines()[1:]:
            first = line.lstrip('"')
            assert first[:1] not in ("=", "+", "-", "@", "\t", "\r"), line
    for page in ("sms", "sms?by=group", "activity", "activity?event=*", "?q=%3Csvg"):
        _, html, _ = await alice.get(f"{ADMIN}{page}")
        assert "<svg onload" not in html and "<script>alert" not in html, page
        assert "&lt;svg onload" in html or page.startswith("?"), page


async def test_one_user_a_request_however_the_form_names_several(
    gw: SignInGateway, alice: Browser
) -> None:
    csrf = await csrf_of(alice)
    store = gw.signin.durable
    for body in (
        f"csrf={csrf}&user=carol&user=bob&action=revoke",
        f"csrf={csrf}&user=carol,bob&action=revoke",
        f"csrf={csrf}&user=carol%20bob&action=revoke",
        f"csrf={csrf}&user%5B%5D=carol&user%5B%5D=bob&action=revoke",
        f"csrf={csrf}&user=carol&u=bob&action=revoke",
        f"csrf={csrf}&user=carol%0abob&action=revoke",
        f"csrf={csrf}&user=*&action=revoke",
        f"csrf={csrf}&user=carol&action=revoke&action=reset&confirm=1",
        f"csrf={csrf}&csrf={csrf}&user=carol&action=revoke",
    ):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with alice.http.post(
            f"{gw.url}{ADMIN}act?user=bob", data=body, headers=headers, allow_redirects=False
        ) as r:
            assert r.status in (400, 404), (body, r.status)
    await gw.served.app[AUDIT].flush()
    assert await store.audit_events(AuditQuery(names=("admin.sessions_revoked",))) == []
    assert len(await store.authenticators("carol")) == 1


async def test_an_auditor_acts_on_nobody_and_csrf_tokens_are_per_session(
    gw: SignInGateway, alice: Browser, browsers: Browsers
) -> None:
    bob = browsers(gw)
    await enrolled(bob, "bob", "bob-demo")
    bobs = await csrf_of(bob)
    for action in ("unlock", "revoke", "reset", "regenerate", "forget"):
        data = {"csrf": bobs, "user": "carol", "action": action, "confirm": "1"}
        data |= {"delivery": "show", "device": "x"}
        assert (await bob.post(f"{ADMIN}act", data))[0] == 403
    data = {"csrf": bobs, "user": "bob", "action": "revoke"}
    assert (await bob.post(f"{ADMIN}act", data))[0] == 403  # on himself too
    # alice with bob's token, with a login form's token, with none, with her old one
    _, login, _ = await alice.get("/_gateway/login")
    for token in (bobs, field(login, "csrf") if 'name="csrf"' in login else "x", ""):
        data = {"csrf": token, "user": "carol", "action": "revoke"}
        assert (await alice.post(f"{ADMIN}act", data))[0] == 403
    old = await csrf_of(alice)
    gw.clock.advance(60)
    alice.jar.clear(lambda c: c.key == "crm_gateway")
    assert await alice.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    data = {"csrf": old, "user": "carol", "action": "revoke"}
    assert (await alice.post(f"{ADMIN}act", data))[0] in (401, 403)
    await gw.served.app[AUDIT].flush()
    assert await gw.signin.durable.audit_events(AuditQuery(names=("admin.sessions_revoked",))) == []
    assert [r for r, _ in await refusals(gw)][:6] == ["read_only"] * 6


async def test_a_session_planted_before_sign_in_does_not_open_the_console(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """Session fixation: carol, half signed in (her password, not her code), plants her
    cookies in alice's browser; alice signs in there and opens the console; carol's
    cookies still open nothing."""
    await enrolled(browsers(gw), "carol", "carol-demo")
    gw.clock.advance(30)
    attacker = browsers(gw)
    assert await attacker.crm_login("carol", "carol-demo") == "/_gateway/challenge"
    victim = browsers(gw)
    planted = {c.key: c.value for c in attacker.jar}
    victim.jar.update_cookies(planted, response_url=URL(gw.url))
    await enrolled(victim, "alice", "alice-demo")
    assert (await victim.get(ADMIN))[0] == 200
    assert victim.cookie("crm_gateway") != attacker.cookie("crm_gateway")
    status, _, _ = await attacker.get(f"{ADMIN}user?u={quote('carol')}")
    assert status == 401


async def test_another_spelling_of_oneself_is_still_oneself(
    gw: SignInGateway, alice: Browser
) -> None:
    csrf = await csrf_of(alice)
    for spelled in ("ALICE", " alice ", "Alíce", "ａｌｉｃｅ"):
        data = {"csrf": csrf, "user": spelled, "action": "revoke"}
        status, html, _ = await alice.post(f"{ADMIN}act", data)
        assert status == 403 and "cannot change your own sign-in here" in html, spelled
    assert (await alice.get(ADMIN))[0] == 200  # still signed in: nothing was revoked
    assert [r for r, _ in await refusals(gw)] == ["self"] * 4


async def on_redis(
    crm: Served, folder: Path, redis_url: str, prefix: str, clock: FakeClock
) -> SignInGateway:
    """A gateway with the console (5 pages, 2 changes a minute) whose shared store is Redis
    under `prefix`; its own SQLite, keys and policy in `folder`."""
    folder.mkdir()
    (folder / "policy.yaml").write_text(CONSOLE_POLICY)
    text = (
        "listen: 127.0.0.1:0\n"
        f"upstream:\n  url: {crm.url}\n"
        f"state:\n  durable: {{type: sqlite, path: {folder}/gateway.db}}\n"
        f"  shared: {{type: redis, url: '{redis_url}', prefix: '{prefix}'}}\n"
        "logging: {access_log: false}\n"
        f"{DEMO_LOGIN}{write_keys(folder)}policies: {folder}\n"
        "admin:\n  console: {networks: [office], rate: {read: 5, act: 2}}\n"
    )
    config = parse_config(text, "test gateway.yaml")
    return SignInGateway(await serve(build_app(config, clock=clock)), clock)


async def test_the_page_rate_is_the_administrators_on_every_gateway(
    crm: Served, browsers: Browsers, redis_url: str, tmp_path: Path
) -> None:
    """Two gateways on one Redis: alice's pages on both count against one budget a minute."""
    prefix = f"crm-gateway-test:{secrets.token_hex(6)}:"
    clock = FakeClock(1_800_000_000.0)
    first = await on_redis(crm, tmp_path / "one", redis_url, prefix, clock)
    second = await on_redis(crm, tmp_path / "two", redis_url, prefix, clock)
    try:
        on_first, on_second = browsers(first), browsers(second)
        await enrolled(on_first, "alice", "alice-demo")  # each gateway has its own SQLite
        clock.advance(30)  # (a code is used once, in the shared store: the next one)
        await enrolled(on_second, "alice", "alice-demo")  # here: she enrols on both
        statuses = []
        for n in range(8):
            statuses.append((await (on_first, on_second)[n % 2].get(ADMIN))[0])
        assert statuses == [200] * 5 + [429] * 3
        clock.advance(60)
        assert (await on_second.get(ADMIN))[0] == 200  # the next minute
    finally:
        for gw in (first, second):
            await gw.served.runner.cleanup()
        client = redis.asyncio.Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_the_console_on_the_admin_port_is_nowhere_on_the_main_port(
    crm: Served, tmp_path: Path
) -> None:
    """`at: admin_listener`: on the main port every spelling of the console is 404 from the
    gateway (never the CRM's); on the admin port the same checks hold as anywhere."""
    process = await start_gateway_process(listener_config(tmp_path, crm.url))
    try:
        admin = admin_url(process)
        before = len(crm.app[ARRIVED])
        async with aiohttp.ClientSession() as http:
            for path in (
                "/_gateway/admin/",
                "/_gateway/Admin/user?u=carol",
                "//_gateway//admin//user?u=carol",
                "/x/../_gateway/admin/user?u=carol",
                "/_gateway/admin%2fuser?u=carol",
                "/%5fgateway/%61dmin/activity",
            ):
                async with http.get(process.url + path, allow_redirects=False) as r:
                    assert r.status == 404, (path, r.status)
            async with http.get(
                f"{admin}{ADMIN}", headers={"Authorization": "Bearer x"}, allow_redirects=False
            ) as r:
                assert (r.status, r.content_type) == (403, "application/json")
            async with http.get(
                f"{admin}{ADMIN}", headers={"X-Forwarded-For": "10.9.9.9"}, allow_redirects=False
            ) as r:
                assert r.status == 401  # the address is the socket's; not signed in
        assert crm.app[ARRIVED][before:] == []
    finally:
        assert await process.stop() == 0


async def test_page_numbers_and_event_ids_out_of_range_are_refused_plainly(
    gw: SignInGateway, alice: Browser
) -> None:
    for path in (
        "?page=-1",
        "?page=0",
        "?page=10001",
        "?page=1e3",
        "?page=%D9%A3",  # an Arabic-Indic 3: a digit to str.isdigit, not a page
        "?page=" + "9" * 200,
        "activity?before=-1",
        "activity?before=1e9",
        "activity?before=" + "9" * 19,
    ):
        status, html, _ = await alice.get(f"{ADMIN}{path}")
        assert status == 400 and "This request was changed" in html, (path, status)
    assert (await alice.get(f"{ADMIN}?page=10000"))[0] == 200  # past the end: an empty page
