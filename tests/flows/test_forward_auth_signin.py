"""Sign-in as the forward-auth endpoint sees it: the gateway's pages and the CRM's login go
through the gateway (as the deploy/ configs send them), every other request is asked of
`/_gateway/auth` the way Caddy and nginx ask it. The demo CRM for the CRM's own login, the echo
CRM for gateway login; real TOTP, a fake clock; for the caches, a redis-server of the test's own
whose every command is counted, and every call on the workers' SQLite store (issue 18, item 4)."""

from __future__ import annotations

import functools
import inspect
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio
from yarl import URL

from gateway.clock import FakeClock
from gateway.config.load import parse_config
from gateway.crypto import hash_password
from gateway.web.app import build_app
from gateway.web.keys import DURABLE
from gateway.web.signin import SIGNIN
from tests.conftest import Served, serve
from tests.redis_server import redis_of_our_own
from tests.signin_kit import (
    Browser,
    Browsers,
    SignInGateway,
    Start,
    enrolled,
    field,
    write_keys,
)

FORWARD_AUTH = "forward_auth: {}\ntrusted_proxies: [127.0.0.1/32]\n"
PAGE = {"Accept": "text/html,*/*", "Sec-Fetch-Mode": "navigate"}
SCRIPT = {"Accept": "*/*", "Sec-Fetch-Mode": "cors"}
HOUR = 3600.0


def cookies_of(b: Browser, *names: str) -> str:
    return "; ".join(f"{c.key}={c.value}" for c in b.jar if not names or c.key in names)


async def ask(
    gw: SignInGateway,
    method: str,
    target: str,
    *,
    cookie: str = "",
    nginx: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, aiohttp.ClientResponse, str]:
    names = ("X-Original-Method", "X-Original-URI") if nginx else CADDY_NAMES
    sent = {names[0]: method, names[1]: target, "X-Forwarded-Host": "crm.test", **(headers or {})}
    if cookie:
        sent["Cookie"] = cookie
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(gw.url + "/_gateway/auth", headers=sent, allow_redirects=False) as r,
    ):
        return r.status, r, await r.text()


CADDY_NAMES = ("X-Forwarded-Method", "X-Forwarded-Uri")


@pytest.fixture
async def gw(crm: Served, start: Start) -> SignInGateway:
    return await start(crm.url, extra=FORWARD_AUTH)


async def test_the_crms_cookie_passes_only_with_the_complete_session_it_was_released_to(
    gw: SignInGateway, browsers: Browsers
) -> None:
    alice = browsers(gw)
    await enrolled(alice)  # through the gateway: the CRM's login held until the factor
    status, r, _ = await ask(gw, "GET", "/contacts", cookie=cookies_of(alice))
    assert (status, r.headers["Remote-User"]) == (200, "alice")
    # Nobody signed in: the CRM asks for its own login (upstream mode), so it passes.
    status, r, _ = await ask(gw, "GET", "/contacts", headers=PAGE)
    assert (status, "Remote-User" in r.headers) == (200, False)
    # The CRM's cookie alone (copied, or left from a session that ended): never passes.
    crm_only = cookies_of(alice, "crm_session")
    status, r, _ = await ask(gw, "GET", "/contacts?x=1", cookie=crm_only, headers=PAGE)
    assert (status, r.headers["Location"]) == (302, "/_gateway/auth/clear?next=%2Fcontacts%3Fx%3D1")
    status, r, _ = await ask(gw, "GET", "/contacts", cookie=crm_only, headers=PAGE, nginx=True)
    assert (status, r.headers["Location"]) == (401, "/_gateway/auth/clear?next=%2Fcontacts")
    status, _, body = await ask(gw, "GET", "/api/contacts", cookie=crm_only, headers=SCRIPT)
    assert (status, json.loads(body)["error"]) == (401, "crm_session_unverified")
    # Hidden in another spelling a CRM may read (PHP decodes names): refused the same.
    hidden = crm_only.replace("crm_session", "crm%5Fsession")
    assert (await ask(gw, "GET", "/contacts", cookie=hidden))[0] == 401
    # In another case, which a CRM reading names so (ASP.NET Core) takes for its own.
    upper = crm_only.replace("crm_session", "CRM_Session")
    assert (await ask(gw, "GET", "/contacts", cookie=upper))[0] == 401
    # Inside someone else's complete session: alice's CRM cookie is no use to bob.
    bob = browsers(gw)
    await enrolled(bob, "bob", "bob-demo")
    swapped = f"{cookies_of(bob, 'crm_gateway')}; {crm_only}"
    assert (await ask(gw, "GET", "/contacts", cookie=swapped))[0] == 401
    # The page a browser is sent to removes the CRM's cookies, and only when refused.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        # As the browser spells the name too: one not told to forget would be refused again.
        spelled = ["CRM_Session=; Max-Age=0; Path=/", "crm_session=; Max-Age=0; Path=/"]
        removed = ["crm_session=; Max-Age=0; Path=/"]
        for cookie, cleared in ((crm_only, removed), (upper, spelled), (cookies_of(alice), [])):
            url = gw.url + "/_gateway/auth/clear?next=%2Fcontacts"
            async with http.get(url, headers={"Cookie": cookie}, allow_redirects=False) as r:
                assert (r.status, r.headers["Location"]) == (303, "/contacts")
                assert r.headers.getall("Set-Cookie", []) == cleared, cookie


