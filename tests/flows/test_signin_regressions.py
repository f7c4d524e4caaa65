"""One regression test (or a few) per finding of the sign-in security review, through the real
gateway with real TOTP codes and a fake clock. Each section names the finding it pins:

a. a CRM login made to look failed released the CRM's session cookie without the factor;
b. a full gateway session forwarded any CRM session cookie, also another user's;
c. an enrolled `required_from` user could skip the challenge before the date;
d. concurrent wrong codes and passwords were all checked, past the limits;
e. naming a user at the login form from one address locked them out everywhere;
f. a request in flight at logout saved the session back into existence;
g. an accented spelling of a name was a second, unenrolled identity at an accent-blind CRM;
h. every anonymous view of the gateway's own login page stored a session;
i. odd request bodies were answered 500.
"""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.crypto import hash_password
from gateway.demo.crm import STATE
from gateway.factors import totp
from gateway.stores.memory import MemorySharedStore
from gateway.web.keys import SHARED
from tests.conftest import AppStarter, Served
from tests.signin_kit import (
    ARRIVED,
    CRM_COOKIE,
    DEMO_LOGIN,
    DEMO_POLICY,
    GATEWAY_COOKIE,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    at_the_challenge,
    challenge_csrf,
    enrolled,
    field,
    gateway_in_front,
    noted_crm,
    posts_to_login,
    set_cookie_names,
    wrong_codes,
)

LOGIN_FORM_COOKIE = "crm_gateway_login"
USER_FAILURES = 5  # the default limits.user_failures


# -- fixtures and steps ------------------------------------------------------------------------


# The demo CRM noting each request in app[ARRIVED], and a gateway in front of it.
crm = pytest.fixture(name="crm")(noted_crm)
gw = pytest.fixture(name="gw")(gateway_in_front)


async def crm_login_response(
    b: Browser, user: str, password: str, next_path: str = "/contacts"
) -> tuple[int, str, aiohttp.ClientResponse]:
    """The demo CRM's form as posted through the gateway, whatever the answer."""
    return await b.post("/login", await b.crm_login_form(user, password, next_path))


async def shows(gw: SignInGateway, headers: dict[str, str], path: str = "/contacts") -> str:
    """The page a browser sending exactly these headers gets (no redirects followed)."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw,
        raw.get(gw.url + path, headers=headers, allow_redirects=False) as r,
    ):
        text = await r.text()
        return f"{r.status} {r.headers.get('Location', '')} {text}"


# -- a. a login that looks failed --------------------------------------------------------------

FAILURE_LOCATION_LOGIN = DEMO_LOGIN.replace(
    "cookie: crm_session}", "cookie: crm_session, failure_location: /login}"
)


async def test_a_crm_login_that_looks_failed_hands_the_browser_no_crm_session_cookie(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """The CRM signs alice in but redirects to `/login?x` (the posted `next`): the gateway
    reads that as a failed login and relays it, without the CRM's session cookie."""
    gw = await start(crm.url, login=FAILURE_LOCATION_LOGIN)
    await enrolled(browsers(gw))
    logins = crm.app[STATE].logins
    attacker = browsers(gw)  # knows alice's password only

    status, _, r = await crm_login_response(attacker, "alice", "alice-demo", "/login?x")

    assert crm.app[STATE].logins == logins + 1  # the CRM did accept the password
    assert (status, r.headers["Location"]) == (302, "/login?x")  # relayed as a failure
    assert CRM_COOKIE not in set_cookie_names(r)
    assert attacker.cookie(CRM_COOKIE) is None
    status, html, r = await attacker.get("/contacts")
    assert (status, r.headers.get("Location")) == (302, "/login?next=/contacts")
    assert "Log out alice" not in html


