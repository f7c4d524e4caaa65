"""Forward auth attacked from outside (issue 18): real nginx and Caddy started from deploy/
forward-auth/ in front of a real gateway and the echo CRM, which notes every raw target it
received, so "the CRM never got it" is checked, not assumed. A rule judged on one thing while
the front proxy hands the CRM another; a header believed from the wrong peer; an identity the
CRM is handed that the gateway never gave; a refusal a script cannot read; a revoked session
on two workers; an API token beside a session cookie; an original URI too long, or not UTF-8;
a half-finished sign-in beside another user's remembered device."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.admin.accounts import revoke_sessions
from gateway.crypto import hash_password
from gateway.policy.tokens import digest
from gateway.web.guard import GUARD
from gateway.web.keys import DURABLE
from gateway.web.revocations import LOOK_EVERY
from gateway.web.urls import safe_return_path
from tests.conftest import AppStarter, Served, send_raw, serve
from tests.flows.test_forward_auth_proxies import (
    FORWARD_AUTH,
    POLICY,
    FrontStarter,
    front,
    raw_get,
)
from tests.flows.test_forward_auth_signin import two_workers
from tests.front_proxies import FrontProxy
from tests.redis_server import RedisServer
from tests.signin_kit import (
    ARRIVED,
    Browsers,
    SignInGateway,
    Start,
    enrolled,
    field,
    noted_demo_crm,
)
from tests.upstreams import build_upstream_app

__all__ = ["front"]  # the fixture, by name

RECEIVED = web.AppKey("received", list[str])


@web.middleware
async def note_targets(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request.app[RECEIVED].append(request.raw_path)
    return await handler(request)


@pytest.fixture
async def echo(start_app: AppStarter) -> Served:
    """The echo CRM (it answers with what it received), noting each raw target in RECEIVED."""
    app = build_upstream_app()
    app[RECEIVED] = []
    app.middlewares.append(note_targets)
    return await start_app(app)


@pytest.fixture
async def client_on() -> AsyncIterator[Callable[[str], aiohttp.ClientSession]]:
    """Clients from a loopback address of the test's choosing (127.0.0.1 is the office)."""
    made: list[aiohttp.ClientSession] = []

    def make(address: str) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        made.append(aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()))
        return made[-1]

    yield make
    for session in made:
        await session.close()


# Out of /admin by a dot segment: the endpoint resolved it and judged /public/x, while both
# proxies hand the CRM the target as the client wrote it. A CRM that routes on the raw path
# (Express, a PHP front controller reading REQUEST_URI), or resolves `//..` as RFC 3986 and
# WHATWG do (the `..` takes the empty segment), serves /admin.
CLIMBS_OUT = [
    "/admin/../public/x",
    "/admin/%2e%2e/public/x",
    "/admin/%2E%2E/public/x",
    "/admin/.%2e/public/x",
    "/admin//../public/x",
    "/admin/./../public/x",
    "/admin/x/../../public/x",
]


async def test_a_dot_segment_never_reaches_the_crm_as_the_client_wrote_it(
    echo: Served, start: Start, front: FrontStarter
) -> None:
    gw = await start(echo.url, policy=POLICY, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, echo.port)
    for target in CLIMBS_OUT:
        status, body = await raw_get(proxy, target)
        # nginx's auth_request turns every refusal but a 401 into a 403; Caddy passes it on.
        assert status == (403 if proxy.name == "nginx" else 400), (target, status, body[:300])
        assert json.loads(body)["error"] == "path_ambiguous", target
    assert not [t for t in echo.app[RECEIVED] if "admin" in t.lower()], echo.app[RECEIVED]
    # Browsers resolve dot segments before they send anything: a page's own paths still pass.
    assert (await raw_get(proxy, "/public/x"))[0] == 200
    assert echo.app[RECEIVED] == ["/public/x"]


GATEWAY_LOGIN_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
users:
  erin: {enforcement: optional}
