"""An outsider's attacks on the change since 5aba654 that the attack suites did not make: the
CRM's logout asked with a form that names another action (a PHP CRM reading $_REQUEST), the
CRM's login sent with `Expect: 100-continue`, in spellings the CRM's router may take for it,
and with another user named in its query (a CRM reading the query first, as ASP.NET's
Request[] does), a second user's login in a browser that knows the first user's code, a
session used again after the CRM's logout (with the memo and the caches primed), a half
session at the logout, HEAD and odd method spellings against a rule for GET, and wrong codes
sent from many addresses. Real gateway, the noting demo CRM or a small stand-in, raw sockets
where aiohttp's client would tidy what is sent. The three holes it found (the logout and
the login named in the query, passwords sent through the form) are mended; their tests
pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from aiohttp import web

from gateway.demo.crm import STATE
from tests.conftest import Served, send_raw, serve_handler
from tests.flows.test_paths_case_attacks import DONE, PHP_LOGIN, PHP_POLICY, due_session
from tests.signin_kit import (
    ARRIVED,
    CRM_COOKIE,
    GATEWAY_COOKIE,
    Browser,
    Browsers,
    Start,
    at_the_challenge,
    audit_trail,
    enrolled,
    noted_crm,
    set_cookie_names,
    wrong_codes,
)

crm = pytest.fixture(noted_crm)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def answer_cookies(answer: bytes) -> set[str]:
    """The names of the cookies a raw answer sets."""
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return {
        line.split(":", 1)[1].split("=", 1)[0].strip()
        for line in head.split("\r\n")[1:]
        if line.lower().startswith("set-cookie:")
    }


def crm_cookies_seen(crm: Served, since: int) -> list[tuple[str, str]]:
    """(method, path) of each request since `since` that reached the CRM with its session."""
    return [(a.method, a.path) for a in crm.app[ARRIVED][since:] if CRM_COOKIE in a.cookies]


# -- the logout, read in the query alone, while the CRM reads the body too -----------------------

PHP_SESSION = "PHPSESSID"


async def request_crm(request: web.Request) -> web.StreamResponse:
    """A PHP CRM that reads $_REQUEST['action'] (vtiger, SugarCRM and many more do): the
    query's `action`, then the form's, the form's winning (request_order "GP")."""
    action = ""
    for key, value in parse_qsl(request.query_string, keep_blank_values=True):
        if key == "action":
            action = value
    if request.method == "POST":
        form = await request.post()
        if "action" in form:
            action = str(form["action"])
    else:
        form = None
    signed_in = request.cookies.get(PHP_SESSION) == "alice-session"
    request.app[DONE].append((request.method, action, signed_in))
    if action == "Login" and form is not None:
        if (form.get("username"), form.get("password")) == ("alice", "alice-demo"):
            answer = web.HTTPFound("/index.php?action=List")
            answer.set_cookie(PHP_SESSION, "alice-session")
            raise answer
        return web.Response(text="wrong password")
    if not signed_in:
        raise web.HTTPFound("/index.php?action=Login")
    if action == "Logout":
        answer = web.HTTPFound("/index.php?action=Login")
        answer.del_cookie(PHP_SESSION)
        raise answer
    return web.Response(text=f"{action or 'List'}: every contact of the company")


@pytest.fixture
async def php() -> AsyncIterator[Served]:
    served = await serve_handler(request_crm, DONE)
    yield served
    await served.runner.cleanup()


