"""The second factor behind a Django-shaped CRM (tests/django_crm.py): `csrfmiddlewaretoken`
and a `csrftoken` cookie rotated at login, `sessionid`, a relative redirect to `next`, logout
by POST. Every sign-in flow through the real gateway, real TOTP codes and a fake clock."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import Served
from tests.django_crm import (
    CLIENTS,
    CLIENTS_ADD_PATH,
    CLIENTS_PATH,
    CSRF_COOKIE,
    CSRF_FIELD,
    LOGIN_ERROR,
    LOGIN_PATH,
    LOGOUT_PATH,
    SEEN,
    SESSION_COOKIE,
    SESSIONS,
)
from tests.signin_kit import (
    GATEWAY_COOKIE,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    field,
    set_cookie_names,
)

DJANGO_LOGIN = """\
login:
  mode: upstream
  path: /accounts/login/
  username_field: username
  success: {status: [302], cookie: sessionid}
  logout: {path: /accounts/logout/, method: POST}
"""


@pytest.fixture
async def gw(django: Served, start: Start) -> SignInGateway:
    return await start(django.url, login=DJANGO_LOGIN)


async def django_login(
    b: Browser, user: str, password: str, start: str = CLIENTS_PATH
) -> tuple[int, str, aiohttp.ClientResponse]:
    """As a person does it: open a CRM page, get sent to Django's login form, submit it."""
    status, _, r = await b.get(start)
    assert status == 302, status
    login_url = r.headers["Location"]
    assert login_url.startswith(f"{LOGIN_PATH}?next=")
    status, html, _ = await b.get(login_url)
    assert status == 200
    assert b.cookie(CSRF_COOKIE)  # Django's middleware set it on the login page
    return await b.post(
        LOGIN_PATH,
        {
            CSRF_FIELD: field(html, CSRF_FIELD),
            "username": user,
            "password": password,
            "next": field(html, "next"),
        },
    )


async def signed_in(b: Browser, user: str = "dora", password: str = "dora-pass") -> str:
    """First sign-in of `user`: Django's login, enrolment, codes saved. Returns the secret."""
    status, _, r = await django_login(b, user, password)
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    secret, _ = await b.enrol()
    r = await b.confirm_codes()
    assert r.headers["Location"] == CLIENTS_PATH
    return secret