paths:
  - {path: /public/**, allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""


async def signed_in_cookie(gw: SignInGateway, browsers: Browsers, user: str, password: str) -> str:
    """A complete session by the gateway's own login page (no factor asked): its cookie."""
    b = browsers(gw)
    status, html, _ = await b.get("/_gateway/login?next=/")
    assert status == 200
    form = {"csrf": field(html, "csrf"), "next": "/", "username": user, "password": password}
    status, _, _ = await b.post("/_gateway/login", form)
    assert status == 303, status
    return "; ".join(f"{c.key}={c.value}" for c in b.jar)


def identity_seen(body: bytes) -> dict[str, str]:
    headers = json.loads(body)["headers"]
    return {k.lower(): v for k, v in headers if k.lower() in ("remote-user", "remote-groups")}


async def test_the_crm_is_handed_no_identity_the_gateway_did_not_give(
    echo: Served, start: Start, front: FrontStarter, browsers: Browsers, tmp_path: Path
) -> None:
    """Debian's Caddy (2.6) sets each copy_headers header to the placeholder of the endpoint's
    answer, and leaves the placeholder's own text when the answer has no such header: the CRM
    got `Remote-User: {http.reverse_proxy.header.Remote-User}` for anybody on an open path, and
    that as the groups of a signed-in user in none (a CRM creating remote users, as Django's
    RemoteUserBackend does by default, signs every passer-by in as one)."""
    users = tmp_path / "users.yaml"
    users.write_text(f"erin: '{hash_password('erin-password')}'\n")
    login = f"login:\n  mode: gateway\n  users_file: {users}\n"
    gw = await start(echo.url, login=login, policy=GATEWAY_LOGIN_POLICY, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, echo.port)
    status, body = await raw_get(proxy, "/public/x")
    assert (status, identity_seen(body)) == (200, {})
    cookie = await signed_in_cookie(gw, browsers, "erin", "erin-password")
    status, body = await raw_get(proxy, "/reports/q3", f"Cookie: {cookie}\r\n")
    assert (status, identity_seen(body)) == (200, {"remote-user": "erin"})


async def test_an_api_token_is_refused_in_json_even_when_it_accepts_a_page(
    echo: Served,
    start: Start,
    front: FrontStarter,
    client_on: Callable[[str], aiohttp.ClientSession],
) -> None:
    """nginx drops the endpoint's body and asks /_gateway/auth/refused for it, which answered
    by the Accept header alone: a token from a refused address, or an unknown one, sent with
    `Accept: text/html`, got the HTML page through nginx."""
    gw = await start(echo.url, policy=POLICY, extra=FORWARD_AUTH)
    await gw.served.app[DURABLE].add_token("tok_bob", "bob", digest("demo-token-bob"), "", 0.0)
    await gw.served.app[GUARD].refresh_tokens()
    proxy = front(gw.served.port, echo.port)
    html = {"Accept": "text/html,*/*"}
    cases = [
        ("127.0.0.6", "Bearer demo-token-bob", 403, "ip_not_allowed"),
        ("127.0.0.1", "Bearer not-a-token-of-anyone", 401, "token_unknown"),
        ("127.0.0.1", "Basic ZGVtbzp0b2tlbg==", 400, "credential_ambiguous"),
    ]
    for address, credential, status, reason in cases:
        headers = {**html, "Authorization": credential}
        async with client_on(address).get(f"{proxy.url}/api/x", headers=headers) as r:
            if proxy.name == "nginx" and status == 400:
                status = 403  # auth_request: every refusal but a 401 is a 403
            assert r.status == status, (credential, r.status)
            assert r.headers["Content-Type"].startswith("application/json"), credential
            assert (await r.json())["error"] == reason
    assert echo.app[RECEIVED] == []


OFF_SITE = [
    "//evil.example/x",
    "///evil.example/x",
    "/%2f%2fevil.example/x",
    "/%5cevil.example/x",
    "/%09/evil.example/x",
    "/\\evil.example/x",
]


async def test_the_sign_in_redirect_stays_on_the_site_whatever_the_uri_and_host(
    echo: Served, start: Start, front: FrontStarter, tmp_path: Path
) -> None:
    """Held: the 401/302 to our login is relative, its `next` only ever a same-site path, and
    a forged Host or X-Forwarded-Host changes nothing."""
    users = tmp_path / "users.yaml"
    users.write_text(f"erin: '{hash_password('erin-password')}'\n")
    login = f"login:\n  mode: gateway\n  users_file: {users}\n"
    gw = await start(echo.url, login=login, policy=GATEWAY_LOGIN_POLICY, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, echo.port)
    page = "Accept: text/html\r\nSec-Fetch-Mode: navigate\r\nX-Forwarded-Host: evil.example\r\n"
    for target in OFF_SITE:
        host = proxy.url.removeprefix("http://")
        request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{page}Connection: close\r\n\r\n"
        answer = (await send_raw(proxy.port, request.encode())).decode("latin-1")
        status = int(answer.split(" ", 2)[1])
        location = next(
            (
                line.split(":", 1)[1].strip()
                for line in answer.split("\r\n")
                if line.lower().startswith("location:")
            ),
            "",
        )
        if status in (301, 302, 303, 307, 308):
            assert location.startswith("/_gateway/login?next="), (target, location)
            back = unquote(location.partition("next=")[2])
            assert safe_return_path(back) == back and "evil" not in back, (target, location)
        else:
            assert 400 <= status < 500 and "evil" not in location, (target, answer[:300])
    assert echo.app[RECEIVED] == []


async def test_the_endpoint_answers_get_alone_and_judges_the_original_method_as_sent(
    echo: Served, start: Start
) -> None:
    """Held: the endpoint itself on POST, PUT, OPTIONS, DELETE is 405 (nginx and Caddy ask with
    GET); an original method not in capitals is unreadable (400, as the proxy refuses it);
    TRACE, CONNECT or PROPFIND on /admin is judged as sent and meets no rule that lets it by."""
    gw = await start(echo.url, policy=POLICY, extra=FORWARD_AUTH)
    names = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x"}
    async with aiohttp.ClientSession() as http:
        for method in ("POST", "PUT", "OPTIONS", "DELETE"):
            async with http.request(method, gw.url + "/_gateway/auth", headers=names) as r:
                assert r.status == 405, method
        for method in ("get", "GeT", "TRACE", "CONNECT", "PROPFIND"):
            asked = {"X-Forwarded-Method": method, "X-Forwarded-Uri": "/admin/x"}
            async with http.get(gw.url + "/_gateway/auth", headers=asked) as r:
                refused = (400,) if not method.isupper() else (401, 403)
                assert r.status in refused, (method, r.status)


# -- a revoked session --------------------------------------------------------------------------


async def ask_endpoint(gw: SignInGateway, cookie: str) -> tuple[int, str]:
    """The endpoint asked as Caddy asks it about a script's GET /contacts: status, reason."""
    headers = {**CADDY_ASKS, "Cookie": cookie, "Accept": "application/json"}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(gw.url + "/_gateway/auth", headers=headers, allow_redirects=False) as r,
    ):
        return r.status, r.headers.get("X-Gateway-Reason", r.headers.get("Remote-User", ""))


