"""An outsider's attacks on the newest parts of the request path (issue 14, 16 review):
OneRoute and its fallback to aiohttp for targets its route does not match, Expect:
100-continue answered after the rules, and the headers a peer may not be believed on. Real
gateway, real echo CRM or demo CRM, raw sockets from other loopback addresses, real TOTP.
Every attack held when written but one, marked Fixed (a refusal before 100 Continue now
says the connection ends); the others are regression tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from tests.conftest import GatewayFactory, Served, send_raw
from tests.flows.test_attack_review import method_gateway
from tests.flows.test_forward_auth_signin import two_workers
from tests.redis_server import RedisServer
from tests.signin_kit import (
    ARRIVED,
    CRM_COOKIE,
    Browser,
    Browsers,
    SignInGateway,
    at_the_challenge,
    challenge_csrf,
    enrolled,
    gateway_in_front,
    noted_crm,
    set_cookie_names,
    wrong_codes,
)
from tests.web.test_guard import ALICE_TOKEN, guarded

__all__ = ["guarded"]  # the fixture, taken from the guard's tests

crm = pytest.fixture(noted_crm)
gw = pytest.fixture(gateway_in_front)


def _reached_crm(answer: bytes) -> bool:
    """The echo CRM answers with what it saw: a raw_path in the answer means it was reached."""
    return b'"raw_path"' in answer


def _statuses(answer: bytes) -> list[bytes]:
    return [line.split(b" ")[1] for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


async def _raw(port: int, head: str, body: bytes = b"", source: str = "127.0.0.5") -> bytes:
    return await send_raw(port, head.replace("\n", "\r\n").encode() + body, source=source)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1/admin/users",
        "http://127.0.0.2/admin/users",
        "https://gw/admin/users",
        "http://gw/_gateway/healthz",
        "//admin/users",
        "/admin%0Ausers",
        "/x/..%2Fadmin/users",
        "*",
    ],
)
async def test_a_target_not_in_origin_form_never_reaches_the_crm_past_a_rule(
    guarded: Served, target: str
) -> None:
    """Absolute-form and `*` targets (OneRoute hands a target its route does not match to
    aiohttp): alice's token from an address her role may not use never gets /admin."""
    for method in ("GET", "OPTIONS"):
        answer = await _raw(
            guarded.port,
            f"{method} {target} HTTP/1.1\nHost: gw\nAuthorization: Bearer {ALICE_TOKEN}\n"
            "Connection: close\n\n",
        )
        assert not _reached_crm(answer), answer[:300]
        assert _statuses(answer)[0] != b"200", answer[:300]


@pytest.mark.parametrize(
    "extra",
    [
        "X-Forwarded-For: 127.0.0.2\n",
        "X-Real-IP: 127.0.0.2\n",
        "Forwarded: for=127.0.0.2\n",
        "X-Forwarded-For: 127.0.0.2, 127.0.0.2\nForwarded: for=127.0.0.2;proto=https\n",
    ],
)
async def test_an_untrusted_peer_is_never_believed_on_its_address(
    guarded: Served, extra: str
) -> None:
    """No trusted proxies: a client naming the office's address in a forwarding header is
    judged by the address it connects from."""
    answer = await _raw(
        guarded.port,
        f"GET /admin/users HTTP/1.1\nHost: gw\nAuthorization: Bearer {ALICE_TOKEN}\n"
        f"{extra}Connection: close\n\n",
    )
    assert _statuses(answer) == [b"403"], answer[:300]
    assert not _reached_crm(answer)


@pytest.mark.parametrize(
    ("version", "expect"),
    [
        ("1.1", "100-continue"),
        ("1.1", "100-CONTINUE"),
        ("1.0", "100-continue"),
        ("1.1", "100-continue, foo"),
        ("1.1", "foo"),
    ],
)
async def test_a_refused_request_whose_body_comes_before_any_100_never_reaches_the_crm(
    guarded: Served, version: str, expect: str
) -> None:
    """A client that sends its body at once, whatever it says it expects and in either
    version: the rules are judged first, the body reaches nothing, no 100 Continue is said."""
    answer = await _raw(
        guarded.port,
        f"POST /admin/users HTTP/{version}\nHost: gw\nAuthorization: Bearer {ALICE_TOKEN}\n"
        f"Expect: {expect}\nContent-Length: 11\nConnection: close\n\n",
        b"hello world",
    )
    assert not _reached_crm(answer), answer[:300]
    statuses = _statuses(answer)
    assert b"100" not in statuses and b"200" not in statuses, answer[:300]


async def test_an_allowed_request_whose_body_comes_before_100_arrives_whole(
    guarded: Served,
) -> None:
    """The same from the office: the body sent without waiting reaches the CRM once, whole,
    and the answer after it is the CRM's."""
    answer = await _raw(
        guarded.port,
        f"POST /admin/users HTTP/1.1\nHost: gw\nAuthorization: Bearer {ALICE_TOKEN}\n"
        "Expect: 100-continue\nContent-Length: 11\nConnection: close\n\n",
        b"hello world",
        source="127.0.0.2",
    )
    assert _statuses(answer) == [b"100", b"200"], answer[:300]
    assert json.loads(answer.rpartition(b"\r\n\r\n")[2])["body_bytes"] == 11