async def test_first_sign_in_enrols_and_only_then_releases_sessionid_and_rotated_csrftoken(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    status, _, r = await django_login(b, "dora", "dora-pass")
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    # Django accepted the password (a session exists there) and rotated the CSRF token, but
    # neither cookie reached the browser: only the gateway's own.
    assert list(django.app[SESSIONS].values()) == ["dora"]
    assert set_cookie_names(r) == {GATEWAY_COOKIE}
    assert b.cookie(SESSION_COOKIE) is None
    before = b.cookie(CSRF_COOKIE)

    status, html, _ = await b.get("/_gateway/enrol")
    assert status == 200
    assert "<svg" in html  # the QR code, inline
    assert 'id="secret-key"' in html  # and the key in text for those who cannot scan
    _, codes = await b.enrol()
    assert len(codes) == 10
    assert b.cookie(SESSION_COOKIE) is None  # not before the codes are saved
    assert b.cookie(CSRF_COOKIE) == before

    r = await b.confirm_codes()
    assert r.headers["Location"] == CLIENTS_PATH
    assert {SESSION_COOKIE, CSRF_COOKIE, GATEWAY_COOKIE} <= set_cookie_names(r)
    assert b.cookie(SESSION_COOKIE) in django.app[SESSIONS]
    rotated = b.cookie(CSRF_COOKIE)
    assert rotated
    assert rotated != before
    status, html, _ = await b.get(CLIENTS_PATH)
    assert status == 200
    assert "Acme Corporation" in html
    assert "Log out dora" in html


async def test_next_from_the_login_page_is_where_the_factor_lands(
    browsers: Browsers, gw: SignInGateway
) -> None:
    first = browsers(gw)
    secret = await signed_in(first)  # enrolment lands on next (/clients/) too
    gw.clock.advance(60)
    b = browsers(gw)
    start = f"{CLIENTS_PATH}?page=2&sort=name"
    status, _, r = await django_login(b, "dora", "dora-pass", start=start)
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    status, _, r = await b.answer(b.code(secret))
    assert (status, r.headers["Location"]) == (303, start)
    status, html, _ = await b.get(start)
    assert status == 200
    assert "Acme Corporation" in html


async def test_django_never_receives_sessionid_from_a_browser_without_a_full_session(
    browsers: Browsers, gw: SignInGateway, django: Served
) -> None:
    victim = browsers(gw)
    await signed_in(victim)
    stolen = victim.cookie(SESSION_COOKIE)
    assert stolen in django.app[SESSIONS]
    seen = django.app[SEEN]
    start = len(seen)

    # 1. Anonymous, with the stolen cookie: Django sees nobody and asks for a login.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
        cookie = {"Cookie": f"{SESSION_COOKIE}={stolen}; {CSRF_COOKIE}=x"}
        async with raw.get(gw.url + CLIENTS_PATH, headers=cookie, allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"].startswith(LOGIN_PATH)
        # 2. A gateway cookie that does not verify changes nothing.
        forged = {"Cookie": f"{GATEWAY_COOKIE}=forged.value.x; {SESSION_COOKIE}={stolen}"}
        async with raw.get(gw.url + CLIENTS_PATH, headers=forged, allow_redirects=False) as r:
            assert r.status == 302

    # 3. The password passed but the factor is pending (the attacker knows dora's password).
    attacker = browsers(gw)
    gw.clock.advance(60)
    attacker.jar.update_cookies({SESSION_COOKIE: stolen})
    status, _, r = await django_login(attacker, "dora", "dora-pass")
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    attacker.jar.update_cookies({SESSION_COOKIE: stolen})
    status, _, r = await attacker.get(CLIENTS_PATH)
    assert status == 302
    status, _, _ = await attacker.get("/dashboard/")
    assert status == 302

    arrived = seen[start:]
    assert {(s.method, s.path) for s in arrived} >= {
        ("GET", CLIENTS_PATH),
        ("GET", LOGIN_PATH),
        ("POST", LOGIN_PATH),  # the login POST itself carried the planted cookie, too
        ("GET", "/dashboard/"),
    }
    assert all(SESSION_COOKIE not in s.cookies for s in arrived), arrived
    # The victim's own session still works: the gateway removes, it does not break.
    status, _, _ = await victim.get(CLIENTS_PATH)
    assert status == 200
    assert SESSION_COOKIE in seen[-1].cookies


async def test_a_second_sign_in_asks_for_the_code(
    browsers: Browsers, gw: SignInGateway, django: Served
) -> None:
    secret = await signed_in(browsers(gw))
    gw.clock.advance(60)
    b = browsers(gw)
    status, _, r = await django_login(b, "dora", "dora-pass", start=CLIENTS_ADD_PATH)
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    assert b.cookie(SESSION_COOKIE) is None
    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 200
    assert 'name="code"' in html
    status, _, r = await b.answer(b.code(secret))
    assert (status, r.headers["Location"]) == (303, CLIENTS_ADD_PATH)
    assert b.cookie(SESSION_COOKIE) in django.app[SESSIONS]


async def test_logout_by_post_ends_the_gateway_session_and_the_old_cookie_stops_working(
    browsers: Browsers, gw: SignInGateway, django: Served
) -> None:
    b = browsers(gw)
    await signed_in(b)
    old_gateway = b.cookie(GATEWAY_COOKIE)
    old_session = b.cookie(SESSION_COOKIE)
    assert old_gateway
    assert old_session
    status, html, _ = await b.get(CLIENTS_PATH)
    assert status == 200
    token = field(html, CSRF_FIELD)  # the nav's logout form, as Django renders it

    status, _, r = await b.post(LOGOUT_PATH, {CSRF_FIELD: token})
    assert (status, r.headers["Location"]) == (302, LOGIN_PATH)  # Django's own answer
    cleared = [c for c in r.headers.getall("Set-Cookie") if c.startswith(f"{GATEWAY_COOKIE}=")]
    assert len(cleared) == 1
    assert "Max-Age=0" in cleared[0]
    assert b.cookie(GATEWAY_COOKIE) is None
    assert await gw.signin.book.load(old_gateway) is None
    assert old_session not in django.app[SESSIONS]  # Django logged out, too

    # The copied cookies, replayed: the gateway treats them as nobody's.
    seen = django.app[SEEN]
    start = len(seen)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
        cookies = f"{GATEWAY_COOKIE}={old_gateway}; {SESSION_COOKIE}={old_session}"
        headers = {"Cookie": cookies, "Accept": "text/html"}
        async with raw.get(gw.url + CLIENTS_PATH, headers=headers, allow_redirects=False) as r:
            assert r.status == 302
        async with raw.get(
            gw.url + "/_gateway/account", headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 400
            assert "expired" in await r.text()
    assert [s.path for s in seen[start:]] == [CLIENTS_PATH]
    assert SESSION_COOKIE not in seen[start].cookies


async def test_adding_a_client_after_sign_in_passes_django_csrf_with_the_rotated_token(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    _, login_html, _ = await b.get(f"{LOGIN_PATH}?next={CLIENTS_PATH}")
    before = b.cookie(CSRF_COOKIE)
    await signed_in(b)
    status, html, _ = await b.get(CLIENTS_ADD_PATH)
    assert status == 200
    token = field(html, CSRF_FIELD)
    assert token == b.cookie(CSRF_COOKIE)
    assert token != before  # the token Django rotated at login reached the browser

    # The token from before the login no longer matches the browser's cookie: refused.
    status, html, _ = await b.post(
        CLIENTS_ADD_PATH, {CSRF_FIELD: field(login_html, CSRF_FIELD), "name": "Stale Ltd"}
    )
    assert status == 403
    assert "CSRF verification failed" in html

    status, _, r = await b.post(
        CLIENTS_ADD_PATH,
        {CSRF_FIELD: token, "name": "Hooli Inc", "email": "gavin@hooli.example"},
    )
    assert (status, r.headers["Location"]) == (302, CLIENTS_PATH)
    assert django.app[CLIENTS][-1] == {"name": "Hooli Inc", "email": "gavin@hooli.example"}
    assert all(c["name"] != "Stale Ltd" for c in django.app[CLIENTS])
    status, html, _ = await b.get(CLIENTS_PATH)
    assert "Hooli Inc" in html


async def test_a_wrong_django_password_is_relayed_as_its_page_without_a_gateway_session(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    status, html, r = await django_login(b, "dora", "not-her-password")
    assert status == 200
    assert LOGIN_ERROR in html
    assert 'value="dora"' in html  # Django's own form, refilled
    assert GATEWAY_COOKIE not in set_cookie_names(r)
    assert SESSION_COOKIE not in set_cookie_names(r)
    assert b.cookie(GATEWAY_COOKIE) is None
    assert django.app[SESSIONS] == {}
    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 400
    assert "expired" in html


async def test_a_login_naming_two_users_never_reaches_django(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    """Django's QueryDict takes the last `username`, aiohttp the first: refused (CR-4)."""
    b = browsers(gw)
    _, html, _ = await b.get(LOGIN_PATH)
    seen = django.app[SEEN]
    start = len(seen)
    token = field(html, CSRF_FIELD)
    body = f"{CSRF_FIELD}={token}&username=dora&password=dora-pass&username=emil"
    async with b.http.post(
        b.gw.url + LOGIN_PATH,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    ) as r:
        assert r.status == 400
    assert seen[start:] == []
    assert django.app[SESSIONS] == {}
