"""Outsider attacks (stop 28, last round) on the change since b3237e3, where earlier rounds did
not look: a known user's name that the CRM's database reads as another known user's (the
confusable refusal is asked only of a user the gateway knows nothing of), the CRM's front
controller reached at a second path, a policy file name that is not UTF-8 (the digest of
gateway.policy.inforce), and a signed-in request pipelined before an anonymous one on one
connection (gateway.web.inline runs both in the connection's task), headers an old framework
routes by.

Holes found, all mended in stop 28 but the first (a documented limit, a strict xfail): bjørn,
enrolled, types his own name with bjorn's password and gets
bjorn's CRM session with his own code; `/public/index.php/login` is the login to a Laravel
CRM whose project folder is the web root, unwatched; a policy file named in bytes that are not
UTF-8 makes every policy reload raise, so no later edit, not even a tightening, takes effect;
path rules in a file whose name holds a backslash are dropped from the policy-in-force note,
so a cut the running gateway holds back is served by one started after; X-Original-URL and
X-Rewrite-URL reach the CRM, which an old framework routes instead of the path judged.
What held: an encoded slash in the login, an enrolment page opened before the user enrolled,
an anonymous request pipelined after a signed-in one.
Real gateway, stand-in CRMs, real TOTP codes.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

import pytest
from aiohttp import web

from tests.conftest import GatewayFactory, Served, send_raw, serve_handler
from tests.flows.test_case_insensitive_paths import status_of
from tests.flows.test_login_in_form import SERVED, php  # noqa: F401 (the fixture)
from tests.flows.test_path_info_rules import signed_in
from tests.flows.test_stop27_outsider_attacks import cookie_header
from tests.flows.test_stop28_outsider_login_parsing import (
    FORM,
    LOGINS,
    PATH_LOGIN,
    POLICY,
    Handler,
    framework_crm,
    laravel_input,
)
from tests.policy.test_live import FULL, edit, guard, status
from tests.signin_kit import Browser, Start, audit_trail

# -- a known user's spelling the CRM reads as another known user -----------------------------

# Two people, two CRM rows, one reading under a Unicode collation (`ø` is `o` to MySQL's
# utf8mb4_unicode_ci and 0900_ai_ci, SQL Server's _CI_AI): a legacy CRM that looks its user up
# by name and password hash together (`WHERE user_name = ? AND user_hash = MD5(?)`, as
# SugarCRM and vtiger did) logs in whichever row the password fits.
TWO_ROWS = {"bjorn": "bjorn-demo", "bjørn": "bjoern-demo"}
BOTH = POLICY.replace("{alice: {}, bob: {}}", "{bjorn: {}, bjørn: {}}")


def unicode_ci(name: str) -> str:
    """A name as a Unicode collation at level 1 compares it: case and accents ignored, `ø`
    read as `o` (a base letter of its own to NFKD, so written out here)."""
    bare = unicodedata.normalize("NFKD", name.replace("ø", "o").replace("Ø", "O"))
    return "".join(c for c in bare if not unicodedata.combining(c)).upper()


def hash_checking_crm(users: Mapping[str, str]) -> Handler:
    """POST /login finds the row whose collated name and password both fit (302 and its
    session cookie, as framework_crm answers); every other page is its session user's."""

    async def crm(request: web.Request) -> web.StreamResponse:
        if (request.method, request.path) == ("POST", "/login"):
            form = dict(parse_qsl((await request.read()).decode()))
            typed, password = form.get("username", ""), form.get("password")
            rows = [u for u, p in users.items() if unicode_ci(u) == unicode_ci(typed)]
            found = [u for u in rows if users[u] == password]
            if found:
                request.app[LOGINS].append(found[0])
                answer = web.HTTPFound("/home")
                answer.set_cookie("crm_session", f"{found[0]}-session")
                raise answer
            return web.Response(text="wrong password")
        user = request.cookies.get("crm_session", "").removesuffix("-session")
        if user not in users:
            raise web.HTTPFound("/login")
        return web.Response(text=f"home of {user}")

    return crm


