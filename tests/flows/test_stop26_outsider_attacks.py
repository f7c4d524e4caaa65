"""Outsider attacks on the change since fe24c0b (stop 26): the CRM's login and logout read as a
PHP CRM reads them ($_REQUEST from the query, the form and the cookies, no php.ini), by any
method. The gateway watches the login only for login.method (POST); a PHP script runs its
login for a GET as well when it reads $_REQUEST, and a GET is where the gateway adopts a new
CRM session as a rotation. And a `#` in a query: the gateway reads past it and forwards the
target byte for byte, while many CRM servers end the query there (Apache's apr_uri_parse
gives PHP the query before it; aiohttp/yarl, as this stand-in, and urlsplit-based servers
too; nginx keeps it in $args).

Holes it found, all mended and tested here: a login by GET/HEAD in a session made alice bob at
the CRM; a GET/HEAD password guess, and one behind `#x`, went uncounted (and were passed by the
forward-auth endpoint); a logout behind `#` (`?x=#&action=Logout`) ran the CRM's default page
past a due code. A login named by another method is now 400 login_ambiguous (403
login_not_proxied at the endpoint), a `#` in a target 400 bad_request_target. Real gateway, a
stand-in PHP CRM, real TOTP codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from tests.conftest import Served, send_raw, serve_handler
from tests.flows.test_case_insensitive_paths import ask_endpoint, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_login_in_form import OPEN_POLICY
from tests.flows.test_paths_case_attacks import PHP_LOGIN, PHP_POLICY
from tests.signin_kit import GATEWAY_COOKIE, Browser, Start, audit_trail

PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo"}
CHECKED = web.AppKey("checked", list[tuple[str, str, bool]])  # (method, user, right password)
SERVED = web.AppKey("served", list[tuple[str, str, str]])  # (method, action, as whom)


async def request_crm(request: web.Request) -> web.StreamResponse:
    """$_REQUEST without a php.ini: query, form, cookies, the later winning; its login run
    for any method (a script that reads $_REQUEST['action'] does not look at the method)."""
    fields = dict(parse_qsl(request.query_string, keep_blank_values=True))
    if request.method == "POST":
        fields |= {k: str(v) for k, v in (await request.post()).items()}
    fields |= dict(request.cookies)
    action = fields.get("action", "List")
    if action == "Login":
        user = fields.get("username", "")
        right = PASSWORDS.get(user) == fields.get("password")
        request.app[CHECKED].append((request.method, user, right))
        if right:
            answer = web.HTTPFound("/index.php?action=List")
            answer.set_cookie("PHPSESSID", f"{user}-session")
            raise answer
        return web.Response(text="wrong password")
    session = request.cookies.get("PHPSESSID", "")
    whom = session.removesuffix("-session") if session.endswith("-session") else ""
    request.app[SERVED].append((request.method, action, whom))
    if not whom:
        raise web.HTTPFound("/index.php?action=Login")
    if action == "Logout":
        answer = web.HTTPFound("/index.php?action=Login")
        answer.del_cookie("PHPSESSID")
        raise answer
    return web.Response(text=f"{action}: signed in as {whom}")


@pytest.fixture
async def php() -> AsyncIterator[Served]:
    served = await serve_handler(request_crm, CHECKED, SERVED)
    yield served
    await served.runner.cleanup()


async def alice_signed_in(b: Browser, php: Served) -> None:
    """alice: her password at the watched login, enrolled, her codes saved; the CRM shows
    her own list."""
    status, _, r = await b.post(
        "/index.php?action=Login", {"username": "alice", "password": "alice-demo"}
    )
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await b.enrol()
    await b.confirm_codes()
    status, text, _ = await b.get("/index.php?action=List")
    assert (status, text) == (200, "List: signed in as alice"), text[:300]


# -- the login by GET: watched only for POST ----------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_login_by_get_in_a_session_does_not_make_its_user_another(
    php: Served, start: Start, method: str
) -> None:
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        await alice_signed_in(b, php)
        target = b.gw.url + "/index.php?action=Login&username=bob&password=bob-demo"
        async with b.http.request(method, target, allow_redirects=False) as r:
            await r.read()
        assert r.status == 400  # login_ambiguous: the login named where it is not watched
        assert [c[1] for c in php.app[CHECKED]] == ["alice"]  # bob's never ran
        _, text, _ = await b.get("/index.php?action=List")
        assert "bob" not in text, text[:300]
    finally:
        await b.close()


async def test_a_login_by_post_at_no_watched_spelling_is_not_adopted(
    php: Served, start: Start
) -> None:
    """The control: bob's login with its pair in a POST's form is the watched login (held
    for bob's code, alice's session no longer shown): never bob's CRM page."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        await alice_signed_in(b, php)
        await b.post("/index.php", {"action": "Login", "username": "bob", "password": "bob-demo"})
        _, text, _ = await b.get("/index.php?action=List")
        assert "signed in as bob" not in text, text[:300]
        assert [c[1] for c in php.app[CHECKED]] == ["alice", "bob"]
    finally:
        await b.close()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_password_guessed_by_get_is_counted_or_refused(
    php: Served, start: Start, method: str
) -> None:
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    for guess in ("a", "b", "c"):
        head = (
            f"{method} /index.php?action=Login&username=bob&password={guess} HTTP/1.1\r\n"
            "Host: crm\r\nConnection: close\r\n\r\n"
        )
        await send_raw(gw.served.port, head.encode())
    failed = await audit_trail(gw.served, "signin.crm_failed")
    assert php.app[CHECKED] == [] or len(failed) == 3, php.app[CHECKED]