async def test_the_crms_login_past_the_gateway_is_refused_and_its_logout_ends_our_session(
    gw: SignInGateway, browsers: Browsers, capsys: pytest.CaptureFixture[str]
) -> None:
    # A spelling of the login the front proxy's route did not match: never to the CRM, whose
    # cookies would then reach the browser before the second factor.
    for target in ("/login/", "/LOGIN", "//login"):
        status, _, body = await ask(gw, "POST", target)
        assert (status, json.loads(body)["error"]) == (403, "login_not_proxied"), target
    assert (await ask(gw, "GET", "/login/"))[0] == 200  # the form itself is the CRM's page
    alice = browsers(gw)
    await enrolled(alice)
    full = cookies_of(alice)
    capsys.readouterr()
    assert (await ask(gw, "POST", "/logout", cookie=full))[0] == 200  # the CRM logs out too
    assert '"event": "signin.logout"' in capsys.readouterr().out
    # The same cookies afterwards: the session is over, the CRM's cookie with it.
    assert (await ask(gw, "GET", "/contacts", cookie=full))[0] == 401


async def test_a_verification_due_sends_a_page_to_the_challenge_and_a_script_gets_json(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    policy = (
        "defaults: {interval: always, factors: [totp, recovery], enforcement: required,"
        " reverify: 8h}\npaths:\n  - {path: /exports/**, allow: [authenticated], fresh: 15m}\n"
        '  - {path: "/**", allow: [anyone]}\n'
    )
    sessions = "sessions: {idle_timeout: 12h, absolute_timeout: 24h}\n"
    gw = await start(crm.url, policy=policy, extra=FORWARD_AUTH + sessions)
    alice = browsers(gw)
    secret, _ = await enrolled(alice)
    assert (await ask(gw, "GET", "/contacts", cookie=cookies_of(alice)))[0] == 200
    # A path asking for a factor within 15 minutes, 20 minutes on.
    gw.clock.advance(20 * 60)
    status, _, body = await ask(gw, "GET", "/exports/all", cookie=cookies_of(alice), headers=SCRIPT)
    assert (status, json.loads(body)["reason"]) == (401, "fresh")
    # Nine hours on: every request asks again.
    gw.clock.advance(9 * HOUR)
    status, _, body = await ask(
        gw, "GET", "/api/contacts", cookie=cookies_of(alice), headers=SCRIPT
    )
    assert status == 401
    assert json.loads(body) == {
        "error": "verification_required",
        "reason": "reverify",
        "verify_url": "/_gateway/challenge",
        "factors": [],
    }
    status, r, _ = await ask(gw, "GET", "/contacts?page=2", cookie=cookies_of(alice), headers=PAGE)
    assert (status, r.headers["Location"]) == (302, "/_gateway/challenge")
    status, r, _ = await ask(
        gw, "GET", "/contacts", cookie=cookies_of(alice), headers=PAGE, nginx=True
    )
    assert (status, r.headers["Location"]) == (401, "/_gateway/challenge")
    # A form sent then: its body never reached the endpoint; back to the page it was on.
    referer = {**PAGE, "Referer": "http://crm.test/contacts/new"}
    status, r, _ = await ask(gw, "POST", "/contacts", cookie=cookies_of(alice), headers=referer)
    assert (status, r.headers["Location"]) == (302, "/_gateway/challenge")
    status, _, answered = await alice.answer(alice.code(secret))
    assert (status, answered.headers["Location"]) == (303, "/contacts/new")
    assert (await ask(gw, "GET", "/contacts", cookie=cookies_of(alice)))[0] == 200
    # Due again: signing out at the CRM needs no code, and ends the gateway session too.
    gw.clock.advance(9 * HOUR)
    assert (await ask(gw, "POST", "/logout", cookie=cookies_of(alice), headers=PAGE))[0] == 200
    assert (await ask(gw, "GET", "/contacts", cookie=cookies_of(alice)))[0] == 401


USERS = "erin: '{erin}'\n"
GATEWAY_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
groups:
  sales: {}
  north: {}
users:
  erin: {enforcement: optional, groups: [sales, north]}
paths:
  - {path: /public/**, allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""


async def test_gateway_login_sends_browsers_to_our_page_and_names_the_user_to_the_crm(
    upstream: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(USERS.format(erin=hash_password("erin-password")))
    login = f"login:\n  mode: gateway\n  users_file: {users}\n"
    names = "forward_auth: {user_header: X-Auth-User, groups_header: X-Auth-Groups}\n"
    gw = await start(
        upstream.url,
        login=login,
        policy=GATEWAY_POLICY,
        extra=names + "trusted_proxies: [127.0.0.1/32]\n",
    )
    status, r, _ = await ask(gw, "GET", "/reports/q3?x=1", headers=PAGE)
    assert (status, r.headers["Location"]) == (302, "/_gateway/login?next=%2Freports%2Fq3%3Fx%3D1")
    status, r, _ = await ask(gw, "GET", "/reports/q3", headers=PAGE, nginx=True)
    assert (status, r.headers["Location"]) == (401, "/_gateway/login?next=%2Freports%2Fq3")
    status, _, body = await ask(gw, "GET", "/reports/q3", headers=SCRIPT)
    assert (status, json.loads(body)["error"]) == (401, "signin_required")
    assert (await ask(gw, "GET", "/public/logo.png"))[0] == 200
    erin = browsers(gw)
    _, html, _ = await erin.get("/_gateway/login?next=/reports/q3")
    form = {"csrf": field(html, "csrf"), "next": "/reports/q3"}
    status, _, r = await erin.post(
        "/_gateway/login", {**form, "username": "erin", "password": "erin-password"}
    )
    assert (status, r.headers["Location"]) == (303, "/reports/q3")
    status, r, _ = await ask(gw, "GET", "/reports/q3", cookie=cookies_of(erin))
    assert (status, r.headers["X-Auth-User"], r.headers["X-Auth-Groups"]) == (
        200,
        "erin",
        "sales,north",
    )
    # The names the front proxy copies may not come from the client, in any spelling, nor
    # the identity header of gateway login (login.identity_header, Remote-User here).
    for spelling in ("X-Auth-User", "x_auth_groups", "Remote-User"):
        headers = {spelling: "admin"}
        status, _, body = await ask(
            gw, "GET", "/reports/q3", cookie=cookies_of(erin), headers=headers
        )
        assert (status, json.loads(body)["error"]) == (400, "identity_header_sent"), spelling


# -- answered from caches -----------------------------------------------------------------------


@pytest.fixture
def counted_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own: every command it serves is this test's."""
    with redis_of_our_own() as url:
        yield url


async def commands_served(client: redis.asyncio.Redis) -> int:
    """Every command the server has run but INFO itself (which this count uses, on a
    connection opened before the count starts)."""
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


# What each worker asks the durable store beside the requests, whatever the traffic: the
# token table's and the revocations' versions and the admin requests (every 2 s), and the
# audit trail's batches.
BESIDE_REQUESTS = {"tokens_version", "revocations_version", "pending_requests", "add_audit"}


def count_durable_calls(gw: SignInGateway, calls: Counter[str]) -> None:
    """Every coroutine method of the worker's real durable store (SQLite here) counted by name
    in `calls` as it is awaited, then run as it is."""
    store = gw.served.app[DURABLE]
    for name, method in inspect.getmembers(store, inspect.iscoroutinefunction):
        if not name.startswith("_"):
            setattr(store, name, _counted(name, method, calls))


def _counted(
    name: str, method: Callable[..., Awaitable[object]], calls: Counter[str]
) -> Callable[..., Awaitable[object]]:
    @functools.wraps(method)
    async def counted(*args: object, **kwargs: object) -> object:
        calls[name] += 1
        return await method(*args, **kwargs)

    return counted


async def two_workers(
    crm: Served, tmp_path: Path, redis_url: str, session_cache: str
) -> tuple[SignInGateway, SignInGateway]:
    """Two gateway apps on one Redis and one SQLite file, as two workers of one host are."""
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "policy.yaml").write_text(
        "defaults: {interval: always, factors: [totp, recovery], enforcement: required}\n"
        'paths:\n  - {path: "/**", allow: [anyone]}\n'
    )
    text = (
        "listen: 127.0.0.1:0\n"
        f"upstream: {{url: '{crm.url}'}}\n"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
        f"  shared: {{type: redis, url: '{redis_url}'}}\n"
        "logging: {access_log: false}\n"
        "login:\n  path: /login\n  success: {status: [302], cookie: crm_session}\n"
        "  logout: {path: /logout, method: POST}\n"
        f"{write_keys(tmp_path, reuse=True)}policies: {folder}\n"
        f"forward_auth: {{session_cache: {session_cache}}}\ntrusted_proxies: [127.0.0.1/32]\n"
    )
    clock = FakeClock(1_800_000_000.0)
    started = []
    for _ in range(2):
        served = await serve(build_app(parse_config(text), clock=clock))
        started.append(SignInGateway(served, clock))
    return started[0], started[1]


@pytest.mark.parametrize(("session_cache", "reads"), [("2s", False), ("0s", True)])
async def test_a_signed_in_request_is_answered_without_a_round_trip_to_the_store(
    crm: Served,
    tmp_path: Path,
    counted_redis: str,
    browsers: Browsers,
    session_cache: str,
    reads: bool,
) -> None:
    one, other = await two_workers(crm, tmp_path, counted_redis, session_cache)
    try:
        alice = browsers(one)
        await enrolled(alice)
        cookie = cookies_of(alice)
        assert (await ask(one, "GET", "/contacts", cookie=cookie))[0] == 200
        durable: Counter[str] = Counter()
        for gw in (one, other):
            count_durable_calls(gw, durable)
        counter = redis.asyncio.Redis.from_url(counted_redis)
        try:
            before = await commands_served(counter)
            for _ in range(20):
                status, r, _ = await ask(one, "GET", "/contacts", cookie=cookie)
                assert (status, r.headers["Remote-User"]) == (200, "alice")
            served = await commands_served(counter) - before
        finally:
            await counter.aclose()
        # The session's record read once per request (a GET) without the cache; not at all
        # with it (the signature, the record and the decision all remembered by the worker).
        assert served >= 20 if reads else served == 0, served
        # The durable store is not asked either way: policy, tokens and revocations are held
        # by the worker (only its polls beside the requests may have run meanwhile).
        assert set(durable) <= BESIDE_REQUESTS, durable
        # The count sees a request that does ask it (the account page lists alice's
        # authenticators): what is not counted above did not happen.
        durable.clear()
        status, html, _ = await alice.get("/_gateway/account")
        assert status == 200
        assert durable["authenticators"] >= 1, durable
        # A logout on this worker counts here at once, cache or not...
        await alice.post("/_gateway/logout", {"csrf": field(html, "csrf")})
        assert (await ask(one, "GET", "/contacts", cookie=cookie))[0] == 401
    finally:
        for gw in (one, other):
            await gw.served.runner.cleanup()


async def test_another_workers_logout_counts_within_the_session_cache(
    crm: Served, tmp_path: Path, counted_redis: str, browsers: Browsers
) -> None:
    one, other = await two_workers(crm, tmp_path, counted_redis, "2s")
    try:
        alice = browsers(one)
        await enrolled(alice)
        cookie = cookies_of(alice)
        assert (await ask(one, "GET", "/contacts", cookie=cookie))[0] == 200
        # Signed out through the other worker: the one that read the session a moment ago
        # answers from it until its `session_cache` has passed, then asks the store again.
        on_other = browsers(other)  # the same browser (its cookies), at the other worker
        on_other.jar.update_cookies({c.key: c.value for c in alice.jar}, URL(other.url))
        status, html, _ = await on_other.get("/_gateway/account")
        assert status == 200
        await on_other.post("/_gateway/logout", {"csrf": field(html, "csrf")})
        assert (await ask(one, "GET", "/contacts", cookie=cookie))[0] == 200
        one.clock.advance(2.0)
        assert (await ask(one, "GET", "/contacts", cookie=cookie))[0] == 401
        assert one.served.app[SIGNIN] is not other.served.app[SIGNIN]
    finally:
        for gw in (one, other):
            await gw.served.runner.cleanup()
