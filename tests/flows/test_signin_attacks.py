"""Attacks on sign-in from shared/reference/security-tests.md (OR, CR, SE, CS, OTP, RL, WS),
through the real gateway with real TOTP codes and a fake clock.

Most run against the demo CRM, built with a note of every request that reached it (so "the
CRM never saw it" is checked, not assumed). The open-redirect and JSON-login cases use a
small CRM whose login answers 302 to whatever `next` was posted; our own cookies are checked
against the echo upstream, which shows every header it received.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.crypto import new_recovery_code
from gateway.demo.crm import STATE
from gateway.signin.session import FULL
from gateway.web.cookies import cookie_binding
from tests.conftest import AppStarter, Served
from tests.signin_kit import (
    ARRIVED,
    CRM_COOKIE,
    DEMO_LOGIN,
    DEMO_POLICY,
    GATEWAY_COOKIE,
    Browser,
    SignInGateway,
    Start,
    at_the_challenge,
    challenge_csrf,
    enrolled,
    field,
    gateway_in_front,
    note_arrivals,
    noted_crm,
    post_chunked,
    posts_to_login,
    set_cookie_names,
    wrong_code,
)
from tests.upstreams import EVENTS

# -- upstreams that keep a note of what reached them -------------------------------------------


TO_NEXT_LOGIN = """\
login:
  mode: upstream
  path: /login
  username_field: username
  success: {status: [302], cookie: app_session}
