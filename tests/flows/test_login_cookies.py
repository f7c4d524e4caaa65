"""The CRM's login fields in cookies: PHP without a php.ini (request_order unset, as in the
official Docker images) builds $_REQUEST from the query, the form and then the cookies, the
cookies winning. `Cookie: action=Login` makes any form to /index.php a login the gateway does
not watch; `Cookie: username=bob` on the watched login logs bob in while the gateway asks
for the form's user's code. Both are refused before the CRM. Real gateway, a stand-in PHP CRM
reading $_REQUEST so, real TOTP codes."""

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
from tests.signin_kit import Browser, Start, audit_trail

PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo"}
LOGINS = web.AppKey("logins", list[tuple[str, bool]])  # (user, right password) checked


async def egpcs_crm(request: web.Request) -> web.StreamResponse:
    """$_REQUEST as PHP builds it without a php.ini: query, form, then cookies, the later
    winning."""
    fields = dict(parse_qsl(request.query_string, keep_blank_values=True))
    if request.method == "POST":
        fields |= {k: str(v) for k, v in (await request.post()).items()}
    fields |= dict(request.cookies)
    if fields.get("action") == "Login":
        user = fields.get("username", "")
        right = PASSWORDS.get(user) == fields.get("password")
        request.app[LOGINS].append((user, right))
        if right:
            answer = web.HTTPFound("/index.php?action=List")
            answer.set_cookie("PHPSESSID", f"{user}-session")
            raise answer
        return web.Response(text="wrong password")
    return web.Response(text=f"{fields.get('action', 'List')}: the list")


@pytest.fixture
async def php() -> AsyncIterator[Served]:
    served = await serve_handler(egpcs_crm, LOGINS)
    yield served
    await served.runner.cleanup()


FORM = "Content-Type: application/x-www-form-urlencoded\r\n"


async def post(port: int, target: str, body: bytes, cookie: str) -> bytes:
    """A raw form POST (aiohttp's client would not send these cookies as written)."""
    head = f"POST {target} HTTP/1.1\r\nHost: crm\r\n{FORM}Content-Length: {len(body)}\r\n"
    head += f"Cookie: {cookie}\r\nConnection: close\r\n\r\n"
    return await send_raw(port, head.encode() + body)


@pytest.mark.parametrize(
    "cookie", ["action=Login", "ACTION=login", "action%5B%5D=Login", "x=1; action=Login"]
)
async def test_a_cookie_naming_the_login_is_refused(php: Served, start: Start, cookie: str) -> None:
    """Anonymous, a form with bob's name and a guess to /index.php?action=List, the login's
    pair in a cookie: 400 login_ambiguous, never at the CRM."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    answer = await post(
        gw.served.port, "/index.php?action=List", b"username=bob&password=x", cookie
    )
    assert status_of(answer) == 400 and b"login_ambiguous" in answer, answer[:300]
    assert php.app[LOGINS] == []
    [refused] = await audit_trail(gw.served, "signin.refused")
    assert refused.reason == "login_ambiguous"


async def test_a_cookie_naming_another_pair_goes_on(php: Served, start: Start) -> None:
    """A cookie `action=List` (no login), and cookies of any other name: the form goes."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    answer = await post(gw.served.port, "/index.php", b"action=Save", "action=List; theme=dark")
    assert status_of(answer) == 200, answer[:300]
    answer = await post(gw.served.port, "/index.php", b"action=Save", "theme=dark")
    assert status_of(answer) == 200 and answer.endswith(b"Save: the list")


async def test_a_cookie_naming_another_user_on_the_login_is_refused(
    php: Served, start: Start
) -> None:
    """The watched login itself, the form naming mallory, a cookie naming bob with his
    password: the CRM would log bob in while the gateway asks for mallory's code. 400."""
    gw = await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY)
    body = b"username=mallory&password=mallory-pw"
    answer = await post(
        gw.served.port, "/index.php?action=Login", body, "username=bob; password=bob-demo"
    )
    assert status_of(answer) == 400 and b"login_ambiguous" in answer, answer[:300]
    assert php.app[LOGINS] == []


async def test_a_cookie_naming_the_forms_own_user_is_no_obstacle(php: Served, start: Start) -> None:
    """A CRM that remembers the last user name in a cookie: the same user as the form's
    signs in as ever, held for the second factor."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        b.jar.update_cookies({"username": "alice"})
        status, _, r = await b.post(
            "/index.php?action=Login", {"username": "alice", "password": "alice-demo"}
        )
        assert (status, r.headers.get("Location")) == (303, "/_gateway/enrol")
        assert php.app[LOGINS] == [("alice", True)]
    finally:
        await b.close()


async def test_the_forward_auth_endpoint_refuses_a_cookie_naming_the_login(
    php: Served, start: Start
) -> None:
    """Asked as nginx asks about `GET /index.php` with `Cookie: action=Login` (a route
    that sent the login's path past the gateway's proxy): refused, login_not_proxied."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY, extra=FORWARD_AUTH)
    said = await ask_endpoint(gw, "/index.php", "GET", "Cookie: action=Login\r\n")
    assert status_of(said) == 403 and b"login_not_proxied" in said, said[:300]
    said = await ask_endpoint(gw, "/index.php", "GET", "Cookie: action=List\r\n")
    assert status_of(said) == 200, said[:300]