async def log_in(b: Browser, user: str, password: str) -> tuple[int, str]:
    body = f"username={quote(user)}&password={password}".encode()
    async with b.http.post(
        b.gw.url + "/login", data=body, headers={"Content-Type": FORM}, allow_redirects=False
    ) as r:
        return r.status, r.headers.get("Location", "")


async def enrolled(b: Browser, user: str) -> str:
    """`user` signs in with their own password and enrols an app: its secret."""
    assert await log_in(b, user, TWO_ROWS[user]) == (303, "/_gateway/enrol")
    secret, _ = await b.enrol()
    await b.confirm_codes()
    return secret


@pytest.mark.xfail(
    strict=True,
    reason="KNOWN LIMIT (docs/security.md): two known users whose names a collation reads alike (bjorn, bjørn) are told apart by the gateway; a CRM whose lookup reads them alike logs in whichever the password fits, behind the typed user's factor. Refusing both would lock out two real users on every CRM that tells them apart",
)
async def test_a_known_user_typing_his_name_with_anothers_password_gets_no_session_of_his(
    start: Start,
) -> None:
    """Safe: refused (user_confusable), or bjorn's own factor asked. Today: 303 to the
    challenge, bjørn's code passes, and /home is bjorn's."""
    crm = await serve_handler(hash_checking_crm(TWO_ROWS), LOGINS)
    gw = await start(crm.url, login=PATH_LOGIN, policy=BOTH)
    mallory, victim = Browser(gw), Browser(gw)
    try:
        own = await enrolled(mallory, "bjørn")
        await enrolled(victim, "bjorn")
        assert crm.app[LOGINS] == ["bjørn", "bjorn"]  # the set-up: two rows, two people
        await mallory.close()
        mallory = Browser(gw)
        gw.clock.advance(60)  # the enrolment's code is not reused
        said = await log_in(mallory, "bjørn", TWO_ROWS["bjorn"])
        if said == (303, "/_gateway/challenge"):
            await mallory.answer(mallory.code(own))
        _, home, _ = await mallory.get("/home")
        assert home != "home of bjorn", (said, crm.app[LOGINS])
    finally:
        await mallory.close()
        await victim.close()
        await crm.runner.cleanup()


# -- the front controller at a second path ---------------------------------------------------

ANYONE = POLICY.replace("[authenticated]", "[anyone]")