async def test_a_crm_session_from_a_get_login_never_reaches_an_anonymous_browser(
    php: Served, start: Start
) -> None:
    """Held: the right password by GET, anonymous: the CRM's PHPSESSID is dropped."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    head = (
        "GET /index.php?action=Login&username=bob&password=bob-demo HTTP/1.1\r\n"
        "Host: crm\r\nConnection: close\r\n\r\n"
    )
    answer = await send_raw(gw.served.port, head.encode())
    assert b"PHPSESSID=bob" not in answer, answer[:400]


# -- cookies in two header lines, and the logout by another method ------------------------------


FORM = "Content-Type: application/x-www-form-urlencoded\r\n"


@pytest.mark.parametrize(
    "cookies", [["theme=dark", "action=Login"], ["action=List", "action=Login"]]
)
async def test_the_login_named_in_a_second_cookie_line_is_refused(
    php: Served, start: Start, cookies: list[str]
) -> None:
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = b"username=bob&password=x"
    head = f"POST /index.php?action=List HTTP/1.1\r\nHost: crm\r\n{FORM}"
    head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"Cookie: {c}\r\n" for c in cookies) + "Connection: close\r\n\r\n"
    answer = await send_raw(gw.served.port, head.encode() + body)
    assert status_of(answer) == 400 and b"login_ambiguous" in answer, answer[:300]
    assert php.app[CHECKED] == []


async def test_a_user_named_in_a_second_cookie_line_on_the_login_is_refused(
    php: Served, start: Start
) -> None:
    gw = await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY)
    body = b"username=alice&password=alice-demo"
    head = f"POST /index.php?action=Login HTTP/1.1\r\nHost: crm\r\n{FORM}"
    head += f"Content-Length: {len(body)}\r\nCookie: theme=dark\r\n"
    head += "Cookie: username=bob; password=bob-demo\r\nConnection: close\r\n\r\n"
    answer = await send_raw(gw.served.port, head.encode() + body)
    assert status_of(answer) == 400, answer[:300]
    assert php.app[CHECKED] == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT"])
async def test_the_logout_by_another_method_waits_for_the_due_code(
    php: Served, start: Start, method: str
) -> None:
    """logout: POST. The same target by another method, eleven minutes after alice's code
    (reverify 10m): held for the code, never at the CRM (a PHP logout runs for any method,
    so a GET taken for it would pass; it is not)."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        await alice_signed_in(b, php)
        b.gw.clock.advance(660)
        before = len(php.app[SERVED])
        async with b.http.request(
            method, b.gw.url + "/index.php?action=Logout", allow_redirects=False
        ) as r:
            await r.read()
        assert php.app[SERVED][before:] == [], r.status
        assert await b.gw.signin.book.load(b.cookie(GATEWAY_COOKIE) or "") is not None
    finally:
        await b.close()