CADDY_ASKS = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/contacts"}


async def test_a_revoked_session_is_refused_by_every_worker_however_long_the_session_cache(
    crm: Served, tmp_path: Path, browsers: Browsers, own_redis: RedisServer
) -> None:
    """Held: `sessions revoke` (gateway.admin.accounts.revoke_sessions, what the CLI calls)
    reaches every worker through the durable store within its look (LOOK_EVERY, 2 s), and the
    revocation is checked on a session record the worker reuses: with `session_cache` at its
    longest (1m) and the fake clock standing still, so no cached record ever expires, both
    workers refuse the session they had just let by."""
    one, other = await two_workers(crm, tmp_path, own_redis.url, "1m")
    try:
        alice = browsers(one)
        await enrolled(alice)
        cookie = "; ".join(f"{c.key}={c.value}" for c in alice.jar)
        for gw in (one, other):
            assert await ask_endpoint(gw, cookie) == (200, "alice")
        one.clock.advance(1.0)  # a revocation ends the sessions made before it
        await revoke_sessions(one.served.app[DURABLE], "alice", one.clock.now())
        refused: dict[int, int] = {}
        for _ in range(int(10 * LOOK_EVERY / 0.1)):  # bounded: every worker looks every 2 s
            for i, gw in enumerate((one, other)):
                if i not in refused and (status := (await ask_endpoint(gw, cookie))[0]) != 200:
                    refused[i] = status
            if len(refused) == 2:
                break
            await asyncio.sleep(0.1)
        assert refused == {0: 401, 1: 401}, refused
        # Refused as a CRM cookie without a complete session (upstream login: the CRM's
        # cookie the revoked session held may not pass alone), and it stays refused.
        for gw in (one, other):
            assert await ask_endpoint(gw, cookie) == (401, "crm_session_unverified")
    finally:
        for gw in (one, other):
            await gw.served.runner.cleanup()


