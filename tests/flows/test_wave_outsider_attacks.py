"""An outsider's attacks on the change since 000e253, beyond the attack suites already
there: the guard's decision memo (5aba654) asked the same method and path from another
address and from a peer that claims another, and asked for other spellings of a closed path
once it knows the open ones; the cookie caches of gateway.web.cookies (e8b4313, e64ebed)
primed by one session and then asked, in both the proxy mode and the forward-auth endpoint,
about the same CRM cookie inside another user's session and another session of the same
user. Real gateway, the noting demo CRM, raw sockets where aiohttp's client would tidy what
is sent."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Served, send_raw
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_forward_auth_signin import two_workers
from tests.flows.test_password_guessing import SLOWDOWN, from_address, login_post
from tests.redis_server import RedisServer
from tests.signin_kit import (
    ARRIVED,
    CRM_COOKIE,
    GATEWAY_COOKIE,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    enrolled,
    noted_crm,
    posts_to_login,
)

crm = pytest.fixture(noted_crm)

ADDRESS_POLICY = """\
networks:
  outside: [127.0.0.2/32]
organisation: {deny: [outside]}
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
users: {alice: {roles: [admin]}}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: "/**", allow: [anyone]}
"""


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def get_from(port: int, target: str, source: str = "127.0.0.1", extra: str = "") -> int:
    """`GET target` written byte for byte from the loopback address `source`: the status."""
    head = f"GET {target} HTTP/1.1\r\nHost: gw\r\n{extra}Connection: close\r\n\r\n"
    return status_of(await send_raw(port, head.encode(), source=source))


def arrived_paths(crm: Served, since: int = 0) -> list[str]:
    return [a.path for a in crm.app[ARRIVED][since:]]


async def test_a_remembered_decision_never_crosses_addresses(crm: Served, start: Start) -> None:
    """The memo's key is asked the same method and path by nobody from an allowed address,
    then from a denied one, then the other way round; then from the denied address claiming
    the allowed one (X-Forwarded-For, Forwarded) without being a trusted proxy, and through
    a trusted proxy that names the denied one. Each is judged on its own address: the CRM
    sees only the allowed ones."""
    gw = await start(crm.url, policy=ADDRESS_POLICY, extra="trusted_proxies: [127.0.0.3]\n")
    port = gw.served.port
    asked = [
        ("/contacts", "127.0.0.1", ""),
        ("/contacts", "127.0.0.2", ""),
        ("/contacts", "127.0.0.1", ""),
        ("/about", "127.0.0.2", ""),
        ("/about", "127.0.0.1", ""),
        ("/contacts", "127.0.0.2", "X-Forwarded-For: 127.0.0.1\r\n"),
        ("/contacts", "127.0.0.2", "Forwarded: for=127.0.0.1\r\n"),
        ("/contacts", "127.0.0.2", "X-Real-IP: 127.0.0.1\r\n"),
        ("/contacts", "127.0.0.3", "X-Forwarded-For: 127.0.0.2\r\n"),
        ("/contacts", "127.0.0.3", "X-Forwarded-For: 127.0.0.1\r\n"),
    ]
    refused = [
        (path, source, extra)
        for path, source, extra in asked
        if await get_from(port, path, source, extra) == 403
    ]
    assert refused == [asked[i] for i in (1, 3, 5, 6, 7, 8)]
    assert arrived_paths(crm) == ["/contacts", "/contacts", "/about", "/contacts"]


# Another spelling of /admin/x, each after the memo has just remembered an open path: the
# status the gateway answers, and what reaches the CRM (None: nothing). Paths are matched
# case-sensitively (docs/policies.md), and a trailing dot is another segment to a CRM on
# aiohttp: those are the CRM's paths as spelt, judged as spelt.
SPELLINGS: list[tuple[str, int, str | None]] = [
    ("/admin", 403, None),
    ("/admin/", 403, None),
    ("/%61dmin/x", 403, None),
    ("/adm%69n/x", 403, None),
    ("/%61%64%6D%69%6E/x", 403, None),
    ("//admin/x", 403, None),
    ("/./admin/x", 403, None),
    ("/x/../admin/x", 403, None),
    ("/x/%2e%2e/admin/x", 403, None),
    ("/x/.%2E/admin/x", 403, None),
    ("/admin?next=/../x", 403, None),
    ("/admin/%2e%2e/x", 404, "/x"),  # climbs out of /admin: judged and sent as /x
    ("/admin%2fx", 400, None),
    ("/%2fadmin/x", 400, None),
    ("/admin/x%2f..%2f", 400, None),
    ("/admin%00/x", 400, None),
    ("/admin%5cx", 400, None),
    ("/admin;x", 400, None),
    ("/admin%3bx", 400, None),
    ("/x/..;/admin/x", 400, None),
    ("/x/%c0%ae%c0%ae/admin/x", 400, None),
    ("http://gw/admin/x", 400, None),
    ("*", 400, None),
    ("/ADMIN/x", 404, "/ADMIN/x"),
    ("/admin%2e/x", 404, "/admin./x"),
]


async def test_no_spelling_of_a_closed_path_reaches_the_crm_after_the_memo_knows_open_ones(
    crm: Served, start: Start
) -> None:
    gw = await start(crm.url, policy=ADDRESS_POLICY)
    port = gw.served.port
    seen = []
    for target, _, _ in SPELLINGS:
        assert await get_from(port, "/x") == 404  # the open path, remembered
        before = len(crm.app[ARRIVED])
        status = await get_from(port, target)
        arrived = arrived_paths(crm, before)
        seen.append((target, status, arrived[0] if arrived else None))
    assert seen == SPELLINGS
    # The memo grew by the paths judged, and the closed one is still refused every time.
    assert await get_from(port, "/admin/x") == 403


def cookie_line(b: Browser) -> tuple[str, str]:
    """The browser's gateway session cookie and the CRM cookie the gateway released to it."""
    gateway, crm = b.cookie(GATEWAY_COOKIE), b.cookie(CRM_COOKIE)
    assert gateway and crm
    return gateway, crm