async def test_a_signed_in_user_posting_anothers_password_to_a_failure_location_stays_themself(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    gw = await start(crm.url, login=FAILURE_LOCATION_LOGIN)
    await enrolled(browsers(gw))
    carol = browsers(gw)  # optional, no authenticator: straight in
    assert await carol.crm_login("carol", "carol-demo") == "/contacts"
    status, html, _ = await carol.get("/contacts")
    assert status == 200
    assert "Log out carol" in html

    status, _, r = await crm_login_response(carol, "alice", "alice-demo", "/login?x")

    assert (status, r.headers["Location"]) == (302, "/login?x")
    assert CRM_COOKIE not in set_cookie_names(r)
    status, html, _ = await carol.get("/contacts")
    assert "Log out alice" not in html
    assert status == 200
    assert "Log out carol" in html


# -- b. the CRM session cookie is bound to the gateway session ---------------------------------


async def test_a_copy_of_another_users_crm_cookie_inside_ones_own_session_is_dropped(
    crm: Served, gw: SignInGateway, browsers: Browsers
) -> None:
    alice = browsers(gw)
    await enrolled(alice)
    carol = browsers(gw)
    assert await carol.crm_login("carol", "carol-demo") == "/contacts"
    alices, carols = alice.cookie(CRM_COOKIE), carol.cookie(CRM_COOKIE)
    assert alices
    assert carols
    own = f"{GATEWAY_COOKIE}={carol.cookie(GATEWAY_COOKIE)}"

    page = await shows(gw, {"Cookie": f"{own}; {CRM_COOKIE}={alices}"})
    assert page.startswith("302 /login")  # the CRM saw no session at all
    assert CRM_COOKIE not in crm.app[ARRIVED][-1].cookies

    for both in (
        f"{CRM_COOKIE}={alices}; {CRM_COOKIE}={carols}",
        f"{CRM_COOKIE}={carols}; {CRM_COOKIE}={alices}",
    ):
        page = await shows(gw, {"Cookie": f"{own}; {both}"})
        assert page.startswith("200 ")
        assert "Log out carol" in page
        assert "Log out alice" not in page
        assert crm.app[ARRIVED][-1].cookies[CRM_COOKIE] == carols

    # The value released to carol's session is forwarded as before.
    page = await shows(gw, {"Cookie": f"{own}; {CRM_COOKIE}={carols}"})
    assert "Log out carol" in page


ROTATING = web.AppKey("rotating_sessions", dict[str, str])


async def _rotating_login(request: web.Request) -> web.Response:
    form = await request.post()
    user = str(form.get("username", ""))
    if form.get("password") != f"{user}-pw":
        return web.Response(text="wrong password")
    token = secrets.token_urlsafe(16)
    request.app[ROTATING][token] = user
    response = web.Response(status=302, headers={"Location": "/whoami"})
    response.set_cookie(CRM_COOKIE, token, path="/", httponly=True)
    return response


async def _rotate(request: web.Request) -> web.Response:
    """A new session id for the same user (as CRMs do on a privilege change); the old id
    keeps working here, so only the gateway can make a difference to it."""
    sessions = request.app[ROTATING]
    user = sessions.get(request.cookies.get(CRM_COOKIE, ""))
    if user is None:
        return web.Response(status=403, text="nobody")
    token = secrets.token_urlsafe(16)
    sessions[token] = user
    response = web.Response(text=f"rotated for {user}")
    response.set_cookie(CRM_COOKIE, token, path="/", httponly=True)
    return response


async def _whoami(request: web.Request) -> web.Response:
    user = request.app[ROTATING].get(request.cookies.get(CRM_COOKIE, ""))
    return web.Response(text=user or "nobody")


def rotating_crm() -> web.Application:
    app = web.Application()
    app[ROTATING] = {}
    app.router.add_post("/login", _rotating_login)
    app.router.add_get("/rotate", _rotate)
    app.router.add_get("/whoami", _whoami)
    return app


async def test_a_crm_session_cookie_rotated_on_a_signed_in_request_keeps_working(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    crm = await start_app(rotating_crm())
    gw = await start(crm.url)
    b = browsers(gw)
    status, _, r = await b.post("/login", {"username": "carol", "password": "carol-pw"})
    assert (status, r.headers["Location"]) == (303, "/whoami")  # optional: straight in
    first = b.cookie(CRM_COOKIE)
    assert first
    assert (await b.get("/whoami"))[1] == "carol"

    status, text, r = await b.get("/rotate")
    assert (status, text) == (200, "rotated for carol")
    second = b.cookie(CRM_COOKIE)
    assert second
    assert second != first

    assert (await b.get("/whoami"))[1] == "carol"  # the new value passes
    assert (await b.get("/whoami"))[1] == "carol"  # and goes on passing
    # The binding followed the rotation: the old value is no longer this session's.
    own = f"{GATEWAY_COOKIE}={b.cookie(GATEWAY_COOKIE)}"
    assert (await shows(gw, {"Cookie": f"{own}; {CRM_COOKIE}={first}"}, "/whoami")).endswith(
        "nobody"
    )


# -- c. skipping the challenge -----------------------------------------------------------------

LATER = "{required_from: 2030-01-01}"  # the fake clock stands in January 2027
LATER_POLICY = DEMO_POLICY.replace(
    "bob: {interval: 1d}", f"bob: {{interval: 1d, enforcement: {LATER}}}"
).replace("dave: {enforcement: {required_from: 2027-01-15}}", f"alice: {{enforcement: {LATER}}}")


async def test_an_enrolled_user_cannot_skip_the_challenge_before_their_date(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    gw = await start(crm.url, policy=LATER_POLICY)
    owner = browsers(gw)
    assert await owner.crm_login("alice", "alice-demo") == "/_gateway/enrol"
    await owner.enrol()  # enrolled of her own accord, before she has to
    await owner.confirm_codes()
    gw.clock.advance(3600)
    attacker = browsers(gw)  # alice's password only
    assert await attacker.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    csrf = await challenge_csrf(attacker)

    status, _, r = await attacker.post("/_gateway/skip", {"csrf": csrf})

    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    assert set_cookie_names(r) == set()
    assert attacker.cookie(CRM_COOKIE) is None
    status, html, _ = await attacker.get("/contacts")
    assert status == 302
    assert "Log out alice" not in html
    assert CRM_COOKIE not in crm.app[ARRIVED][-1].cookies


async def test_an_unenrolled_user_may_still_postpone_enrolment_before_their_date(
    start: Start, crm: Served, browsers: Browsers
) -> None:
    """The control for the test above: skipping still works for whom it is meant."""
    gw = await start(crm.url, policy=LATER_POLICY)
    b = browsers(gw)
    assert await b.crm_login("bob", "bob-demo") == "/_gateway/enrol"
    _, html, _ = await b.get("/_gateway/enrol")

    status, _, r = await b.post("/_gateway/skip", {"csrf": field(html, "csrf")})

    assert (status, r.headers["Location"]) == (303, "/contacts")
    assert b.cookie(CRM_COOKIE)


# -- d. concurrent guesses ---------------------------------------------------------------------


async def test_of_200_concurrent_wrong_codes_at_most_the_user_limit_are_checked(
    gw: SignInGateway, browsers: Browsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    attacker, csrf, secret, _ = await at_the_challenge(gw, browsers, later=120)
    checked: list[str] = []
    matching_step = totp.matching_step

    def counted(secret: str, code: str, now: float) -> int | None:
        checked.append(code)
        return matching_step(secret, code, now)

    monkeypatch.setattr(totp, "matching_step", counted)

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=attacker.jar,
        headers={"Accept": "text/html"},
    ) as s:

        async def guess(code: str) -> int:
            form = {"csrf": csrf, "factor": "totp", "code": code}
            async with s.post(
                gw.url + "/_gateway/challenge", data=form, allow_redirects=False
            ) as r:
                await r.read()
                return r.status

        statuses = Counter(
            await asyncio.gather(*(guess(c) for c in wrong_codes(attacker, secret, 200)))
        )

    assert 1 <= len(checked) <= USER_FAILURES
    assert statuses[400] <= USER_FAILURES
    assert statuses[400] + statuses[429] == 200
    assert attacker.cookie(CRM_COOKIE) is None
    # The lockout is the first one (60 s), not one level per refused guess.
    gw.clock.advance(61)
    victim = browsers(gw)
    assert await victim.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    status, _, r = await victim.answer(victim.code(secret))
    assert (status, r.headers["Location"]) == (303, "/contacts")


async def test_of_200_concurrent_wrong_passwords_at_most_the_user_limit_reach_the_crm(
    crm: Served, gw: SignInGateway
) -> None:
    # One CRM login form (its CSRF cookie and token) reused by every guess, so each guess that
    # gets through is a real password check at the CRM.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s,
        s.get(gw.url + "/login") as r,
    ):
        html = await r.text()
        csrf_cookie = r.cookies["crm_csrf"].value
    token = field(html, "csrf_token")
    before = len(posts_to_login(crm))

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
    ) as s:

        async def guess(n: int) -> int:
            form = {"csrf_token": token, "username": "alice", "password": f"guess{n}"}
            async with s.post(
                gw.url + "/login",
                data=form,
                headers={"Cookie": f"crm_csrf={csrf_cookie}"},
                allow_redirects=False,
            ) as r:
                await r.read()
                return r.status

        statuses = Counter(await asyncio.gather(*(guess(n) for n in range(200))))

    reached = len(posts_to_login(crm)) - before
    assert 1 <= reached <= USER_FAILURES
    assert statuses[200] == reached  # the CRM's own "wrong password" page, relayed
    assert statuses[429] == 200 - reached


# -- e. no lockout by naming a user elsewhere --------------------------------------------------

PROXIED = "trusted_proxies: [127.0.0.1/32]\n"


def from_address(ip: str) -> dict[str, str]:
    return {"Accept": "text/html", "X-Forwarded-For": ip}


async def bare_login_posts(gw: SignInGateway, ip: str, user: str, times: int) -> list[int]:
    """No password, no CRM token: just the user's name, as anyone could post it."""
    statuses = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        for _ in range(times):
            async with s.post(
                gw.url + "/login",
                data={"username": user},
                headers={"X-Forwarded-For": ip},
                allow_redirects=False,
            ) as r:
                await r.read()
                statuses.append(r.status)
    return statuses


async def test_naming_a_user_at_the_login_form_from_one_address_does_not_lock_them_elsewhere(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    gw = await start(crm.url, extra=PROXIED)
    secret, _ = await enrolled(browsers(gw, headers=from_address("198.51.100.7")))
    gw.clock.advance(60)

    statuses = await bare_login_posts(gw, "203.0.113.66", "alice", USER_FAILURES + 1)

    assert statuses == [403] * USER_FAILURES + [429]  # counted, and locked, at that address
    alice = browsers(gw, headers=from_address("198.51.100.7"))
    assert await alice.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    status, _, r = await alice.answer(alice.code(secret))
    assert (status, r.headers["Location"]) == (303, "/contacts")


async def test_rounds_of_naming_a_user_from_fresh_addresses_never_lock_them_out(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """Each round would have doubled a lockout shared by every address."""
    gw = await start(crm.url, extra=PROXIED)
    await enrolled(browsers(gw, headers=from_address("198.51.100.7")))
    for k in range(8):
        gw.clock.advance(3601)
        await bare_login_posts(gw, f"203.0.113.{k}", "alice", USER_FAILURES)

    alice = browsers(gw, headers=from_address("198.51.100.7"))
    status, _, r = await crm_login_response(alice, "alice", "alice-demo")
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")


# -- f. no session comes back after logout -----------------------------------------------------


async def test_a_session_saved_after_it_was_ended_stays_ended(
    crm: Served, gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b)
    book = gw.signin.book
    cookie = b.cookie(GATEWAY_COOKIE)
    in_flight = await book.load(cookie)  # what a request still running holds
    assert in_flight is not None
    assert await book.save(in_flight) is True  # while it lives, saving works
    gw.clock.advance(400)
    _, html, _ = await b.get("/_gateway/account")
    status, _, _ = await b.post("/_gateway/logout", {"csrf": field(html, "csrf")})
    assert status == 303

    assert await book.save(in_flight) is False

    assert await book.load(cookie) is None
    page = await shows(gw, {"Cookie": f"{GATEWAY_COOKIE}={cookie}; {CRM_COOKIE}=x"})
    assert page.startswith("302 /login")


async def test_requests_in_flight_at_logout_do_not_bring_the_session_back(
    crm: Served, gw: SignInGateway, browsers: Browsers
) -> None:
    """A second holder of the cookies keeps requests running (each saves the session) while
    the owner signs out: afterwards the cookies open nothing."""
    owner = browsers(gw)
    await enrolled(owner)
    gw.clock.advance(400)  # past the step-up window: /_gateway/enrol saves the session
    _, html, _ = await owner.get("/_gateway/account")
    csrf = field(html, "csrf")
    stolen = {
        "Cookie": f"{GATEWAY_COOKIE}={owner.cookie(GATEWAY_COOKIE)}; "
        f"{CRM_COOKIE}={owner.cookie(CRM_COOKIE)}",
        "Accept": "text/html",
    }
    done = 0
    stop = asyncio.Event()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), headers=stolen) as s:

        async def pound() -> None:
            nonlocal done
            while not stop.is_set():
                async with s.get(gw.url + "/_gateway/enrol", allow_redirects=False) as r:
                    await r.read()
                done += 1

        tasks = [asyncio.create_task(pound()) for _ in range(8)]
        try:
            while done < 40:
                await asyncio.sleep(0.005)
            status, _, _ = await owner.post("/_gateway/logout", {"csrf": csrf})
            assert status == 303
            after = done
            while done < after + 40:
                await asyncio.sleep(0.005)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    page = await shows(gw, stolen)
    assert page.startswith("302 /login")
    assert "Log out alice" not in page
    assert CRM_COOKIE not in crm.app[ARRIVED][-1].cookies


# -- g. accented aliases -----------------------------------------------------------------------


def _accent_blind(name: str) -> str:
    """Like MySQL's utf8mb4_general_ci: case and accents do not count."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


COLLATING = web.AppKey("collating_sessions", dict[str, str])
COLLATING_USERS = {"alice": "alice-demo"}


async def _collating_login(request: web.Request) -> web.Response:
    form = await request.post()
    typed = _accent_blind(str(form.get("username", "")))
    row = next((u for u in COLLATING_USERS if _accent_blind(u) == typed), None)
    if row is None or COLLATING_USERS[row] != form.get("password"):
        return web.Response(text="wrong")
    token = secrets.token_urlsafe(16)
    request.app[COLLATING][token] = row
    response = web.Response(status=302, headers={"Location": "/home"})
    response.set_cookie(CRM_COOKIE, token, path="/")
    return response


async def _collating_home(request: web.Request) -> web.Response:
    user = request.app[COLLATING].get(request.cookies.get(CRM_COOKIE, ""))
    return web.Response(text=f"CRM home of {user}" if user else "not signed in")


def accent_blind_crm() -> web.Application:
    app = web.Application()
    app[COLLATING] = {}
    app.router.add_post("/login", _collating_login)
    app.router.add_get("/home", _collating_home)
    return app


@pytest.mark.parametrize("typed", ["alíce", "ÀLICE", "ali\u0301ce", "Ａlíce"])
async def test_an_accented_spelling_of_an_enrolled_users_name_goes_to_the_challenge(
    typed: str, start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    crm = await start_app(accent_blind_crm())
    gw = await start(crm.url)
    owner = browsers(gw)
    status, _, r = await owner.post("/login", {"username": "alice", "password": "alice-demo"})
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await owner.enrol()
    await owner.confirm_codes()
    gw.clock.advance(120)
    attacker = browsers(gw)

    status, _, r = await attacker.post("/login", {"username": typed, "password": "alice-demo"})

    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    session = await gw.signin.book.load(attacker.cookie(GATEWAY_COOKIE))
    assert session is not None
    assert session.user == "alice"
    status, _, r = await attacker.get("/_gateway/enrol")  # no enrolling a phone of one's own
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    assert (await attacker.get("/home"))[1] == "not signed in"
    assert len(await gw.signin.totp.authenticators("alice")) == 1


# -- h. the gateway's own login page stores nothing --------------------------------------------

GATEWAY_POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  remember_device: off
paths:
  - {path: "/**", allow: [authenticated]}
"""


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.yaml"
    path.write_text(f"dora: '{hash_password('dora-password')}'\n")
    return path


@pytest.fixture
async def own_login(upstream: Served, start: Start, users_file: Path) -> SignInGateway:
    login = f"login:\n  mode: gateway\n  users_file: {users_file}\n"
    return await start(upstream.url, login=login, policy=GATEWAY_POLICY)


def shared_entries(gw: SignInGateway) -> int:
    store = gw.served.app[SHARED]
    assert isinstance(store, MemorySharedStore)
    return len(store)


async def test_2000_anonymous_views_of_the_login_page_store_nothing(
    own_login: SignInGateway,
) -> None:
    before = shared_entries(own_login)
    url = own_login.url + "/_gateway/login?next=/" + "a" * 2000
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64), cookie_jar=aiohttp.DummyCookieJar()
    ) as s:

        async def view() -> int:
            async with s.get(url) as r:
                await r.read()
                return r.status

        statuses = Counter(await asyncio.gather(*(view() for _ in range(2000))))

    assert statuses == {200: 2000}
    assert shared_entries(own_login) == before