# -- an API token and a session cookie on one request ------------------------------------------

TOKEN_AND_SESSION_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: optional}
roles:
  admin: {}
  integration: {}
users:
  ann: {roles: [admin]}
  sync: {roles: [integration]}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: /api/**, allow: [token, role:admin]}
  - {path: /public/**, allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""


async def test_an_api_token_beside_a_session_cookie_is_judged_as_the_token_alone(
    echo: Served, start: Start, front: FrontStarter, browsers: Browsers, tmp_path: Path
) -> None:
    """Held: as in the standalone proxy (gateway.web.pipeline.identify) and as policies.md says
    ("a request that carries a credential ... is an API request"), a credential decides who
    the request is, never the session beside it: the administrator's cookie lends the
    integration's token nothing, an unknown token is not saved by it, and the CRM is handed
    no Remote-User for a token's request. The same answers through nginx, Caddy and the
    gateway's own proxy."""
    users = tmp_path / "users.yaml"
    users.write_text(f"ann: '{hash_password('ann-password')}'\n")
    login = f"login:\n  mode: gateway\n  users_file: {users}\n"
    gw = await start(echo.url, login=login, policy=TOKEN_AND_SESSION_POLICY, extra=FORWARD_AUTH)
    await gw.served.app[DURABLE].add_token(
        "tok_sync", "sync", digest("sync-token-0123456789"), "", 0
    )
    await gw.served.app[GUARD].refresh_tokens()
    proxy = front(gw.served.port, echo.port)
    ann = await signed_in_cookie(gw, browsers, "ann", "ann-password")
    cases = [
        # (credential, target, status, reason or the identity the CRM is handed)
        ("", "/admin/x", 200, {"remote-user": "ann"}),  # the session alone: ann
        ("Bearer sync-token-0123456789", "/admin/x", 403, "path_not_allowed"),
        ("Bearer sync-token-0123456789", "/api/x", 200, {}),
        ("Bearer not-a-token-of-anyone", "/admin/x", 401, "token_unknown"),
        ("Bearer not-a-token-of-anyone", "/public/x", 401, "token_unknown"),
        ("Basic YW5uOmFubi1wYXNzd29yZA==", "/admin/x", 400, "credential_ambiguous"),
    ]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for base in (proxy.url, gw.url):
            for credential, target, status, seen in cases:
                headers = {"Cookie": ann, "Accept": "text/html,*/*"}
                if credential:
                    headers["Authorization"] = credential
                async with http.get(base + target, headers=headers, allow_redirects=False) as r:
                    body = await r.read()
                    if base == proxy.url and proxy.name == "nginx" and status == 400:
                        status = 403  # auth_request: every refusal but a 401 is a 403
                    where = (base, credential, target)
                    assert r.status == status, (*where, r.status, body[:200])
                    if status == 200:
                        assert identity_seen(body) == seen, where
                    else:
                        assert json.loads(body)["error"] == seen, where
    assert [t for t in echo.app[RECEIVED] if t.startswith("/admin")] == ["/admin/x", "/admin/x"]


# -- an original URI too long ------------------------------------------------------------------