@pytest.mark.parametrize(
    "target",
    [
        "/index.php/?action=Logout",
        "/index.php/x?action=Logout",
        "/index.php;x?action=Logout",
        "/?action=Logout",
        "/index.php?action=Logout&action=Export",
        "/index.php?action=Logout;action=Export",
        "/index.php?action=Logout&action%5B%5D=Export",
        "/index.php?action=Logout%00",
    ],
)
async def test_a_logout_in_another_spelling_waits_for_the_due_code(
    php: Served, start: Start, target: str
) -> None:
    """Path info, a directory index, `;` parameters, a second action: whatever the CRM runs
    them as, none of them is let past the due code as the logout."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        await alice_signed_in(b, php)
        b.gw.clock.advance(660)
        before = len(php.app[SERVED])
        async with b.http.post(b.gw.url + target, allow_redirects=False) as r:
            await r.read()
        assert [s for s in php.app[SERVED][before:] if s[1] != "Logout"] == [], r.status
        assert php.app[SERVED][before:] == [], (r.status, php.app[SERVED][before:])
    finally:
        await b.close()


async def test_the_forward_auth_endpoint_on_a_login_by_get(php: Served, start: Start) -> None:
    """The endpoint, asked about a GET of the login's target with the pair in its query and
    no session, under a rule open to anyone: a 200 lets nginx send the password to the CRM
    unwatched (the GET hole above); mended, it is refused as login_not_proxied is."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY, extra=FORWARD_AUTH)
    said = await ask_endpoint(gw, "/index.php?action=Login&username=bob&password=x", "GET")
    assert status_of(said) != 200, said[:300]


async def test_the_login_with_two_content_type_lines_is_not_read_as_the_other_type(
    php: Served, start: Start
) -> None:
    """A form naming alice under `Content-Type: application/json` then a form type: the
    gateway must not read one type while the CRM reads the other; refused, or read as the
    CRM reads it (alice's own password, held for her code as ever)."""
    gw = await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY)
    body = b"username=bob&password=bob-demo"
    head = "POST /index.php?action=Login HTTP/1.1\r\nHost: crm\r\n"
    head += f"Content-Type: application/json\r\n{FORM}Content-Length: {len(body)}\r\n"
    head += "Connection: close\r\n\r\n"
    answer = await send_raw(gw.served.port, head.encode() + body)
    assert b"PHPSESSID=bob" not in answer, answer[:400]
    assert status_of(answer) in (303, 400), answer[:300]
    if php.app[CHECKED]:  # the CRM read the form: the gateway held bob for his code
        [ok] = await audit_trail(gw.served, "signin.crm_ok")
        assert ok.user == "bob"