def project_root_laravel() -> Handler:
    """Laravel with its project folder as the web root (shared hosting's root .htaccess
    rewriting to public/): /public/index.php is reachable too, and Symfony's path info is
    taken from the script the URL names, so /public/index.php/login is its /login."""
    laravel = framework_crm(laravel_input)

    async def crm(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/public/index.php"):
            request = request.clone(rel_url=request.rel_url.path.removeprefix("/public"))
        return await laravel(request)

    return crm


async def test_the_login_through_a_second_copy_of_the_front_controller_is_watched(
    start: Start,
) -> None:
    """Safe: refused, or taken for the login (bob's check counted and audited)."""
    crm = await serve_handler(project_root_laravel(), LOGINS)
    b = Browser(await start(crm.url, login=PATH_LOGIN, policy=ANYONE))
    try:
        said, _, _ = await b.post("/public/index.php/login", {"username": "bob", "password": "x"})
        said, _, _ = await b.post(
            "/public/index.php/login", {"username": "bob", "password": "bob-demo"}
        )
        watched = await audit_trail(b.gw.served, "signin.crm_ok", "signin.crm_failed")
        bobs = [e.user for e in watched if e.user == "bob"]
        unwatched = crm.app[LOGINS] == ["bob"] and bobs == []
        assert said >= 400 or not unwatched, (said, crm.app[LOGINS], bobs)
    finally:
        await b.close()
        await crm.runner.cleanup()


@pytest.mark.parametrize("target", ["/index.php%2Flogin", "/index.php%2flogin/", "/login%2F"])
async def test_an_encoded_slash_in_the_login_is_refused(start: Start, target: str) -> None:
    """What held: Laravel's router reads the path info rawurldecoded (UriValidator), nginx
    splits the script on the decoded path: the gateway refuses %2F in any path (400)."""
    crm = await serve_handler(framework_crm(laravel_input), LOGINS)
    b = Browser(await start(crm.url, login=PATH_LOGIN, policy=ANYONE))
    try:
        said, _, _ = await b.post(target, {"username": "bob", "password": "bob-demo"})
        assert said == 400 and crm.app[LOGINS] == [], (said, unquote(target))
    finally:
        await b.close()
        await crm.runner.cleanup()


# -- a policy file whose name is not UTF-8 ---------------------------------------------------

CLOSED = FULL.replace("/public/**, allow: [anyone]}", "/public/**, allow: [role:admin]}")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    found = tmp_path / "policies"
    found.mkdir()
    (found / "policy.yaml").write_text(FULL)
    return found


async def test_the_set_up_a_tightening_edit_takes_effect(
    upstream: Served, start_gateway: GatewayFactory, folder: Path
) -> None:
    """The set-up of the next test: /public/ is anyone's, closed by an edit once looked at."""
    gw = await start_gateway(upstream.url, f"policies: {folder}\n")
    assert await status(gw, "/public/x") == 200
    edit(folder, CLOSED, 1)
    await guard(gw).look()
    await guard(gw).look()
    assert await status(gw, "/public/x") == 403


async def test_a_file_named_in_bytes_that_are_not_utf8_stops_no_later_edit(
    upstream: Served, start_gateway: GatewayFactory, folder: Path
) -> None:
    """Safe: the odd file loaded or refused (ConfigError, logged), and the tightening that
    follows in force. Before the mend: LivePolicy.look raised (the watcher's task ended)."""
    gw = await start_gateway(upstream.url, f"policies: {folder}\n")
    odd = folder / os.fsdecode(b"\xff-extra.yaml")
    odd.write_text('paths: [{path: "/nothing/**", allow: [anyone]}]\n')
    await guard(gw).look()
    await guard(gw).look()
    edit(folder, CLOSED, 1)
    await guard(gw).look()
    await guard(gw).look()
    assert await status(gw, "/public/x") == 403


# -- two requests on one connection, handlers run in the connection's task -------------------


async def test_an_anonymous_request_pipelined_after_alices_is_anonymous(
    php: Served,  # noqa: F811
    start: Start,
) -> None:
    """What held: alice's request and one without a cookie written together: the second is
    sent to sign in, the CRM ran the first only (nothing of alice's Who, user or decision
    carried over in the shared task)."""
    b = await signed_in(php, start)
    try:
        jar = cookie_header(b)
        one = f"GET /index.php?action=List HTTP/1.1\r\nHost: x\r\nCookie: {jar}\r\n\r\n"
        two = "GET /index.php?action=List HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ran = len(php.app[SERVED])
        raw = await send_raw(b.gw.served.port, (one + two).encode())
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:200]
        _, _, second = raw.partition(b"List: every contact of the company")
        assert status_of(second) in (302, 303, 401, 403), second[:300]
        assert b"alice" not in second, second[:300]
        assert len(php.app[SERVED]) == ran + 1
    finally:
        await b.close()


# -- a factor enrolled between the password and the enrolment --------------------------------