async def crm_cookie_sent(gw: SignInGateway, crm: Served, gateway: str, crm_value: str) -> str:
    """A GET /contacts carrying this pair of cookies, twice (the second from the caches):
    the CRM cookie the CRM got (the same both times, asserted), "" when none."""
    got = []
    for _ in range(2):
        before = len(crm.app[ARRIVED])
        cookie = f"Cookie: {GATEWAY_COOKIE}={gateway}; {CRM_COOKIE}={crm_value}\r\n"
        await get_from(gw.served.port, "/contacts", extra=cookie)
        arrived = crm.app[ARRIVED][before:]
        got.append(arrived[0].cookies.get(CRM_COOKIE, "") if arrived else "")
    assert got[0] == got[1], got
    return got[0]


async def auth_answer(gw: SignInGateway, gateway: str, crm_value: str) -> list[int]:
    """The forward-auth endpoint asked twice, as nginx asks it, for GET /contacts with
    this pair of cookies: the two statuses."""
    cookie = f"Cookie: {GATEWAY_COOKIE}={gateway}; {CRM_COOKIE}={crm_value}\r\n"
    extra = f"X-Original-Method: GET\r\nX-Original-URI: /contacts\r\n{cookie}"
    return [await get_from(gw.served.port, "/_gateway/auth", extra=extra) for _ in range(2)]


