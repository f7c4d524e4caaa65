"""Outsider attacks on the change since d1975f5 (stop 27): the per-worker cache of a signed-in
session's Who (SessionBook.who), the small-answer relay (Relayed) on a kept-alive connection,
and a script's rule through dot segments after its path info. No hole found in the time given;
what held is written down here. Real gateway, stand-in PHP CRMs, real TOTP codes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Served, send_raw, serve_handler
from tests.flows.test_login_in_form import SERVED, php
from tests.flows.test_path_info_rules import signed_in
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.flows.test_stop26_outsider_attacks import CHECKED, request_crm
from tests.flows.test_stop26_outsider_attacks import SERVED as SERVED_AS
from tests.signin_kit import Browser, Start

__all__ = ["php"]

# alice and bob, bob the only admin: the admin script tells their Whos apart.
TWO_USERS = """\
defaults: {reverify: 10m, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
users: {alice: {}, bob: {roles: [admin]}}
paths:
  - {path: /admin.php, allow: [role:admin]}
  - {path: "/**", allow: [authenticated]}
"""


@pytest.fixture
async def two_user_crm() -> AsyncIterator[Served]:
    served = await serve_handler(request_crm, CHECKED, SERVED_AS)
    yield served
    await served.runner.cleanup()


async def signs_in(b: Browser, user: str) -> None:
    form = {"username": user, "password": f"{user}-demo"}
    status, _, r = await b.post("/index.php?action=Login", form)
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await b.enrol()
    await b.confirm_codes()


def cookie_header(b: Browser) -> str:
    return "; ".join(f"{c.key}={c.value}" for c in b.http.cookie_jar)


# -- the Who cache: one per worker, shared by every session made of the same facts ---------------


async def test_two_users_verified_at_the_same_instant_keep_their_own_who(
    two_user_crm: Served, start: Start
) -> None:
    """The fake clock stands still: alice's and bob's sessions share verified, interval and
    factor times, so their cache keys differ by the user alone. Asked in turns, each keeps
    their own rule's answer (a Who reused across users would open /admin.php to alice)."""
    gw = await start(two_user_crm.url, login=PHP_LOGIN, policy=TWO_USERS)
    alice, bob = Browser(gw), Browser(gw)
    try:
        await signs_in(alice, "alice")
        await signs_in(bob, "bob")
        for _ in range(3):
            assert (await bob.get("/admin.php?action=List"))[0] == 200
            assert (await alice.get("/admin.php?action=List"))[0] == 403
        ran = [s for s in two_user_crm.app[SERVED_AS] if s[1] == "List"]
        assert {whom for _, _, whom in ran} == {"bob"}, ran
    finally:
        await alice.close()
        await bob.close()


async def test_a_tab_past_the_password_only_gets_no_who_from_a_verified_tab(
    two_user_crm: Served, start: Start
) -> None:
    """alice in two browsers: one has passed her code (its Who cached), the other only her
    password. The second is not served as alice, however the first is asked in between."""
    gw = await start(two_user_crm.url, login=PHP_LOGIN, policy=TWO_USERS)
    verified, half = Browser(gw), Browser(gw)
    try:
        await signs_in(verified, "alice")
        status, _, r = await half.post(
            "/index.php?action=Login", {"username": "alice", "password": "alice-demo"}
        )
        assert status == 303, r.headers.get("Location")
        for _ in range(2):
            assert (await verified.get("/index.php?action=List"))[0] == 200
            status, text, _ = await half.get("/index.php?action=List")
            assert status != 200 and "signed in as alice" not in text, (status, text[:200])
        served = [s for s in two_user_crm.app[SERVED_AS] if s[1] == "List"]
        assert len(served) == 2, served  # the verified tab's two, none for the other
    finally:
        await verified.close()
        await half.close()


# -- Relayed on a kept-alive connection ------------------------------------------------------------


async def test_a_pipelined_refusal_after_a_relayed_answer_stays_a_refusal(
    php: Served, start: Start
) -> None:
    """A small CRM answer (Relayed, head and body in one write) and a request the rule
    refuses, written together: two answers in order, the CRM ran the first only."""
    b = await signed_in(php, start)
    try:
        jar = cookie_header(b)
        one = f"GET /index.php?action=List HTTP/1.1\r\nHost: x\r\nCookie: {jar}\r\n\r\n"
        two = f"GET /admin.php HTTP/1.1\r\nHost: x\r\nCookie: {jar}\r\nConnection: close\r\n\r\n"
        before = len(php.app[SERVED])
        raw = await send_raw(b.gw.served.port, (one + two).encode())
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:200]
        _, _, second = raw.partition(b"List: every contact of the company")
        assert second.startswith(b"HTTP/1.1 403 Forbidden\r\n"), raw
        assert [s[1] for s in php.app[SERVED][before:]] == ["List"]
    finally:
        await b.close()


async def test_a_clients_request_id_is_not_echoed(php: Served, start: Start) -> None:
    """X-Request-Id from a peer that is no trusted proxy is replaced, not sent back
    (the Relayed head is built with the gateway's own id)."""
    b = await signed_in(php, start)
    try:
        jar = cookie_header(b)
        head = (
            f"GET /index.php?action=List HTTP/1.1\r\nHost: x\r\nCookie: {jar}\r\n"
            "X-Request-Id: injected-id\r\nConnection: close\r\n\r\n"
        )
        raw = await send_raw(b.gw.served.port, head.encode())
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:200]
        assert b"injected-id" not in raw
    finally:
        await b.close()


# -- the script's rule through dot segments (raw targets, no client normalising) ------------------


@pytest.mark.parametrize(
    "target",
    [
        "/admin.php/../admin.php",
        "/index.php/../admin.php",
        "/index.php/%2e%2e/admin.php",
        "/index.php/..%2fadmin.php",
        "/x/..%2fadmin.php",
        "/admin.php%2fx",
        "/admin.php%5cx",
        "/admin.php;x",
    ],
)
async def test_dot_segments_and_separators_never_reach_the_admin_script(
    php: Served, start: Start, target: str
) -> None:
    b = await signed_in(php, start)
    try:
        head = f"GET {target} HTTP/1.1\r\nHost: x\r\nCookie: {cookie_header(b)}\r\n"
        before = len(php.app[SERVED])
        raw = await send_raw(b.gw.served.port, (head + "Connection: close\r\n\r\n").encode())
        assert raw.split(b" ")[1] in (b"400", b"403"), (target, raw[:200])
        assert php.app[SERVED][before:] == [], target
    finally:
        await b.close()