async def test_an_enrolment_page_opened_before_the_user_enrolled_adds_no_second_app(
    start: Start,
) -> None:
    """What held: someone with alice's password alone opens the enrolment page (she had no
    factor when the CRM took the password: facts read then), alice enrols in her own browser,
    then the first page's form is sent: no app is added and no session of hers comes back."""
    crm = await serve_handler(framework_crm(laravel_input), LOGINS)
    gw = await start(crm.url, login=PATH_LOGIN, policy=POLICY)
    thief, alice = Browser(gw), Browser(gw)
    try:
        body = "username=alice&password=alice-demo"
        for b in (thief, alice):
            async with b.http.post(
                gw.url + "/login", data=body, headers={"Content-Type": FORM}, allow_redirects=False
            ) as r:
                assert (r.status, r.headers.get("Location")) == (303, "/_gateway/enrol")
        said, page, _ = await thief.get("/_gateway/enrol")
        assert said == 200
        await alice.enrol()
        await alice.confirm_codes()
        gw.clock.advance(60)
        key = page.split('id="secret-key"><code>')[1].split("</code>")[0].replace(" ", "")
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        said, _, _ = await thief.post(
            "/_gateway/enrol", {"csrf": csrf, "name": "Mine", "code": thief.code(key)}
        )
        _, home, _ = await thief.get("/home")
        assert home != "home of alice", said
        added = await audit_trail(gw.served, "enrol.completed")
        assert len(added) == 1, added
    finally:
        await thief.close()
        await alice.close()
        await crm.runner.cleanup()


# -- a policy file whose name the note drops -------------------------------------------------

BODY, _, RULES = FULL.partition("paths:\n")
BACKSLASHED = "rules\\main.yml"  # one file on Linux (inforce.decode dropped it before the mend)


@pytest.mark.parametrize(
    "name",
    [
        "rules-main.yml",  # what held: the same steps with a plain name
        BACKSLASHED,
    ],
)
async def test_path_rules_moved_to_another_file_then_cut_are_held_back_at_a_start(
    upstream: Served, start_gateway: GatewayFactory, folder: Path, name: str
) -> None:
    """Safe: the second gateway holds the cut back too (403), as the first does."""
    first = await start_gateway(upstream.url, f"policies: {folder}\n")
    (folder / name).write_text("paths:\n" + RULES)
    edit(folder, BODY, 1)  # the same policy in two files: loaded, and recorded in the note
    await guard(first).look()
    await guard(first).look()
    assert any("main.yml" in str(r.where) for r in guard(first).policy.paths)
    (folder / name).unlink()
    edit(folder, BODY + "paths:\n" + '  - {path: "/**", allow: [anyone]}\n', 2)
    await guard(first).look()
    await guard(first).look()
    assert await status(first) == 403  # held back while running
    later = await start_gateway(upstream.url, f"policies: {folder}\n")
    assert await status(later) == 403


# -- a header that tells an old framework another path ---------------------------------------

RAN = web.AppKey("ran", list[str])  # the path each request ran as, to the CRM


async def zend_one(request: web.Request) -> web.StreamResponse:
    """A CRM on Zend Framework 1 (or Symfony before 2.8.44/3.4.14, Drupal 7 before
    SA-CORE-2018-005): the path it routes is X-Original-URL or X-Rewrite-URL when a request
    has one (IIS's URL Rewrite headers, believed from any client: CVE-2018-14773, ZF2018-01)."""
    ran = request.headers.get("X-Original-URL") or request.headers.get("X-Rewrite-URL")
    request.app[RAN].append(ran or request.path)
    return web.Response(text=f"ran {ran or request.path}")


@pytest.mark.parametrize("header", ["X-Original-URL", "X-Rewrite-URL"])
async def test_a_header_naming_another_path_does_not_reach_the_crm(
    start_gateway: GatewayFactory, folder: Path, header: str
) -> None:
    """Safe: refused, or the CRM runs the path the rule judged (/public/x, anyone's), never
    /admin/users (role admin only)."""
    crm = await serve_handler(zend_one, RAN)
    try:
        gw = await start_gateway(crm.url, f"policies: {folder}\n")
        assert await status(gw) == 403  # the set-up: /admin/users is closed to anyone
        raw = await send_raw(
            gw.port,
            f"GET /public/x HTTP/1.1\r\nHost: x\r\n{header}: /admin/users\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert "/admin/users" not in crm.app[RAN], (crm.app[RAN], raw[:200])
    finally:
        await crm.runner.cleanup()