"""


async def _login_to_next(request: web.Request) -> web.Response:
    """Any login succeeds: 302 to the posted `next`, exactly as posted (form or JSON)."""
    data = (
        await request.json() if request.content_type == "application/json" else await request.post()
    )
    response = web.Response(status=302)
    response.headers["Location"] = str(data.get("next", "/"))
    response.set_cookie("app_session", secrets.token_urlsafe(16), path="/", httponly=True)
    return response


async def _page(request: web.Request) -> web.Response:
    return web.Response(text="a CRM page")


def login_to_next_crm() -> web.Application:
    app = web.Application(middlewares=[note_arrivals])
    app[ARRIVED] = []
    app.router.add_post("/login", _login_to_next)
    app.router.add_route("*", "/{tail:.*}", _page)
    return app


# -- fixtures and steps ------------------------------------------------------------------------


# The demo CRM noting each request in app[ARRIVED], and a gateway in front of it.
crm = pytest.fixture(name="crm")(noted_crm)
gw = pytest.fixture(name="gw")(gateway_in_front)


def wrong_recovery_code(codes: list[str]) -> str:
    while (code := new_recovery_code()) in codes:
        pass
    return code


async def post_code(
    b: Browser, csrf: str, code: str, factor: str = "totp"
) -> tuple[int, str, aiohttp.ClientResponse]:
    """The challenge form as posted (also when a locked page no longer shows it)."""
    return await b.post("/_gateway/challenge", {"csrf": csrf, "factor": factor, "code": code})


# -- OR-1: the CRM's post-login Location is a redirect sink ------------------------------------


@pytest.mark.parametrize(
    ("location", "lands_on"),
    [
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("https:evil.example", "/"),
        ("http:evil.example", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/./\\evil.example", "/"),
        ("%0d%0aLocation: https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("{crm}/contacts", "/contacts"),  # the CRM's own absolute URL comes back relative
        ("{crm}//evil.example", "/"),
        ("/contacts?tab=2", "/contacts?tab=2"),  # an ordinary target is kept as it is
    ],
)
async def test_the_crms_post_login_redirect_never_sends_the_browser_off_site(
    location: str,
    lands_on: str,
    start_app: AppStarter,
    start: Start,
    browsers: Callable[..., Browser],
) -> None:
    crm = await start_app(login_to_next_crm())
    gw = await start(crm.url, login=TO_NEXT_LOGIN)
    b = browsers(gw)
    target = location.replace("{crm}", crm.url)
    status, _, r = await b.post("/login", {"username": "alice", "password": "any", "next": target})
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await b.enrol()
    r = await b.confirm_codes()
    assert r.headers["Location"] == lands_on
    assert b.cookie("app_session")  # the sign-in did complete


# -- CR-1/CR-4: the login POST is always read, and read one way only -------------------------


@pytest.mark.parametrize(
    "policy_extra",
    [
        "",  # unknown API tokens are refused
        "networks:\n  here: [127.0.0.0/8]\napi:\n  unknown_tokens: {networks: [here]}\n",
    ],
    ids=["unknown-tokens-denied", "unknown-tokens-allowed-here"],
)
async def test_a_login_post_with_a_bearer_header_is_still_held_for_the_factor(
    policy_extra: str, crm: Served, start: Start, browsers: Callable[..., Browser]
) -> None:
    gw = await start(crm.url, policy=DEMO_POLICY + policy_extra)
    b = browsers(gw)
    form = await b.crm_login_form("alice", "alice-demo")
    async with b.http.post(
        gw.url + "/login",
        data=form,
        headers={"Authorization": "Bearer x"},
        allow_redirects=False,
    ) as r:
        assert (r.status, r.headers["Location"]) == (303, "/_gateway/enrol")
        assert CRM_COOKIE not in set_cookie_names(r)
    assert crm.app[STATE].logins == 1  # the CRM did log alice in; its cookie waits
    assert b.cookie(CRM_COOKIE) is None


async def test_a_login_body_over_max_body_is_refused_before_the_crm(
    crm: Served, start: Start, browsers: Callable[..., Browser]
) -> None:
    gw = await start(crm.url, login=DEMO_LOGIN + "  max_body: 4096\n")
    b = browsers(gw)
    form = await b.crm_login_form("alice", "alice-demo")
    padded = {**form, "pad": "x" * 5000}
    status, _, _ = await b.post("/login", padded)  # with a Content-Length
    assert status == 413

    async with post_chunked(b, "/login", urlencode(padded).encode(), 1000) as r:
        assert r.status == 413  # no Content-Length: counted as it arrives
    assert posts_to_login(crm) == []
    assert crm.app[STATE].logins == 0
    # Under the limit, the same login goes through.
    status, _, r = await b.post("/login", {**form, "pad": "x" * 3000})
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")


async def test_a_chunked_login_body_is_read_and_held_like_any_other(
    crm: Served, gw: SignInGateway, browsers: Callable[..., Browser]
) -> None:
    b = browsers(gw)
    _, html, _ = await b.get("/login")
    token = field(html, "csrf_token")
    encoded = f"csrf_token={token}&username=alice&password=alice-demo&next=%2Fcontacts".encode()
    async with post_chunked(b, "/login", encoded, 7) as r:
        assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert (r.status, r.headers["Location"]) == (303, "/_gateway/enrol")
        assert CRM_COOKIE not in set_cookie_names(r)
    assert len(posts_to_login(crm)) == 1
    assert crm.app[STATE].logins == 1
    await b.enrol()
    r2 = await b.confirm_codes()
    assert r2.headers["Location"] == "/contacts"
    assert b.cookie(CRM_COOKIE) in crm.app[STATE].sessions


BOUNDARY = "----gateway-test-boundary"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"csrf_token={t}&username[]=alice&password=alice-demo", "form"),
        (b"csrf_token={t}&username[]=bob&username=alice&password=alice-demo", "form"),
        (b"csrf_token={t}&username=alice;username=bob&password=alice-demo", "form"),
        (b"csrf_token={t};username=alice;password=alice-demo", "form"),
        (b"csrf_token={t}&username=alice%FF&password=alice-demo", "form"),
        (b"csrf_token={t}&username=alice\xff&password=alice-demo", "form"),
        (
            (
                f"--{BOUNDARY}\r\n"
                'Content-Disposition: form-data; name="csrf_token"\r\n\r\n{t}\r\n'
                f"--{BOUNDARY}\r\n"
                'Content-Disposition: form-data; name="username"\r\n\r\nalice\r\n'
                f"--{BOUNDARY}\r\n"
                'Content-Disposition: form-data; name="password"\r\n\r\nalice-demo\r\n'
                f"--{BOUNDARY}--\r\n"
            ).encode(),
            f"multipart/form-data; boundary={BOUNDARY}",
        ),
    ],
    ids=[
        "username[]",
        "username[]-and-username",
        "semicolon-between-names",
        "semicolons-only",
        "percent-encoded-invalid-utf8",
        "raw-invalid-utf8",
        "multipart",
    ],
)
async def test_a_login_that_reads_two_ways_is_refused_before_the_crm(
    body: bytes,
    content_type: str,
    crm: Served,
    gw: SignInGateway,
    browsers: Callable[..., Browser],
) -> None:
    b = browsers(gw)
    _, html, _ = await b.get("/login")
    data = body.replace(b"{t}", field(html, "csrf_token").encode())
    kind = "application/x-www-form-urlencoded" if content_type == "form" else content_type
    async with b.http.post(
        gw.url + "/login", data=data, headers={"Content-Type": kind}, allow_redirects=False
    ) as r:
        assert r.status == 400
        assert set_cookie_names(r) == set()
    assert posts_to_login(crm) == []
    assert crm.app[STATE].logins == 0


async def test_a_json_login_naming_a_key_twice_is_refused_before_the_crm(
    start_app: AppStarter, start: Start, browsers: Callable[..., Browser]
) -> None:
    crm = await start_app(login_to_next_crm())
    gw = await start(crm.url, login=TO_NEXT_LOGIN)
    b = browsers(gw)
    headers = {"Content-Type": "application/json"}
    twice = b'{"username": "alice", "password": "x", "username": "bob"}'
    nested = b'{"username": "alice", "password": "x", "extra": {"a": 1, "a": 2}}'
    for body in (twice, nested):
        async with b.http.post(
            gw.url + "/login", data=body, headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 400, body
    assert posts_to_login(crm) == []
    # Read one way only, the same JSON login is the CRM's to judge, and held as usual.
    once = json.dumps({"username": "alice", "password": "x", "next": "/home"}).encode()
    async with b.http.post(
        gw.url + "/login", data=once, headers=headers, allow_redirects=False
    ) as r:
        assert (r.status, r.headers["Location"]) == (303, "/_gateway/enrol")
        assert set_cookie_names(r) == {GATEWAY_COOKIE}
    assert len(posts_to_login(crm)) == 1


# -- CS-2: challenge CSRF --------------------------------------------------------------------


async def test_a_cross_origin_challenge_post_is_refused_even_with_the_right_token(
    gw: SignInGateway, browsers: Callable[..., Browser]
) -> None:
    b, csrf, secret, _ = await at_the_challenge(gw, browsers)
    form = {"csrf": csrf, "factor": "totp", "code": b.code(secret)}
    for origin in ("https://evil.example", f"{gw.url}.evil.example"):
        async with b.http.post(
            gw.url + "/_gateway/challenge",
            data=form,
            headers={"Origin": origin, "Accept": "text/html"},
            allow_redirects=False,
        ) as r:
            assert r.status == 403, origin
            assert set_cookie_names(r) == set()
    assert b.cookie(CRM_COOKIE) is None
    # The same form from the gateway's own origin passes (the code was not used up).
    async with b.http.post(
        gw.url + "/_gateway/challenge",
        data=form,
        headers={"Origin": gw.url},
        allow_redirects=False,
    ) as r:
        assert (r.status, r.headers["Location"]) == (303, "/contacts")
    assert b.cookie(CRM_COOKIE)


# -- CR-6 / OTP-2: the held CRM cookies are released once --------------------------------------


async def test_the_same_right_code_posted_twice_at_once_releases_the_crm_cookies_once(
    gw: SignInGateway, browsers: Callable[..., Browser]
) -> None:
    b, csrf, secret, _ = await at_the_challenge(gw, browsers)
    code = b.code(secret)
    results = await asyncio.gather(post_code(b, csrf, code), post_code(b, csrf, code))
    released = [r for _, _, r in results if CRM_COOKIE in set_cookie_names(r)]
    assert len(released) == 1
    assert sorted(status for status, _, _ in results) == [303, 400]


async def test_two_factors_passing_at_once_release_the_crm_cookies_once(
    gw: SignInGateway, browsers: Callable[..., Browser]
) -> None:
    """A TOTP code and a recovery code, both right, race for the same held cookies."""
    b, csrf, secret, codes = await at_the_challenge(gw, browsers)
    results = await asyncio.gather(
        post_code(b, csrf, b.code(secret)), post_code(b, csrf, codes[0], "recovery")
    )
    released = [r for _, _, r in results if CRM_COOKIE in set_cookie_names(r)]
    assert len(released) == 1
    issued = [r for _, _, r in results if GATEWAY_COOKIE in set_cookie_names(r)]
    full = [
        c
        for r in issued
        for c in r.headers.getall("Set-Cookie")
        if c.startswith(f"{GATEWAY_COOKIE}=") and "Max-Age=0" not in c
    ]
    assert len(full) == 1  # one full session, not two


# -- OTP-10 / SE-4: stages and keys ------------------------------------------------------------


async def test_a_session_before_the_factor_opens_no_account_page(
    gw: SignInGateway, browsers: Callable[..., Browser]
) -> None:
    await enrolled(browsers(gw))
    gw.clock.advance(60)
    attacker = browsers(gw)  # knows the password only
    assert await attacker.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    pending = attacker.cookie(GATEWAY_COOKIE)
    assert pending
    csrf = await challenge_csrf(attacker)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
        headers = {"Cookie": f"{GATEWAY_COOKIE}={pending}", "Accept": "text/html"}
        async with raw.get(
            gw.url + "/_gateway/account", headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 400
            assert "expired" in await r.text()
        for action in ("regenerate", "forget-device", "remove"):
            async with raw.post(
                gw.url + f"/_gateway/account/{action}",
                data={"csrf": csrf, "id": "x"},
                headers=headers,
                allow_redirects=False,
            ) as r:
                assert r.status == 400, action
        async with raw.get(
            gw.url + "/_gateway/recovery-codes", headers=headers, allow_redirects=False
        ) as r:
            assert r.headers.get("Location") == "/_gateway/challenge"
    assert await gw.signin.recovery.left("alice") == 10
    assert len(await gw.signin.totp.authenticators("alice")) == 1


async def test_a_session_cookie_signed_with_another_gateways_key_is_refused(
    crm: Served, start: Start, browsers: Callable[..., Browser]
) -> None:
    ours = await start(crm.url)
    theirs = await start(crm.url)  # its own, different keys
    b = browsers(ours)
    await enrolled(b)
    session = await ours.signin.book.load(b.cookie(GATEWAY_COOKIE))
    assert session is not None
    assert session.stage == FULL
    # The same live session id, signed with the other gateway's key.
    forged = theirs.signin.book.cookie_value(session)
    genuine = ours.signin.book.cookie_value(session)
    assert forged != genuine
    crm_cookie = f"{CRM_COOKIE}={b.cookie(CRM_COOKIE)}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
        for value, account, contacts in ((forged, 400, 302), (genuine, 200, 200)):
            headers = {"Cookie": f"{GATEWAY_COOKIE}={value}; {crm_cookie}", "Accept": "text/html"}
            async with raw.get(
                ours.url + "/_gateway/account", headers=headers, allow_redirects=False
            ) as r:
                assert r.status == account
            async with raw.get(ours.url + "/contacts", headers=headers, allow_redirects=False) as r:
                assert r.status == contacts  # 302: the CRM saw no session cookie


# -- WS / SE-1: what reaches the CRM --------------------------------------------------------


async def test_a_websocket_without_a_gateway_session_reaches_the_crm_without_its_cookie(
    crm: Served, gw: SignInGateway, browsers: Callable[..., Browser]
) -> None:
    b = browsers(gw)
    await enrolled(b)
    stolen = b.cookie(CRM_COOKIE)
    assert stolen in crm.app[STATE].sessions
    arrived = crm.app[ARRIVED]

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
        headers = {"Cookie": f"{CRM_COOKIE}={stolen}"}
        async with raw.ws_connect(gw.url + "/ws", headers=headers) as ws:
            await ws.send_str("hi")
            assert (await ws.receive_str()) == "echo: hi"
    assert arrived[-1].path == "/ws"
    assert CRM_COOKIE not in arrived[-1].cookies

    # The signed-in browser's own socket does carry it: the test can tell the two apart.
    async with b.http.ws_connect(gw.url + "/ws") as ws:
        await ws.send_str("me")
        assert (await ws.receive_str()) == "echo: me"
    assert arrived[-1].path == "/ws"
    assert arrived[-1].cookies.get(CRM_COOKIE) == stolen


ECHO_LOGIN = """\
login:
  mode: upstream
  path: /login
  username_field: username
  success: {status: [302], cookie: crm_session}