async def test_cookie_answers_remembered_for_one_session_never_serve_another(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """alice's session has her CRM cookie released to it, and the caches know her Cookie
    header by heart (proxy and forward auth). Her CRM cookie copied into bob's session, and
    into a second session of alice's own (its own CRM cookie released to it), never reaches
    the CRM nor passes the endpoint, asked first and asked again; hers still goes."""
    gw = await start(crm.url, extra=FORWARD_AUTH)
    alice = browsers(gw)
    secret, _ = await enrolled(alice)
    gw.clock.advance(60)
    bob = browsers(gw)
    await enrolled(bob, "bob", "bob-demo")
    gw.clock.advance(60)
    second = browsers(gw)
    assert await second.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    half = second.cookie(GATEWAY_COOKIE)
    assert half and second.cookie(CRM_COOKIE) is None

    a_gw, a_crm = cookie_line(alice)
    b_gw, b_crm = cookie_line(bob)
    assert await crm_cookie_sent(gw, crm, a_gw, a_crm) == a_crm
    assert await auth_answer(gw, a_gw, a_crm) == [200, 200]

    assert await crm_cookie_sent(gw, crm, b_gw, a_crm) == ""
    assert await auth_answer(gw, b_gw, a_crm) == [401, 401]
    # alice's second session, password only: her full session's CRM cookie is no use in it
    assert await crm_cookie_sent(gw, crm, half, a_crm) == ""
    assert await auth_answer(gw, half, a_crm) == [401, 401]
    # the same session once its factor passed has a CRM cookie of its own, not hers
    status, _, r = await second.answer(second.code(secret))
    assert (status, r.headers["Location"]) == (303, "/contacts")
    s_gw, s_crm = cookie_line(second)
    assert s_crm != a_crm
    assert await crm_cookie_sent(gw, crm, s_gw, a_crm) == ""
    assert await auth_answer(gw, s_gw, a_crm) == [401, 401]
    assert await crm_cookie_sent(gw, crm, a_gw, s_crm) == ""
    # and asked again, the first answers stand
    assert await crm_cookie_sent(gw, crm, a_gw, a_crm) == a_crm
    assert await crm_cookie_sent(gw, crm, s_gw, s_crm) == s_crm
    assert await crm_cookie_sent(gw, crm, b_gw, b_crm) == b_crm
    assert await auth_answer(gw, b_gw, b_crm) == [200, 200]


async def test_password_guesses_spread_over_two_workers_and_forty_addresses_are_held(
    crm: Served, tmp_path: Path, browsers: Browsers, own_redis: RedisServer
) -> None:
    """test_password_guessing's forty addresses, each guessing alice's password five times,
    now alternating between two workers on one Redis: the account's slowdown is counted in
    the shared store, so no more guesses reach the CRM than with one worker, and the right
    password from a stranger's address waits on both."""
    one, other = await two_workers(crm, tmp_path, own_redis.url, "1m")
    try:
        home = browsers(one)
        await enrolled(home)
        one.clock.advance(60)
        before = len(posts_to_login(crm))
        statuses = Counter(
            [
                await login_post((one, other)[k % 2].url, f"203.0.113.{n}", "alice", f"g{n}-{k}")
                for n in range(40)
                for k in range(5)
            ]
        )
        reached = len(posts_to_login(crm)) - before
        # Counted per worker, each would let SLOWDOWN through: 2 * SLOWDOWN at least. The
        # pauses (1 s, then 2 s, 4 s...) are Redis TTLs in real time while the test's clock
        # stands: one that really ends during the run lets one more guess in, by design.
        assert SLOWDOWN <= reached < 2 * SLOWDOWN, statuses
        assert statuses[429] == 200 - reached
        for gw in (one, other):
            stranger = browsers(gw, headers=from_address("203.0.113.200"))
            form = await stranger.crm_login_form("alice", "alice-demo")
            assert (await stranger.post("/login", form))[0] == 429
    finally:
        for gw in (one, other):
            await gw.served.runner.cleanup()


async def test_the_endpoint_refuses_every_spelling_the_proxy_refuses(
    crm: Served, start: Start
) -> None:
    """The same spellings of /admin/x asked of the forward-auth endpoint as nginx asks it
    (X-Original-URI is the client's target, which nginx then sends the CRM as written):
    none the proxy mode refuses is let through here, a dot segment climbing out included
    (the proxy mode sends the path it judged, nginx would send the raw one)."""
    gw = await start(crm.url, policy=ADDRESS_POLICY, extra=FORWARD_AUTH)

    async def asked(target: str) -> int:
        extra = f"X-Original-Method: GET\r\nX-Original-URI: {target}\r\n"
        return await get_from(gw.served.port, "/_gateway/auth", extra=extra)

    seen = []
    for target, _, sent in SPELLINGS:
        assert await asked("/x") == 200  # the open path, remembered
        seen.append((target, await asked(target), sent))
    # nginx's auth_request knows 401 and 403 only: every refusal is a 403 here.
    assert seen == [
        (t, 200 if sent and "admin" in sent.lower() else 403, sent) for t, _, sent in SPELLINGS
    ]