async def due_php_session(php: Served, start: Start) -> Browser:
    """alice, signed in with her code eleven minutes ago (reverify: 10m): an export asked now
    is held for the code (test_paths_case_attacks.due_session)."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    await due_session(b, php)
    return b


@pytest.mark.parametrize("multipart", [False, True])
async def test_a_logout_whose_form_names_another_action_waits_for_the_due_code(
    php: Served, start: Start, multipart: bool
) -> None:
    """POST /index.php?action=Logout with `action=Export` in its form (urlencoded or
    multipart), by alice whose code is due: the query is the logout to the gateway, the form
    is an export to a CRM that reads $_REQUEST. It must wait for the code."""
    b = await due_php_session(php, start)
    try:
        before = len(php.app[DONE])
        form = aiohttp.FormData({"action": "Export"}, default_to_multipart=multipart)
        url = b.gw.url + "/index.php?action=Logout"
        async with b.http.post(url, data=form, allow_redirects=False) as r:
            status, text = r.status, await r.text()
        done = [d for d in php.app[DONE][before:] if d[2] and d[1] != "Logout"]
        assert done == [], (status, text[:200])
    finally:
        await b.close()


async def test_a_logout_with_an_empty_form_still_goes_as_the_logout(
    php: Served, start: Start
) -> None:
    """The control of the attack above: the logout itself goes without the code."""
    b = await due_php_session(php, start)
    try:
        before = len(php.app[DONE])
        status, _, _ = await b.post("/index.php?action=Logout", {})
        assert status == 302
        assert php.app[DONE][before:] == [("POST", "Logout", True)]
    finally:
        await b.close()


# -- the CRM's login: sent waiting for 100 Continue, and in other spellings -----------------------


async def test_a_login_that_waits_for_100_continue_is_watched_and_its_cookie_held(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """The new Expect handling reads the login's body only after its 100 Continue: the login
    must still be read, counted and its CRM cookie held for the second factor."""
    gw = await start(crm.url)
    b = browsers(gw)
    form = await b.crm_login_form("alice", "alice-demo")
    async with b.http.post(
        gw.url + "/login", data=form, expect100=True, allow_redirects=False
    ) as r:
        assert r.status == 303, await r.text()
        assert r.headers["Location"] == "/_gateway/enrol"
        assert CRM_COOKIE not in set_cookie_names(r)
    assert b.cookie(CRM_COOKIE) is None


LOGIN_SPELLINGS = [
    "/login",
    "/login/",
    "//login",
    "/./login",
    "/x/../login",
    "/%6Cogin",
    "/%6cogin",
    "/LOGIN",
    "/login?",
    "/login?next=/x",
    "/login/.",
    "/login%2F",
    "/login;x",
    "/login%3B",
    "/log%69n",
]


@pytest.mark.parametrize("target", LOGIN_SPELLINGS)
async def test_no_spelling_of_the_login_gets_the_crms_cookie_past_the_second_factor(
    crm: Served, start: Start, browsers: Browsers, target: str
) -> None:
    """alice's right password, posted byte for byte to a spelling of the login path: either
    the CRM never logs her in, or the gateway watched it and holds the CRM's cookie."""
    gw = await start(crm.url)
    b = browsers(gw)
    form = await b.crm_login_form("alice", "alice-demo")
    body = urlencode(form).encode()
    cookies = "; ".join(f"{c.key}={c.value}" for c in b.jar)
    head = (
        f"POST {target} HTTP/1.1\r\nHost: gw\r\nCookie: {cookies}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    logins = crm.app[ARRIVED].copy()
    answer = await send_raw(gw.served.port, head.encode() + body)
    assert CRM_COOKIE not in answer_cookies(answer), answer[:400]
    if status_of(answer) == 303:
        assert b"Location: /_gateway/enrol" in answer, answer[:400]
    assert len(crm.app[ARRIVED]) - len(logins) <= 1


# -- a second user's login in a browser that has the first one's code -----------------------------


async def test_a_second_login_cannot_be_finished_with_the_first_users_code(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """bob is signed in and has his authenticator; in the same browser he posts alice's
    password (which he learnt) and answers her challenge with his own code, then with a
    recovery code of his. Neither passes; her CRM session never reaches the CRM from him."""
    gw = await start(crm.url)
    await enrolled(browsers(gw))  # alice has a factor
    b = browsers(gw)
    bob_secret, bob_codes = await enrolled(b, "bob", "bob-demo")
    gw.clock.advance(60)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    since = len(crm.app[ARRIVED])
    status, _, r = await b.answer(b.code(bob_secret))
    assert status != 303 or r.headers["Location"].startswith("/_gateway/"), status
    assert CRM_COOKIE not in set_cookie_names(r)
    status, _, r = await b.answer(bob_codes[0], factor="recovery")
    assert status != 303 or r.headers["Location"].startswith("/_gateway/"), status
    status, html, _ = await b.get("/contacts")
    assert "Log out alice" not in html, (status, html[:300])
    sessions = crm.app[STATE].sessions
    carried = [a.cookies.get(CRM_COOKIE, "") for a in crm.app[ARRIVED][since:]]
    assert [c for c in carried if sessions.get(c) == "alice"] == []


# -- a session after the CRM's logout, with the memo and caches primed -----------------------------


async def test_a_session_used_again_after_the_crms_logout_takes_nothing_to_the_crm(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """alice reads her contacts twice (the decision memo, the cookie caches and the session
    record cache all know her), logs out through the CRM's own form, and her old cookies
    (gateway and CRM both, as a thief copied them before) are sent again: nothing reaches
    the CRM with her CRM session, on the proxy's first request or its second."""
    gw = await start(crm.url)
    b = browsers(gw)
    await enrolled(b)
    for _ in range(2):
        status, html, _ = await b.get("/contacts")
        assert status == 200 and "Log out alice" in html
    stolen = {
        GATEWAY_COOKIE: b.cookie(GATEWAY_COOKIE) or "",
        CRM_COOKIE: b.cookie(CRM_COOKIE) or "",
    }
    assert all(stolen.values())
    status, _, _ = await b.post("/logout", {})
    assert status == 302
    since = len(crm.app[ARRIVED])
    thief = browsers(gw)
    header = "; ".join(f"{k}={v}" for k, v in stolen.items())
    for path in ("/contacts", "/contacts", "/files", "/logout"):
        method = "POST" if path == "/logout" else "GET"
        async with thief.http.request(
            method, gw.url + path, headers={"Cookie": header}, allow_redirects=False
        ) as r:
            text = await r.text()
            assert "Log out alice" not in text
    assert crm_cookies_seen(crm, since) == []


async def test_a_half_session_takes_no_crm_session_through_pages_or_the_logout(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """alice's password passed, her code not: her pages and the CRM's logout (the one request
    that never waits for a code that is due) never reach the CRM with a CRM session, and the
    half session is no way in afterwards."""
    gw = await start(crm.url)
    half = (await at_the_challenge(gw, browsers)).browser
    assert half.cookie(CRM_COOKIE) is None
    since = len(crm.app[ARRIVED])
    for method, path in (("GET", "/contacts"), ("POST", "/logout"), ("GET", "/contacts")):
        async with half.http.request(method, gw.url + path, allow_redirects=False) as r:
            assert CRM_COOKIE not in set_cookie_names(r)
            assert "Log out alice" not in await r.text()
    assert crm_cookies_seen(crm, since) == []
    assert half.cookie(CRM_COOKIE) is None


# -- methods: a rule for GET holds for HEAD and for every spelling of GET --------------------------

GET_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
users: {alice: {roles: [admin]}}
paths:
  - {path: /contacts/**, methods: [GET], allow: [role:admin]}
  - {path: "/**", allow: [anyone]}
"""


@pytest.mark.parametrize(
    "method", ["HEAD", "GET", "get", "Get", "head", "GET ", "G%45T", "OPTIONS", "TRACE", "GEt"]
)
async def test_a_rule_for_get_is_not_stepped_round_by_another_method(
    crm: Served, start: Start, method: str
) -> None:
    """Nobody signed in asks /contacts, which only admins may GET: HEAD runs the CRM's GET
    handler (aiohttp's routes, Django, Rails and PHP all do), a lower-case `get` is GET to
    many frameworks. None of them reaches the CRM as a GET or HEAD of /contacts."""
    gw = await start(crm.url, policy=GET_POLICY)
    head = f"{method} /contacts HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    answer = await send_raw(gw.served.port, head.encode())
    reached = [
        a
        for a in crm.app[ARRIVED]
        if a.path.startswith("/contacts") and a.method.upper().strip() in ("GET", "HEAD")
    ]
    assert reached == [], answer[:300]


# -- code guesses from many addresses ----------------------------------------------------------


async def test_wrong_codes_from_five_addresses_lock_the_challenge(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """alice's password passed; five wrong codes for her challenge, each sent from another
    loopback address with the same session: the fifth locks her, and her right code, sent
    from a sixth address, no longer passes."""
    gw = await start(crm.url)
    challenged = await at_the_challenge(gw, browsers)
    b = challenged.browser
    session = b.cookie(GATEWAY_COOKIE)
    assert session
    cookie = f"{GATEWAY_COOKIE}={session}"
    last = 0
    wrong = wrong_codes(b, challenged.secret, 5)
    for i, code in [*enumerate(wrong), (5, b.code(challenged.secret))]:
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{10 + i}", 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            data = {"csrf": challenged.csrf, "factor": "totp", "code": code}
            async with http.post(
                gw.url + "/_gateway/challenge",
                data=data,
                headers={"Cookie": cookie, "Accept": "text/html"},
                allow_redirects=False,
            ) as r:
                last = r.status
                assert CRM_COOKIE not in set_cookie_names(r)
                if r.status == 303:
                    assert r.headers["Location"].startswith("/_gateway/"), r.headers["Location"]
    assert last == 429, last


# -- the login's user name in the query, where a CRM may read it first ---------------------------

SEEN = web.AppKey("seen", list[tuple[str, str]])  # (path, the CRM's user of the request)
PASSWORDS = {"bob": "bob-pw", "mallory": "mallory-pw"}


async def query_first_crm(request: web.Request) -> web.StreamResponse:
    """A CRM that reads a field as ASP.NET's Request["name"] does (and Flask's
    request.values): the query first, then the form."""
    user = str(request.cookies.get(CRM_COOKIE, "")).removesuffix("-session")
    request.app[SEEN].append((request.path, user))
    if request.path == "/login" and request.method == "POST":
        form = await request.post()
        name = request.query.get("username") or str(form.get("username", ""))
        if PASSWORDS.get(name) == form.get("password"):
            answer = web.HTTPFound("/contacts")
            answer.set_cookie(CRM_COOKIE, f"{name}-session")
            raise answer
        return web.Response(text="wrong password")
    if user not in PASSWORDS:
        raise web.HTTPFound("/login")
    return web.Response(text=f"the contacts of {user}")


@pytest.fixture
async def query_first() -> AsyncIterator[Served]:
    served = await serve_handler(query_first_crm, SEEN)
    yield served
    await served.runner.cleanup()


async def test_a_login_naming_another_user_in_its_query_is_not_finished_with_ones_own_code(
    query_first: Served, start: Start, browsers: Browsers
) -> None:
    """mallory, enrolled, knows bob's password but not his code: she posts a login whose
    query names bob and whose form names herself, and answers with her own code."""
    gw = await start(query_first.url)
    b = browsers(gw)
    form = {"username": "mallory", "password": "mallory-pw"}
    status, _, r = await b.post("/login", form)
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    secret, _ = await b.enrol()
    await b.confirm_codes()
    gw.clock.advance(60)
    status, _, r = await b.post("/login?username=bob", {**form, "password": "bob-pw"})
    if (status, r.headers.get("Location")) == (303, "/_gateway/challenge"):
        await b.answer(b.code(secret))
    status, text, _ = await b.get("/contacts")
    assert [p for p, user in query_first.app[SEEN] if user == "bob"] == [], (status, text)


async def test_a_login_with_the_user_only_in_its_form_is_challenged_as_that_user(
    query_first: Served, start: Start, browsers: Browsers
) -> None:
    """The control of the attack above: mallory's own login through the same CRM is hers."""
    gw = await start(query_first.url)
    b = browsers(gw)
    status, _, r = await b.post("/login", {"username": "mallory", "password": "mallory-pw"})
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await b.enrol()
    await b.confirm_codes()
    status, text, _ = await b.get("/contacts")
    assert (status, text) == (200, "the contacts of mallory")


# -- the PHP CRM's login named where $_REQUEST finds it, not where the gateway looks ---------------


PHP_OPEN_POLICY = PHP_POLICY.replace("[authenticated]", "[anyone]")


@pytest.mark.parametrize(
    ("query", "form"),
    [
        ("action=List&action=Login", {}),
        ("action=Login&action=Login", {}),
        ("action=List", {"action": "Login"}),
        ("", {"action": "Login"}),
    ],
)
async def test_the_crms_login_named_in_another_place_never_sets_its_cookie_unwatched(
    php: Served, start: Start, query: str, form: dict[str, str]
) -> None:
    """alice's right password, posted to /index.php with `action=Login` where a PHP CRM
    reading $_REQUEST finds it (the last of the query, or the form over the query): the
    gateway watches it and holds PHPSESSID, or it never reaches the browser."""
    gw = await start(php.url, login=PHP_LOGIN, policy=PHP_OPEN_POLICY)
    b = Browser(gw)
    try:
        fields = {**form, "username": "alice", "password": "alice-demo"}
        status, _, r = await b.post(f"/index.php?{query}", fields)
        assert PHP_SESSION not in set_cookie_names(r), (status, r.headers)
        assert b.cookie(PHP_SESSION) is None
    finally:
        await b.close()


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("action=Login", id="the-login-as-configured"),
        pytest.param("action=List", id="form-over-query"),
        pytest.param("", id="form-alone"),
    ],
)
async def test_every_password_the_crm_checks_is_counted(
    php: Served, start: Start, query: str
) -> None:
    """Three wrong passwords for alice, each posted to /index.php with `action=Login` in its
    form (what a PHP CRM reading $_REQUEST takes for its login): each reaches the CRM's
    password check, so each must be counted as a password failure."""
    gw = await start(php.url, login=PHP_LOGIN, policy=PHP_OPEN_POLICY)
    b = Browser(gw)
    try:
        for guess in ("one", "two", "three"):
            fields = {"action": "Login", "username": "alice", "password": guess}
            status, text, _ = await b.post(f"/index.php?{query}", fields)
            assert text == "wrong password", (status, text[:200])
        failed = await audit_trail(gw.served, "signin.crm_failed")
        assert [e.user for e in failed] == ["alice"] * 3
    finally:
        await b.close()