async def test_an_original_uri_over_the_limits_is_refused_before_the_crm(
    echo: Served, start: Start, front: FrontStarter
) -> None:
    """Held: nginx refuses a request line over its 8 KB buffer itself (414); Caddy takes up to
    1 MB, and hands the gateway the path in X-Forwarded-Uri (over the gateway's 16 KB header
    field: refused) and the query on the endpoint's own URL (over its 8 KB request line:
    refused; the gateway closes the connection after such an answer, and Caddy, still
    writing the head, may hear a reset and answer 502 itself). Whatever answers, nothing
    reaches the CRM; a long URI under the limits is judged like any other."""
    gw = await start(echo.url, policy=POLICY, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, echo.port)
    for target in (
        "/admin/" + "a" * 20_000,
        "/public/" + "a" * 20_000,
        "/public/x?q=" + "a" * 9000,
    ):
        status, body = await raw_get(proxy, target)
        expected = {414} if proxy.name == "nginx" else {400, 414, 431, 502}
        assert status in expected, (target[:20], status, body[:200])
    assert echo.app[RECEIVED] == []
    assert (await raw_get(proxy, "/admin/" + "a" * 7000))[0] in (401, 403)
    assert (await raw_get(proxy, "/public/" + "a" * 7000))[0] == 200
    assert [len(t) for t in echo.app[RECEIVED]] == [7008]


# -- bytes that are not UTF-8, and overlong UTF-8 ----------------------------------------------

NOT_UTF8 = [
    b"/admin\xff/x",  # a byte no UTF-8 has
    b"/adm\xc3in/x",  # a sequence cut short
    b"/\xc0\xafadmin/x",  # `/` in two bytes (overlong)
    b"/public/\xc0\xae\xc0\xae/admin/x",  # `..` overlong
    b"/\xc1\xa1dmin/x",  # `a` overlong
    b"/\xed\xa0\x80/admin",  # a surrogate
    b"/public/x?q=\xff",
    b"/public/%c0%ae%c0%ae/admin/x",  # the same, escaped
    b"/%c0%afadmin/x",
    b"/%e0%80%afadmin/x",
    b"/%c1%a1dmin/x",
    b"/%ff/admin/x",
]


async def raw_bytes_get(proxy: FrontProxy, target: bytes) -> tuple[int, dict[str, str], bytes]:
    host = proxy.url.removeprefix("http://").encode()
    head = b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    answer = await send_raw(proxy.port, head)
    top, _, body = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), headers, body


async def test_a_uri_that_is_not_utf8_is_refused_as_a_client_error_through_both_proxies(
    echo: Served, start: Start, front: FrontStarter
) -> None:
    """nginx puts the client's raw bytes in X-Original-URI; the gateway refuses a header that
    is not UTF-8 (400 header_not_utf8) before the endpoint's code runs, and nginx's
    auth_request turns any answer but 2xx, 401 and 403 into its own 500: a malformed request
    was a server error, in nginx's error log as the gateway's fault. Now a 403 with the reason,
    as the endpoint answers nginx every refusal. Caddy escapes the bytes (judged: 400
    path_ambiguous) but copies a raw query onto the endpoint's URL (refused as unreadable).
    Nothing reaches the CRM."""
    gw = await start(echo.url, policy=POLICY, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, echo.port)
    for target in NOT_UTF8:
        status, _, body = await raw_bytes_get(proxy, target)
        if proxy.name == "nginx":
            assert status == 403, (target, status, body[:200])
            assert json.loads(body)["error"] in ("header_not_utf8", "path_ambiguous"), target
        else:
            assert status == 400, (target, status, body[:200])
    assert echo.app[RECEIVED] == []


# -- a half-finished sign-in and another user's remembered device -------------------------------

