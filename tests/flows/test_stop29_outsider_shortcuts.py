"""An outsider's attacks on issue 14's shortcuts on the request path (commits 2d522c0..063fe59):
OneRoute's one match info for targets it surely matches, GatewayRequest's `app` and storage,
the scope's one-step view when no proxy is trusted, the guard's remembered `verified_until`,
and the login told apart by its path alone. Real gateways over loopback, a CRM that notes
every request line or the demo CRM, real TOTP codes, a fake clock. Each target and header
below was also sent to the gateway as it was before the shortcuts (d9c3b2e): the same answers
and the same request lines at the CRM. Every attack here held: plain tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.conftest import GatewayFactory, Served, send_raw
from tests.flows.test_login_cookies import LOGINS, php  # noqa: F401  (the fixture, by name)
from tests.flows.test_login_in_form import OPEN_POLICY
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import (
    LONG_SESSIONS,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    audit_trail,
    enrolled,
    field,
    noted_crm,
)
from tests.upstreams import EVENTS

HOUR = 3600.0
CHALLENGE = (303, "/_gateway/challenge")

# bob may choose his own interval (up to a week); every session is re-verified after 8h.
POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  reverify: 8h
users:
  bob: {interval: 7d}
paths:
  - {path: "/**", allow: [anyone]}
"""

crm = pytest.fixture(noted_crm)