async def test_the_login_form_signs_in_with_its_double_submit_cookie(
    own_login: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(own_login)
    status, html, r = await b.get("/_gateway/login?next=/reports")
    assert status == 200
    assert LOGIN_FORM_COOKIE in set_cookie_names(r)
    nonce = b.cookie(LOGIN_FORM_COOKIE)
    assert nonce
    form = {
        "csrf": field(html, "csrf"),
        "next": field(html, "next"),
        "username": "dora",
        "password": "dora-password",
    }

    status, _, r = await b.post("/_gateway/login", form)

    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    assert GATEWAY_COOKIE in set_cookie_names(r)
    assert b.cookie(LOGIN_FORM_COOKIE) in (None, "")  # used up


async def test_a_login_post_without_the_form_cookie_or_with_a_wrong_token_is_refused(
    own_login: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(own_login)
    _, html, _ = await b.get("/_gateway/login")
    token = field(html, "csrf")
    other = browsers(own_login)
    _, other_html, _ = await other.get("/_gateway/login")
    credentials = {"username": "dora", "password": "dora-password", "next": "/"}

    # Without the cookie (a forged cross-site post carries the page's token at best).
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw,
        raw.post(
            own_login.url + "/_gateway/login",
            data={**credentials, "csrf": token},
            allow_redirects=False,
        ) as r,
    ):
        assert r.status == 403
        assert GATEWAY_COOKIE not in set_cookie_names(r)
    for wrong in ("", "x", token + "x", field(other_html, "csrf")):
        status, _, r = await b.post("/_gateway/login", {**credentials, "csrf": wrong})
        assert status == 403, wrong
        assert GATEWAY_COOKIE not in set_cookie_names(r)
    # The right token with its own cookie still passes afterwards.
    status, _, r = await b.post("/_gateway/login", {**credentials, "csrf": token})
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")


# -- i. odd bodies -----------------------------------------------------------------------------


async def post_raw(b: Browser, path: str, body: bytes, content_type: str) -> tuple[int, str]:
    async with b.http.post(
        b.gw.url + path,
        data=body,
        headers={"Content-Type": content_type},
        allow_redirects=False,
    ) as r:
        return r.status, await r.text()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"csrf={csrf}&factor=totp&code=\xff\xfe", "application/x-www-form-urlencoded"),
        (b"csrf={csrf}&factor=totp&code=%FF%FE", "application/x-www-form-urlencoded"),
        (b"csrf={csrf}&code=1", "application/x-www-form-urlencoded; charset=bogus"),
        (b"abc", "multipart/form-data"),
        (
            b"--zz\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz",
        ),
        (
            b'--zz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n--zz--\r\n',
            "multipart/form-data; boundary=zz",
        ),
        (b'{"csrf": "{csrf}"}', "application/json"),
    ],
    ids=[
        "raw-ff-bytes",
        "percent-ff",
        "charset-bogus",
        "multipart-no-boundary",
        "multipart-field-without-name",
        "multipart",
        "json",
    ],
)
async def test_an_odd_challenge_body_is_a_400_not_a_500(
    body: bytes, content_type: str, gw: SignInGateway, browsers: Browsers
) -> None:
    attacker, csrf, secret, _ = await at_the_challenge(gw, browsers, later=120)

    status, _ = await post_raw(
        attacker, "/_gateway/challenge", body.replace(b"{csrf}", csrf.encode()), content_type
    )

    assert status == 400
    # The session still works: the right code passes.
    status, _, r = await attacker.answer(attacker.code(secret))
    assert (status, r.headers["Location"]) == (303, "/contacts")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[" * 50000, 400),
        (b'{"username": ' * 5000, 400),
        (b'{"a":' * 12000, 400),
        (b'{"a":' * 30000, 413),  # over login.max_body (64 KiB)
    ],
    ids=["deep-array", "deep-username", "deep-object", "deep-object-too-large"],
)
async def test_a_deeply_nested_json_login_is_refused_not_a_500(
    body: bytes, expected: int, crm: Served, gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    before = len(posts_to_login(crm))

    status, _ = await post_raw(b, "/login", body, "application/json")

    assert status == expected
    assert len(posts_to_login(crm)) == before  # never forwarded to the CRM


async def test_an_odd_body_at_the_gateways_own_login_form_is_a_400(
    own_login: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(own_login)
    _, html, _ = await b.get("/_gateway/login")
    token = field(html, "csrf").encode()
    for body, content_type in (
        (b"csrf=" + token + b"&username=\xff&password=x", "application/x-www-form-urlencoded"),
        (b"csrf=" + token + b"&username=dora", "application/x-www-form-urlencoded; charset=bogus"),
        (b"abc", "multipart/form-data"),
    ):
        status, _ = await post_raw(b, "/_gateway/login", body, content_type)
        assert status == 400, (body, content_type)