REMEMBERING_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required, remember_device: 30d}
paths:
  - {path: /login, allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""


async def test_a_half_finished_sign_in_with_another_users_remembered_device_stays_half(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """Held: alice has passed her password only; beside her session cookie, bob's valid
    remembered-device cookie (bound to bob). The endpoint reads no device cookie and a session
    short of its factor is nobody: refused, no Remote-User, through Caddy's and nginx's names.
    At the gateway's pages bob's device does not stand in for alice's factor either."""
    gw = await start(crm.url, policy=REMEMBERING_POLICY, extra=FORWARD_AUTH)
    bob = browsers(gw)
    secret, _ = await enrolled(bob, "bob", "bob-demo")
    gw.clock.advance(60)
    assert await bob.crm_login("bob", "bob-demo") == "/_gateway/challenge"
    _, _, r = await bob.answer(bob.code(secret), remember=True)
    assert r.headers["Location"] == "/contacts"
    device = bob.cookie("crm_gateway_device")
    assert device
    await enrolled(browsers(gw))  # alice has a factor on file
    gw.clock.advance(60)
    alice = browsers(gw)
    alice.jar.update_cookies({"crm_gateway_device": device}, URL(gw.url))
    # bob's device at alice's password: she is still asked for her factor.
    assert await alice.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    cookie = "; ".join(f"{c.key}={c.value}" for c in alice.jar)
    assert "crm_gateway_device=" in cookie and "crm_session" not in cookie
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for names in (
            ("X-Forwarded-Method", "X-Forwarded-Uri"),
            ("X-Original-Method", "X-Original-URI"),
        ):
            for accept in ("text/html", "application/json"):
                headers = {
                    names[0]: "GET",
                    names[1]: "/contacts",
                    "Cookie": cookie,
                    "Accept": accept,
                }
                async with http.get(gw.url + "/_gateway/auth", headers=headers) as r:
                    assert r.status == 403, (names, accept, r.status)
                    assert "Remote-User" not in r.headers
                    assert r.headers["X-Gateway-Reason"] == "path_not_allowed"
    status, html, _ = await alice.get("/_gateway/challenge")
    assert status == 200 and 'name="code"' in html
    assert await alice.crm_login("alice", "alice-demo") == "/_gateway/challenge"


UPSTREAM_TOKEN_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
roles: {integration: {}}
users:
  sync: {roles: [integration]}
paths:
  - {path: /api/**, allow: [token, authenticated]}
  - {path: "/**", allow: [anyone]}
"""


async def test_an_api_token_beside_the_crms_session_cookie_never_takes_the_session_along(
    start: Start, browsers: Browsers
) -> None:
    """Held (login.mode upstream): a token judged as the token leaves the complete session
    beside it out, so the CRM's session cookie in the same request is one without a session:
    the endpoint refuses it (401 crm_session_unverified; it cannot remove a cookie), where the
    standalone proxy removes the CRM's cookie and forwards the token's request alone. Either
    way the CRM never gets alice's session with sync's token."""
    crm = await serve(noted_demo_crm())
    try:
        gw = await start(crm.url, policy=UPSTREAM_TOKEN_POLICY, extra=FORWARD_AUTH)
        token = "sync-token-0123456789"
        await gw.served.app[DURABLE].add_token("tok_sync", "sync", digest(token), "", 0)
        await gw.served.app[GUARD].refresh_tokens()
        alice = browsers(gw)
        await enrolled(alice)
        cookie = "; ".join(f"{c.key}={c.value}" for c in alice.jar)
        both = {"Cookie": cookie, "Authorization": f"Bearer {token}", "Accept": "application/json"}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            for names in (
                ("X-Forwarded-Method", "X-Forwarded-Uri"),
                ("X-Original-Method", "X-Original-URI"),
            ):
                asked = {**both, names[0]: "GET", names[1]: "/api/contacts"}
                async with http.get(gw.url + "/_gateway/auth", headers=asked) as r:
                    assert (r.status, r.headers["X-Gateway-Reason"]) == (
                        401,
                        "crm_session_unverified",
                    )
                    assert "Remote-User" not in r.headers
            crm.app[ARRIVED].clear()
            async with http.get(gw.url + "/api/contacts", headers=both, allow_redirects=False):
                pass
        assert [a.path for a in crm.app[ARRIVED]] == ["/api/contacts"]
        assert "crm_session" not in crm.app[ARRIVED][0].cookies
    finally:
        await crm.runner.cleanup()