async def test_a_forwarded_address_from_an_untrusted_peer_is_not_counted_as_the_client(
    php: Served, start: Start
) -> None:
    """Five wrong passwords for bob, each with another X-Forwarded-For / Forwarded / X-Real-IP,
    from a peer no setting trusts: every failure is counted at the peer's own address."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    for n in range(5):
        body = f"username=bob&password=guess{n}".encode()
        head = f"POST /index.php?action=Login HTTP/1.1\r\nHost: crm\r\n{FORM}"
        head += f"Content-Length: {len(body)}\r\nX-Forwarded-For: 10.0.0.{n}\r\n"
        head += f"Forwarded: for=10.1.0.{n}\r\nX-Real-IP: 10.2.0.{n}\r\n"
        head += "Connection: close\r\n\r\n"
        await send_raw(gw.served.port, head.encode() + body)
    failed = await audit_trail(gw.served, "signin.crm_failed", "signin.locked")
    assert failed and {e.ip for e in failed} == {"127.0.0.1"}, failed


# -- the login's path in other spellings: every password the CRM checks is counted -------------


@pytest.mark.parametrize(
    "target",
    [
        "//index.php?action=Login",
        "/./index.php?action=Login",
        "/x/../index.php?action=Login",
        "/index.php/?action=Login",
        "/index.php/.?action=Login",
        "/index%2ephp?action=Login",
        "/index.php%2F?action=Login",
        "/?action=Login",
        "/index.php?action=List&action=Login",
        "/index.php?action=Login;x=1",
        "/index.php?%20action=Login",
    ],
)
async def test_a_password_the_crm_checks_in_any_spelling_is_counted(
    php: Served, start: Start, target: str
) -> None:
    """Anonymous, a rule open to anyone: bob's wrong password posted to a spelling of the
    login's target. Refused before the CRM, or counted (signin.crm_failed) when it gets
    there; never checked by the CRM uncounted."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = b"username=bob&password=guess"
    head = f"POST {target} HTTP/1.1\r\nHost: crm\r\n{FORM}Content-Length: {len(body)}\r\n"
    answer = await send_raw(gw.served.port, (head + "Connection: close\r\n\r\n").encode() + body)
    failed = await audit_trail(gw.served, "signin.crm_failed")
    assert len(php.app[CHECKED]) <= len(failed), (answer[:200], php.app[CHECKED])


# -- a `#` in the query: the CRM's server may end the query there (Apache, aiohttp) -------------


async def test_a_login_with_a_fragment_in_its_query_is_counted(php: Served, start: Start) -> None:
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = b"username=bob&password=guess"
    head = "POST /index.php?action=Login#x HTTP/1.1\r\nHost: crm\r\n"
    head += f"{FORM}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    await send_raw(gw.served.port, head.encode() + body)
    failed = await audit_trail(gw.served, "signin.crm_failed")
    assert len(php.app[CHECKED]) <= len(failed), php.app[CHECKED]


async def raw_in_session(b: Browser, method: str, target: str) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: crm\r\n"
    jar = "; ".join(f"{c.key}={c.value}" for c in b.jar)  # the CRM's own cookie, too
    head += f"Cookie: {jar}\r\nConnection: close\r\n\r\n"
    return await send_raw(b.gw.served.port, head.encode())


@pytest.mark.parametrize("target", ["/index.php?x=#&action=Logout", "/index.php?#&action=Logout"])
async def test_a_logout_behind_a_fragment_waits_for_the_due_code(
    php: Served, start: Start, target: str
) -> None:
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        await alice_signed_in(b, php)
        b.gw.clock.advance(660)
        before = len(php.app[SERVED])
        answer = await raw_in_session(b, "POST", target)
        served = php.app[SERVED][before:]
        assert [s for s in served if s[1] != "Logout"] == [], (answer[:200], served)
    finally:
        await b.close()


async def test_a_logout_as_written_passes_the_due_code_in_a_raw_request(
    php: Served, start: Start
) -> None:
    """The control for the test above: the same raw request without the fragment is the
    logout, at the CRM as the logout."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        await alice_signed_in(b, php)
        b.gw.clock.advance(660)
        before = len(php.app[SERVED])
        await raw_in_session(b, "POST", "/index.php?x=&action=Logout")
        assert php.app[SERVED][before:] == [("POST", "Logout", "alice")]
    finally:
        await b.close()


@pytest.mark.parametrize("user", ["alice", "bob"])
async def test_a_login_by_get_in_a_due_session_waits_for_the_code(
    php: Served, start: Start, user: str
) -> None:
    """Held: the GET login in a session whose code is due is held for the code like any other
    request; the CRM checks no password and serves nothing."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        await alice_signed_in(b, php)
        b.gw.clock.advance(660)
        checked, served = len(php.app[CHECKED]), len(php.app[SERVED])
        password = PASSWORDS[user]
        await b.get(f"/index.php?action=Login&username={user}&password={password}")
        assert (len(php.app[CHECKED]), len(php.app[SERVED])) == (checked, served)
    finally:
        await b.close()