class LineCrm:
    """A CRM that is a plain socket: notes every request's head (an aiohttp app would not
    route a newline) and answers 200 `ok`."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def lines(self) -> list[bytes]:
        return [head.split(b"\r\n", 1)[0] for head in self.heads]

    def headers(self) -> dict[bytes, bytes]:
        (head,) = self.heads
        found: dict[bytes, bytes] = {}
        for line in head.split(b"\r\n")[1:]:
            if line:
                name, _, value = line.partition(b":")
                found[name.strip().lower()] = value.strip()
        return found


@pytest.fixture
async def line_crm() -> AsyncIterator[LineCrm]:
    made = LineCrm()
    yield made
    if made.server is not None:
        made.server.close()
        await made.server.wait_closed()


def status_line(raw: bytes) -> bytes:
    return raw.split(b"\r\n", 1)[0]


async def get(port: int, target: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return await send_raw(
        port,
        b"GET "
        + target
        + b" HTTP/"
        + version
        + b"\r\nHost: gw\r\n"
        + extra
        + b"Connection: close\r\n\r\n",
    )


# -- 1. OneRoute: one match info for what `/{tail:.*}` surely matches ---------------------------

# (target, status line, what reached the CRM): as the gateway before the shortcut answered.
TARGETS: list[tuple[bytes, bytes, list[bytes]]] = [
    (b"/a%0Ab", b"HTTP/1.1 404 Not Found", []),
    (b"/a%0ab?x", b"HTTP/1.1 404 Not Found", []),
    (b"/a%0A", b"HTTP/1.1 404 Not Found", []),
    (b"/a%%0A", b"HTTP/1.1 404 Not Found", []),
    (b"/_gateway/%0a", b"HTTP/1.1 404 Not Found", []),
    (b"http://gw/a%0Ab", b"HTTP/1.1 404 Not Found", []),
    (b"http://gw/x", b"HTTP/1.1 400 Bad Request", []),
    (b"http://other/x", b"HTTP/1.1 400 Bad Request", []),
    (b"/x/../_gateway/status", b"HTTP/1.1 404 Not Found", []),
    (b"/_Gateway/x", b"HTTP/1.1 404 Not Found", []),
    (b"/%5fgateway/x", b"HTTP/1.1 404 Not Found", []),
    (b"*", b"HTTP/1.0 400 Bad Request", []),
    (b"x/y", b"HTTP/1.0 400 Bad Request", []),
    (b"/a\xe2\x80\xa8b", b"HTTP/1.0 400 Bad Request", []),
    (b"/a\rb", b"HTTP/1.0 400 Bad Request", []),
    # Escapes that decode to no newline, double escapes, a fragment: forwarded as they came.
    (b"/a%0Db", b"HTTP/1.1 200 OK", [b"GET /a%0Db HTTP/1.1"]),
    (b"/a%250Ab", b"HTTP/1.1 200 OK", [b"GET /a%250Ab HTTP/1.1"]),
    (b"/a%25%30%41", b"HTTP/1.1 200 OK", [b"GET /a%25%30%41 HTTP/1.1"]),
    (b"/a%c0%8ab", b"HTTP/1.1 200 OK", [b"GET /a%c0%8ab HTTP/1.1"]),
    (b"/a%E2%80%A8b", b"HTTP/1.1 200 OK", [b"GET /a%E2%80%A8b HTTP/1.1"]),
    (b"/a%0", b"HTTP/1.1 200 OK", [b"GET /a%0 HTTP/1.1"]),
    (b"/a%zz", b"HTTP/1.1 200 OK", [b"GET /a%zz HTTP/1.1"]),
    (b"/?%0A", b"HTTP/1.1 200 OK", [b"GET /?%0A HTTP/1.1"]),
    (b"//evil/x", b"HTTP/1.1 200 OK", [b"GET //evil/x HTTP/1.1"]),
    (b"/x;p=1/y", b"HTTP/1.1 200 OK", [b"GET /x;p=1/y HTTP/1.1"]),
    (b"/a%2F..%2Fb", b"HTTP/1.1 200 OK", [b"GET /a%2F..%2Fb HTTP/1.1"]),
    (b"/" + b"a" * 8000, b"HTTP/1.1 200 OK", [b"GET /" + b"a" * 8000 + b" HTTP/1.1"]),
]


async def test_targets_are_answered_and_forwarded_as_before_the_one_match_info(
    line_crm: LineCrm, start_gateway: GatewayFactory
) -> None:
    """Lower and upper-case escapes of a newline, double escapes, absolute-form targets,
    `*`, raw unicode, path params, a long target: the same answer as before the shortcut,
    and at the CRM exactly the request line the client sent, or nothing."""
    gw = await start_gateway(await line_crm.start())
    seen = []
    for target, _, _ in TARGETS:
        line_crm.heads.clear()
        answer = await get(gw.port, target)
        await asyncio.sleep(0)
        seen.append((target, status_line(answer), line_crm.lines()))
    assert seen == TARGETS


async def test_an_expect_on_the_fast_path_is_answered_once(
    line_crm: LineCrm, start_gateway: GatewayFactory
) -> None:
    """The one match info's expect handler: 100 Continue, then the CRM's answer."""
    gw = await start_gateway(await line_crm.start())
    head = (
        b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\nhi"
    )
    answer = await send_raw(gw.port, head)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"), answer[:200]
    assert line_crm.lines() == [b"POST /upload HTTP/1.1"]


# -- 2. GatewayRequest: `app` an attribute, the storage asked directly --------------------------


async def test_a_websocket_is_proxied_through_a_gateway_request(
    gateway: Served, upstream: Served
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(gateway.url + "/ws", protocols=("crm.v1",)) as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive_str(timeout=10)) == "echo: hello"
        await ws.close()
    assert any(e.startswith("ws-headers:") for e in upstream.app[EVENTS])


async def test_versions_refused_and_old_ones_spoken_as_before(
    line_crm: LineCrm, start_gateway: GatewayFactory
) -> None:
    """HTTP/1.0 is a GatewayRequest and goes; a version we do not speak is answered 505 (or
    400 where aiohttp's parser refuses it) and never reaches the CRM, as before."""
    gw = await start_gateway(await line_crm.start())
    answer = await get(gw.port, b"/old", version=b"1.0")
    assert status_line(answer) == b"HTTP/1.0 200 OK", answer[:200]
    assert line_crm.lines() == [b"GET /old HTTP/1.1"]
    line_crm.heads.clear()
    refused = {
        b"0.9": b"HTTP/1.1 505 HTTP Version Not Supported",
        b"2.0": b"HTTP/1.1 505 HTTP Version Not Supported",
        b"1.2": b"HTTP/1.0 400 Bad Request",
        b"3.0": b"HTTP/1.0 400 Bad Request",
    }
    for version, expected in refused.items():
        answer = await get(gw.port, b"/new", version=version)
        assert status_line(answer) == expected, (version, answer[:200])
    assert line_crm.lines() == []


# -- 3. The scope's view in one step when no proxy is trusted -----------------------------------

SPOOFED = (
    b"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https;host=evil\r\n"
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Real-IP: 6.6.6.6\r\n"
    b"X-Request-Id: chosen-by-client\r\n"
)


@pytest.mark.parametrize("listen", ["127.0.0.1", "::"])
async def test_forwarding_headers_from_an_untrusted_peer_are_replaced(
    line_crm: LineCrm, start_gateway: GatewayFactory, listen: str
) -> None:
    """No trusted proxy: the CRM hears of the TCP peer (on a dual-stack listener an IPv4
    client is ::ffff:127.0.0.1, named 127.0.0.1 as rules name it), the connection's scheme
    and our own request id, whatever the client wrote."""
    gw = await start_gateway(await line_crm.start(), host=listen)
    answer = await get(gw.port, b"/x", SPOOFED)
    assert status_line(answer) == b"HTTP/1.1 200 OK", answer[:200]
    sent = line_crm.headers()
    assert sent[b"x-forwarded-for"] == b"127.0.0.1"
    assert sent[b"x-forwarded-proto"] == b"http"
    assert sent[b"x-forwarded-host"] == b"gw"
    assert sent[b"x-request-id"] != b"chosen-by-client" and len(sent[b"x-request-id"]) == 16
    assert b"forwarded" not in sent and b"x-real-ip" not in sent
    assert f"X-Request-Id: {sent[b'x-request-id'].decode()}".encode() in answer


async def test_a_trusted_proxy_is_still_believed_and_an_untrusted_one_is_not(
    line_crm: LineCrm, start_gateway: GatewayFactory
) -> None:
    """With trusted_proxies set, the full path runs: the peer named there is believed (its
    client, its scheme, its request id); a peer outside it is not."""
    url = await line_crm.start()
    trusted = await start_gateway(url, "trusted_proxies: [127.0.0.1/32]\n")
    await get(trusted.port, b"/x", SPOOFED)
    sent = line_crm.headers()
    assert sent[b"x-forwarded-for"] == b"6.6.6.6, 127.0.0.1"
    assert (sent[b"x-forwarded-proto"], sent[b"x-request-id"]) == (b"https", b"chosen-by-client")
    line_crm.heads.clear()
    other = await start_gateway(url, "trusted_proxies: [10.0.0.0/8]\n")
    await get(other.port, b"/x", SPOOFED)
    sent = line_crm.headers()
    assert sent[b"x-forwarded-for"] == b"127.0.0.1"
    assert (sent[b"x-forwarded-proto"], sent[b"x-request-id"] != b"chosen-by-client") == (
        b"http",
        True,
    )


BLOCKED_POLICY = """\
networks:
  blocked: [127.0.0.1/32]
paths:
  - {path: /**, allow: [anyone]}
organisation:
  deny: [blocked]
"""


@pytest.mark.parametrize("listen", ["127.0.0.1", "::"])
async def test_an_address_rule_holds_for_an_ipv4_mapped_peer(
    line_crm: LineCrm, start_gateway: GatewayFactory, tmp_path: Path, listen: str
) -> None:
    """A dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1, named 127.0.0.1 before any
    rule reads it (forwarding.plain_peer): the rule naming 127.0.0.1 refuses it; 127.0.0.2
    goes."""
    folder = tmp_path / "blocked"
    folder.mkdir()
    (folder / "policy.yaml").write_text(BLOCKED_POLICY)
    gw = await start_gateway(await line_crm.start(), f"policies: {folder}\n", host=listen)
    answer = await get(gw.port, b"/x", SPOOFED.replace(b"6.6.6.6", b"127.0.0.2"))
    assert status_line(answer) == b"HTTP/1.1 403 Forbidden", answer[:300]
    assert line_crm.lines() == []
    answer = await send_raw(
        gw.port, b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", source="127.0.0.2"
    )
    assert status_line(answer) == b"HTTP/1.1 200 OK", answer[:300]
    assert line_crm.headers()[b"x-forwarded-for"] == b"127.0.0.2"


# -- 4. The guard's remembered verified_until ---------------------------------------------------


@pytest.fixture
async def gw(crm: Served, start: Start) -> SignInGateway:
    return await start(crm.url, policy=POLICY, extra=LONG_SESSIONS)


async def status_of(b: Browser, path: str = "/contacts") -> tuple[int, str]:
    status, _, r = await b.get(path)
    return status, r.headers.get("Location", "")


async def reload_with(gw: SignInGateway, policy: str) -> None:
    (Path(gw.signin.guard.folder) / "policy.yaml").write_text(policy)
    assert await gw.signin.guard.reload("test")


async def test_reverify_is_due_at_its_second_after_the_time_was_remembered(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b)
    assert await status_of(b) == (200, "")  # verified_until remembered: now + 8h
    gw.clock.advance(8 * HOUR - 1)
    assert await status_of(b) == (200, "")
    gw.clock.advance(1)
    assert await status_of(b) == CHALLENGE


async def test_a_reload_that_shortens_reverify_holds_at_the_next_request(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b)
    gw.clock.advance(2 * HOUR)
    assert await status_of(b) == (200, "")  # remembered: until 8h after the factor
    await reload_with(gw, POLICY.replace("reverify: 8h", "reverify: 1h"))
    assert await status_of(b) == CHALLENGE


async def test_a_reload_that_adds_a_fresh_rule_asks_for_the_factor(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b)
    gw.clock.advance(20 * 60)
    assert await status_of(b) == (200, "")
    fresh = "  - {path: /contacts, allow: [authenticated], fresh: 15m, factors: [totp]}\n"
    await reload_with(gw, POLICY.replace("paths:\n", "paths:\n" + fresh))
    assert await status_of(b) == CHALLENGE
    assert await status_of(b, "/login") != CHALLENGE  # elsewhere the 8h hold
    assert (await b.answer(b.code(secret, 31)))[0] in (302, 303)
    assert await status_of(b) == (200, "")


async def test_a_stricter_interval_chosen_in_another_session_holds_in_this_one(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """bob's two sessions: both let through 2h after their factor (their verified_until
    remembered, 8h on); he chooses hourly in one: the other is asked at its next request."""
    first = browsers(gw)
    secret, _ = await enrolled(first, "bob", "bob-demo")
    second = browsers(gw)
    assert await second.crm_login("bob", "bob-demo") == "/_gateway/challenge"
    assert (await second.answer(second.code(secret, 31)))[0] in (302, 303)
    gw.clock.advance(2 * HOUR)
    assert await status_of(first) == (200, "")
    assert await status_of(second) == (200, "")
    status, html, _ = await second.get("/_gateway/account")
    assert status == 200, html[:300]
    status, _, r = await second.post(
        "/_gateway/account/interval", {"csrf": field(html, "csrf"), "interval": "1h"}
    )
    assert status == 303, r.headers
    assert await status_of(second) == CHALLENGE
    assert await status_of(first) == CHALLENGE


async def test_a_factor_passed_in_one_session_does_not_extend_another(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """alice's second session passes its factor 7h after the first's; at 8h the first is
    asked, the second not; two tabs of the first share its verification."""
    first = browsers(gw)
    secret, _ = await enrolled(first)
    gw.clock.advance(7 * HOUR)
    assert await status_of(first) == (200, "")
    second = browsers(gw)
    assert await second.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    assert (await second.answer(second.code(secret, 31)))[0] in (302, 303)
    assert await status_of(second) == (200, "")
    gw.clock.advance(1 * HOUR)
    assert await status_of(first) == CHALLENGE
    assert await status_of(second) == (200, "")
    tab = browsers(gw)  # the first session's cookies in another tab
    tab.jar.update_cookies({c.key: c.value for c in first.jar}, URL(gw.url))
    assert await status_of(tab) == CHALLENGE


async def test_a_clock_set_back_then_on_still_asks_at_the_time(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b)
    gw.clock.advance(4 * HOUR)
    assert await status_of(b) == (200, "")
    gw.clock.advance(-3 * HOUR)  # NTP steps the clock back
    assert await status_of(b) == (200, "")
    gw.clock.advance(7 * HOUR)
    assert await status_of(b) == CHALLENGE


# -- 5. A login told apart by its path alone ----------------------------------------------------

PATH_LOGIN = PHP_LOGIN.replace("path: /index.php?action=Login", "path: /index.php")


@pytest.mark.parametrize(
    ("target", "cookie"),
    [
        ("/index.php?username=bob&password=x", ""),
        ("/INDEX.php?user%6eame=bob&password=x", ""),
        ("/index.php/extra?username=bob&password=x", ""),
        ("/index.php?password=x", "username=bob"),
    ],
)
async def test_a_path_only_login_named_by_another_method_is_refused(
    php: Served,  # noqa: F811
    start: Start,
    target: str,
    cookie: str,
) -> None:
    gw = await start(php.url, login=PATH_LOGIN, policy=OPEN_POLICY)
    extra = f"Cookie: {cookie}\r\n".encode() if cookie else b""
    answer = await get(gw.served.port, target.encode(), extra)
    assert status_line(answer).startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"login_ambiguous" in answer
    [refused] = await audit_trail(gw.served, "signin.refused")
    assert refused.reason == "login_ambiguous"


async def test_a_query_login_is_still_watched_in_cookies_and_at_other_paths(
    php: Served,  # noqa: F811
    start: Start,
) -> None:
    """The login with a query takes the full path: a cookie naming it, a GET naming it with
    the user's field, and its query at another path by its method are refused."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    port = gw.served.port
    body = b"username=bob&password=x"
    form = b"Content-Type: application/x-www-form-urlencoded\r\n"
    cookie = (
        b"POST /index.php?action=List HTTP/1.1\r\nHost: gw\r\n"
        + form
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Cookie: action=Login\r\nConnection: close\r\n\r\n"
        + body
    )
    elsewhere = cookie.replace(b"/index.php?action=List", b"/contacts?action=Login").replace(
        b"Cookie: action=Login\r\n", b""
    )
    for raw in (cookie, elsewhere):
        answer = await send_raw(port, raw)
        assert status_line(answer).startswith(b"HTTP/1.1 400"), answer[:300]
    answer = await get(port, b"/index.php?action=Login&username=bob&password=x")
    assert status_line(answer).startswith(b"HTTP/1.1 400"), answer[:300]
    assert php.app[LOGINS] == []