"""

OUR_COOKIES = (
    "crm_gateway_device=dev.ice; crm_gateway_lang=de",
    "__Host-crm_gateway=planted; __Host-crm_gateway_device=x; __Host-crm_gateway_lang=nl",
)


async def test_a_crm_cookie_not_released_to_this_session_is_not_forwarded(
    upstream: Served, start: Start, http: aiohttp.ClientSession
) -> None:
    """Another user's CRM session cookie, carried inside one's own complete gateway session,
    never reaches the CRM: only the value released to this session does."""
    gw = await start(upstream.url, login=ECHO_LOGIN)
    session = await gw.signin.book.create("carol", FULL, crm_binding=cookie_binding("mine"))
    signed_in = f"{GATEWAY_COOKIE}={gw.signin.book.cookie_value(session)}"
    for value, expected in (("mine", ["crm_session=mine"]), ("alices", [])):
        async with http.get(
            gw.url + "/anything", headers={"Cookie": f"{signed_in}; crm_session={value}"}
        ) as r:
            headers = (await r.json())["headers"]
        assert [v for k, v in headers if k.lower() == "cookie"] == expected


async def test_our_own_cookies_never_reach_the_crm(
    upstream: Served, start: Start, http: aiohttp.ClientSession
) -> None:
    gw = await start(upstream.url, login=ECHO_LOGIN)
    # A complete session to which the CRM cookie `abc` was released at sign-in.
    session = await gw.signin.book.create("carol", FULL, crm_binding=cookie_binding("abc"))
    signed_in = f"{GATEWAY_COOKIE}={gw.signin.book.cookie_value(session)}"

    def cookie_lines(echoed: dict[str, object]) -> list[str]:
        headers = echoed["headers"]
        assert isinstance(headers, list)
        return [v for k, v in headers if k.lower() == "cookie"]

    for own, expected in (
        (signed_in, ["crm_session=abc; other=1"]),
        (f"{GATEWAY_COOKIE}=not-signed", ["other=1"]),
    ):
        headers: CIMultiDict[str] = CIMultiDict()
        headers.add("Cookie", f"{own}; {OUR_COOKIES[0]}; crm_session=abc")
        headers.add("Cookie", f"{OUR_COOKIES[1]}; other=1")
        async with http.get(gw.url + "/anything", headers=headers) as r:
            assert r.status == 200
            assert cookie_lines(await r.json()) == expected, own
        # The login POST is forwarded by its own path: the same rule.
        login_headers = headers.copy()
        login_headers["Content-Type"] = "application/x-www-form-urlencoded"
        async with http.post(
            gw.url + "/login", data=b"username=carol&password=x", headers=login_headers
        ) as r:
            assert r.status == 200  # the echo is no successful login: relayed
            assert cookie_lines(await r.json()) == ["other=1"]
        # And the WebSocket handshake.
        async with http.ws_connect(gw.url + "/ws", headers=headers) as ws:
            await ws.send_str("x")
            await ws.receive_str()
        seen = [e for e in upstream.app[EVENTS] if e.startswith("ws-headers:")][-1]
        ws_headers = json.loads(seen.removeprefix("ws-headers:"))
        assert ws_headers.get("Cookie") == expected[0], own


# -- OTP-4 / OTP-8 / RL-1: lockouts ------------------------------------------------------------


async def test_guessing_recovery_codes_locks_the_user_out_like_wrong_totp_codes(
    gw: SignInGateway, browsers: Callable[..., Browser]
) -> None:
    attacker, csrf, secret, codes = await at_the_challenge(gw, browsers, factor="recovery")
    for _ in range(4):
        status, html, _ = await post_code(attacker, csrf, wrong_recovery_code(codes), "recovery")
        assert status == 400
    status, html, r = await post_code(attacker, csrf, wrong_recovery_code(codes), "recovery")
    assert status == 429
    assert int(r.headers["Retry-After"]) == 61
    assert "Too many wrong codes" in html
    # Locked: even a right recovery code or TOTP code is not looked at (and not used up).
    status, _, _ = await post_code(attacker, csrf, codes[0], "recovery")
    assert status == 429
    status, _, _ = await post_code(attacker, csrf, attacker.code(secret))
    assert status == 429
    assert await gw.signin.recovery.left("alice") == 10
    assert attacker.cookie(CRM_COOKIE) is None
    # The real user, in another session, is locked too, until the time is up.
    victim = browsers(gw)
    await victim.crm_login("alice", "alice-demo")
    status, html, _ = await victim.get("/_gateway/challenge?factor=recovery")
    assert status == 429
    assert 'name="code"' not in html
    gw.clock.advance(61)
    status, _, r = await victim.answer(codes[0], factor="recovery")
    assert (status, r.headers["Location"]) == (303, "/contacts")
    assert await gw.signin.recovery.left("alice") == 9


async def test_wrong_codes_for_several_users_from_one_address_lock_the_address(
    crm: Served, start: Start, browsers: Callable[..., Browser]
) -> None:
    gw = await start(crm.url, extra="limits: {ip_failures: 3}\n")
    alice_secret, _ = await enrolled(browsers(gw), "alice", "alice-demo")
    bob_secret, _ = await enrolled(browsers(gw), "bob", "bob-demo")
    gw.clock.advance(60)
    on_alice = browsers(gw)
    await on_alice.crm_login("alice", "alice-demo")
    alice_csrf = await challenge_csrf(on_alice)
    on_bob = browsers(gw)
    await on_bob.crm_login("bob", "bob-demo")
    bob_csrf = await challenge_csrf(on_bob)

    assert (await post_code(on_alice, alice_csrf, wrong_code(on_alice, alice_secret)))[0] == 400
    assert (await post_code(on_bob, bob_csrf, wrong_code(on_bob, bob_secret)))[0] == 400
    # Each user is far from their own limit (5); the address reaches its limit (3).
    status, html, _ = await post_code(on_alice, alice_csrf, wrong_code(on_alice, alice_secret))
    assert status == 429
    assert "Too many wrong codes" in html
    # Right codes from this address are refused now, for either user.
    status, _, _ = await post_code(on_bob, bob_csrf, on_bob.code(bob_secret))
    assert status == 429
    status, _, _ = await post_code(on_alice, alice_csrf, on_alice.code(alice_secret))
    assert status == 429
    assert on_alice.cookie(CRM_COOKIE) is None
    assert on_bob.cookie(CRM_COOKIE) is None
    gw.clock.advance(61)
    status, _, r = await post_code(on_bob, bob_csrf, on_bob.code(bob_secret))
    assert (status, r.headers["Location"]) == (303, "/contacts")


@pytest.mark.parametrize(
    "cookie",
    [
        "other=1 crm_session={v}",
        "other=1, crm_session={v}",
        "other=1,\tcrm_session={v}",
        'other="1" crm_session={v}',
    ],
)
async def test_a_crm_cookie_hidden_behind_a_space_or_comma_is_removed_too(
    cookie: str, crm: Served, gw: SignInGateway, browsers: Callable[..., Browser]
) -> None:
    """aiohttp and http.cookies also split a Cookie header at whitespace: the CRM reads the
    hidden pair as its session cookie, so the gateway must see it too (CR-2)."""
    b = browsers(gw)
    await enrolled(b)
    stolen = b.cookie(CRM_COOKIE)
    assert stolen in crm.app[STATE].sessions
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
        headers = {"Cookie": cookie.replace("{v}", stolen or "")}
        async with raw.get(gw.url + "/contacts", headers=headers, allow_redirects=False) as r:
            assert r.status == 302  # the CRM saw nobody
            assert r.headers["Location"].startswith("/login")
    assert CRM_COOKIE not in crm.app[ARRIVED][-1].cookies


@pytest.mark.parametrize(
    "cookie",
    ["crm.session=x", "crm%5Fsession=x", "crm session=x", "crm_session[0]=x", "crm_session =x"],
)
async def test_names_a_php_crm_reads_as_its_session_cookie_are_removed_too(
    cookie: str, upstream: Served, start: Start, http: aiohttp.ClientSession
) -> None:
    """PHP url-decodes cookie names, reads `.` and ` ` as `_` and `name[..]` as `name`."""
    gw = await start(upstream.url, login=ECHO_LOGIN)
    headers = {"Cookie": f"{cookie}; other=1"}
    async with http.get(gw.url + "/anything", headers=headers) as r:
        echoed = await r.json()
    assert [v for k, v in echoed["headers"] if k.lower() == "cookie"] == ["other=1"]