def _cookie_header(b: Browser) -> str:
    return "; ".join(f"{c.key}={c.value}" for c in b.jar)


@pytest.mark.parametrize("expect", ["", "Expect: 100-continue\n"])
async def test_a_session_at_the_challenge_never_reaches_the_crm_with_or_without_expect(
    crm: Served, gw: SignInGateway, browsers: Browsers, expect: str
) -> None:
    """alice has passed her password, not her code: her cookies on a raw POST for the CRM
    (body sent at once, Expect or not), a GET and an absolute-form GET never carry her CRM
    session to the CRM."""
    challenged = await at_the_challenge(gw, browsers)
    cookies = _cookie_header(challenged.browser)
    before = len(crm.app[ARRIVED])
    for head, body in (
        (f"POST /contacts HTTP/1.1\nContent-Length: 5\n{expect}", b"a=b&c"),
        ("GET /contacts HTTP/1.1\n", b""),
        ("GET http://gw/contacts HTTP/1.1\n", b""),
    ):
        answer = await _raw(
            gw.served.port,
            f"{head}Host: gw\nCookie: {cookies}\nContent-Type: application/x-www-form-urlencoded\n"
            "Connection: close\n\n",
            body,
            source="127.0.0.1",
        )
        assert _statuses(answer)[0] != b"100" or expect, answer[:300]
    # The policy lets anyone ask the CRM (its own login guards it): what arrives is nobody's.
    arrived = crm.app[ARRIVED][before:]
    assert arrived and all(CRM_COOKIE not in a.cookies for a in arrived), arrived


async def test_wrong_codes_spread_over_two_workers_and_two_sessions_lock_the_user(
    crm: Served, tmp_path: Path, browsers: Browsers, own_redis: RedisServer
) -> None:
    """Two workers on one Redis: alice's password passed in two browsers from two addresses,
    each guessing on its own worker in turn. The fifth wrong code (limits.user_failures)
    locks her on both workers, for both sessions, right code or not."""
    one, other = await two_workers(crm, tmp_path, own_redis.url, "1m")
    try:
        secret, _ = await enrolled(browsers(one))
        one.clock.advance(60)
        here = browsers(one)
        there = browsers(other)
        for b in (here, there):
            assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
        wrong = wrong_codes(here, secret, 5)
        for i, code in enumerate(wrong[:4]):
            status, _, r = await (here, there)[i % 2].answer(code)
            assert status != 303 or "/_gateway/" in r.headers["Location"], status
        csrf = await challenge_csrf(there)  # read before the lockout, posted after it
        await here.answer(wrong[4])
        for b in (here, there):
            assert (await b.get("/_gateway/challenge?factor=totp"))[0] == 429
        status, _, r = await there.post(
            "/_gateway/challenge", {"csrf": csrf, "factor": "totp", "code": there.code(secret)}
        )
        assert status == 429, status
        assert CRM_COOKIE not in set_cookie_names(r)
    finally:
        for gw in (one, other):
            await gw.served.runner.cleanup()


@pytest.mark.parametrize("method", ["delete", "Delete", "DELETE ", "DELETE\t"])
async def test_a_method_in_another_spelling_is_never_judged_as_another_method(
    upstream: Served, start_gateway: GatewayFactory, tmp_path: Path, method: str
) -> None:
    """A rule keeps DELETE on /records to admins: `delete` (which Django, Symfony, Laravel
    and Werkzeug read as DELETE, and aiohttp's client upper-cases on its way to the CRM)
    is refused or judged as DELETE, never let through as a method no rule names."""
    gw = await method_gateway(upstream, start_gateway, tmp_path)
    answer = await _raw(gw.port, f"{method} /records/1 HTTP/1.1\nHost: gw\nConnection: close\n\n")
    assert not _reached_crm(answer), answer[:400]


async def test_a_refused_request_whose_body_was_never_asked_for_says_the_connection_ends(
    guarded: Served,
) -> None:
    """Fixed: a client waiting for 100 Continue is refused (403) before it sends its body.
    The refusal said nothing of the connection, so it read as kept open: a client sending its
    next request on it had that request read as the 60 bytes still owed, and never answered.
    The refusal now says `Connection: close` (RFC 9110 §10.1.1: a server answering before
    the content says whether it goes on reading), and the gateway only drains what comes."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", guarded.port, local_addr=("127.0.0.5", 0)
    )
    try:
        writer.write(
            b"POST /admin/users HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
            b"Authorization: Bearer " + ALICE_TOKEN.encode() + b"\r\nContent-Length: 60\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 403 "), head
        assert b"\r\nconnection: close\r\n" in head.lower(), head
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
