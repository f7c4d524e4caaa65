"""The Django-shaped CRM double on its own, without the gateway: CSRF, login, redirects, logout."""

from __future__ import annotations

import re
from http.cookies import Morsel, SimpleCookie

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.django_crm import (
    CLIENTS,
    CLIENTS_ADD_PATH,
    CLIENTS_PATH,
    CSRF_COOKIE,
    CSRF_FIELD,
    DASHBOARD_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    SEEN,
    SEEN_PATH,
    SESSION_COOKIE,
    SESSIONS,
    Seen,
    django_crm_app,
)

Client = TestClient[web.Request, web.Application]

BAD_LOGIN = "Please enter a correct username and password."
CSRF_FAILED = "CSRF verification failed"
DELETED_SESSION = 'sessionid=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/'


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(django_crm_app())  # its cookie jar accepts 127.0.0.1


def set_cookies(response: aiohttp.ClientResponse) -> dict[str, Morsel[str]]:
    parsed: dict[str, Morsel[str]] = {}
    for line in response.headers.getall("Set-Cookie", []):
        cookie: SimpleCookie = SimpleCookie(line)
        parsed.update(cookie)
    return parsed


def jar(client: Client) -> dict[str, str]:
    return {c.key: c.value for c in client.session.cookie_jar}


def form_token(page: str) -> str:
    match = re.search(rf'name="{CSRF_FIELD}" value="([^"]*)"', page)
    assert match, page
    return match.group(1)


async def csrf_from(client: Client, path: str = LOGIN_PATH) -> str:
    async with client.get(path) as r:
        assert r.status == 200
        return form_token(await r.text())


async def login(
    client: Client, user: str = "dora", password: str = "dora-pass", next_path: str | None = None
) -> aiohttp.ClientResponse:
    data = {CSRF_FIELD: await csrf_from(client), "username": user, "password": password}
    if next_path is not None:
        data["next"] = next_path
    async with client.post(LOGIN_PATH, data=data, allow_redirects=False) as r:
        await r.read()
        return r


async def test_login_page_sets_a_readable_csrf_cookie_once(client: Client) -> None:
    async with client.get(LOGIN_PATH) as r:
        assert r.status == 200
        page = await r.text()
        cookie = set_cookies(r)[CSRF_COOKIE]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", cookie.value)
    assert cookie["path"] == "/"
    assert cookie["samesite"] == "Lax"
    assert not cookie["httponly"]  # JavaScript reads it, as with Django
    assert form_token(page) == cookie.value
    for field in ('name="username"', 'name="password"', 'type="hidden" name="next"'):
        assert field in page
    async with client.get(LOGIN_PATH) as r:
        assert CSRF_COOKIE not in set_cookies(r)  # only when absent
        assert form_token(await r.text()) == cookie.value


@pytest.mark.parametrize(
    ("cookie", "field"),
    [(None, None), (None, "x" * 32), ("a" * 32, None), ("a" * 32, "b" * 32), ("short", "short")],
)
async def test_login_needs_a_matching_csrf_token(
    aiohttp_client: AiohttpClient, cookie: str | None, field: str | None
) -> None:
    app = django_crm_app()
    client = await aiohttp_client(app)
    data = {"username": "dora", "password": "dora-pass"}
    if field is not None:
        data[CSRF_FIELD] = field
    cookies = {CSRF_COOKIE: cookie} if cookie is not None else None
    async with client.post(LOGIN_PATH, data=data, cookies=cookies, allow_redirects=False) as r:
        assert r.status == 403
        assert CSRF_FAILED in await r.text()
        assert SESSION_COOKIE not in set_cookies(r)
    assert app[SESSIONS] == {}


async def test_login_sets_session_rotates_csrf_and_redirects_relative(client: Client) -> None:
    before = await csrf_from(client)
    r = await login(client)
    assert r.status == 302
    assert r.headers["Location"] == DASHBOARD_PATH
    cookies = set_cookies(r)
    session = cookies[SESSION_COOKIE]
    assert session["httponly"]
    assert session["path"] == "/"
    assert session["samesite"] == "Lax"
    assert client.app is not None
    assert client.app[SESSIONS] == {session.value: "dora"}
    rotated = cookies[CSRF_COOKIE].value
    assert re.fullmatch(r"[A-Za-z0-9]{32}", rotated)
    assert rotated != before
    assert jar(client)[CSRF_COOKIE] == rotated
    async with client.get(DASHBOARD_PATH, allow_redirects=False) as r:
        assert r.status == 200
        page = await r.text()
    assert "Welcome, dora" in page
    assert form_token(page) == rotated  # the logout form uses the new token


async def test_login_again_replaces_the_old_session(client: Client) -> None:
    first = set_cookies(await login(client))[SESSION_COOKIE].value
    second = set_cookies(await login(client, "emil", "emil-pass"))[SESSION_COOKIE].value
    assert first != second
    assert client.app is not None
    assert client.app[SESSIONS] == {second: "emil"}


@pytest.mark.parametrize("next_path", ["/clients/", "/clients/add/?from=dash", "/"])
async def test_login_honours_a_safe_next(client: Client, next_path: str) -> None:
    r = await login(client, next_path=next_path)
    assert r.status == 302
    assert r.headers["Location"] == next_path


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.com",
        "https://evil.com",
        "https://evil.com/",
        "/\\evil.com",
        "evil.com",
        "",
        "/dash\r\nX-Evil: 1",
        "javascript:alert(1)",
    ],
)
async def test_login_ignores_an_unsafe_next(client: Client, next_path: str) -> None:
    r = await login(client, next_path=next_path)
    assert r.status == 302
    assert r.headers["Location"] == DASHBOARD_PATH
    assert "X-Evil" not in r.headers


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("dora", "wrong"),
        ("dora", "emil-pass"),
        ("nobody", "dora-pass"),
        ("", ""),
        ("dora", "pässword"),
    ],
)
async def test_login_failure_shows_the_form_with_django_message(
    client: Client, user: str, password: str
) -> None:
    token = await csrf_from(client)
    data = {CSRF_FIELD: token, "username": user, "password": password, "next": "/clients/"}
    async with client.post(LOGIN_PATH, data=data, allow_redirects=False) as r:
        assert r.status == 200
        page = await r.text()
        assert SESSION_COOKIE not in set_cookies(r)
    assert BAD_LOGIN in page
    assert form_token(page) == token
    assert 'name="next" value="/clients/"' in page
    assert SESSION_COOKIE not in jar(client)
    assert client.app is not None
    assert client.app[SESSIONS] == {}


@pytest.mark.parametrize(
    ("path", "location"),
    [
        (DASHBOARD_PATH, "/accounts/login/?next=/dashboard/"),
        (CLIENTS_PATH, "/accounts/login/?next=/clients/"),
        (CLIENTS_ADD_PATH, "/accounts/login/?next=/clients/add/"),
        ("/clients/?q=a&page=2", "/accounts/login/?next=/clients/%3Fq%3Da%26page%3D2"),
    ],
)
async def test_protected_pages_redirect_to_login_with_next(
    client: Client, path: str, location: str
) -> None:
    async with client.get(path, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == location
    async with client.get(location) as r:  # the login form carries next on
        page = await r.text()
    next_value = path.replace("&", "&amp;")
    assert f'name="next" value="{next_value}"' in page


async def test_redirect_after_login_round_trip(client: Client) -> None:
    async with client.get(CLIENTS_ADD_PATH, allow_redirects=False) as r:
        location = r.headers["Location"]
    async with client.get(location) as r:
        page = await r.text()
    next_path = re.search(r'name="next" value="([^"]*)"', page)
    assert next_path
    r = await login(client, next_path=next_path.group(1))
    assert r.headers["Location"] == CLIENTS_ADD_PATH


async def test_invalid_session_cookie_is_not_a_session(client: Client) -> None:
    async with client.get(
        DASHBOARD_PATH, cookies={SESSION_COOKIE: "made-up"}, allow_redirects=False
    ) as r:
        assert r.status == 302


async def test_add_client_needs_csrf_and_shows_the_new_client(client: Client) -> None:
    await login(client)
    async with client.get(CLIENTS_PATH) as r:
        assert "Acme Corporation" in await r.text()
    token = await csrf_from(client, CLIENTS_ADD_PATH)
    data = {"name": "Wayne Enterprises", "email": "bruce@wayne.example"}
    async with client.post(CLIENTS_ADD_PATH, data=data, allow_redirects=False) as r:
        assert r.status == 403
        assert CSRF_FAILED in await r.text()
    async with client.post(
        CLIENTS_ADD_PATH, data={**data, CSRF_FIELD: token}, allow_redirects=False
    ) as r:
        assert r.status == 302
        assert r.headers["Location"] == CLIENTS_PATH
    async with client.get(CLIENTS_PATH) as r:
        assert "Wayne Enterprises" in await r.text()


async def test_add_client_without_session_redirects_to_login(client: Client) -> None:
    token = await csrf_from(client)
    data = {"name": "Nobody", CSRF_FIELD: token}
    async with client.post(CLIENTS_ADD_PATH, data=data, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/accounts/login/?next=/clients/add/"
    assert client.app is not None
    assert "Nobody" not in [c["name"] for c in client.app[CLIENTS]]


async def test_logout_by_post_ends_the_session_server_side(client: Client) -> None:
    session = set_cookies(await login(client))[SESSION_COOKIE].value
    token = await csrf_from(client, DASHBOARD_PATH)
    async with client.post(LOGOUT_PATH, data={CSRF_FIELD: token}, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == LOGIN_PATH
        assert DELETED_SESSION in r.headers.getall("Set-Cookie")
    assert client.app is not None
    assert client.app[SESSIONS] == {}
    assert SESSION_COOKIE not in jar(client)
    async with client.get(  # the old cookie, replayed, is worth nothing now
        DASHBOARD_PATH, cookies={SESSION_COOKIE: session}, allow_redirects=False
    ) as r:
        assert r.status == 302
        assert r.headers["Location"].startswith(LOGIN_PATH)


async def test_logout_needs_post_and_csrf(client: Client) -> None:
    await login(client)
    async with client.get(LOGOUT_PATH, allow_redirects=False) as r:
        assert r.status == 405
        assert r.headers["Allow"] == "POST"
    async with client.post(LOGOUT_PATH, allow_redirects=False) as r:
        assert r.status == 403
        assert CSRF_FAILED in await r.text()
    assert client.app is not None
    assert list(client.app[SESSIONS].values()) == ["dora"]
    async with client.get(DASHBOARD_PATH, allow_redirects=False) as r:
        assert r.status == 200


async def test_seen_reports_what_the_crm_received(client: Client) -> None:
    await csrf_from(client)
    async with client.get(
        CLIENTS_PATH, headers={"X-Probe": "one"}, cookies={"extra": "1"}, allow_redirects=False
    ) as r:
        assert r.status == 302
    async with client.get(SEEN_PATH) as r:
        seen = await r.json()
    assert seen["method"] == "GET"
    assert seen["path"] == CLIENTS_PATH
    assert sorted(seen["cookies"]) == [CSRF_COOKIE, "extra"]
    assert ["X-Probe", "one"] in seen["headers"]
    assert client.app is not None
    history = client.app[SEEN]
    assert [(s.method, s.path) for s in history] == [("GET", LOGIN_PATH), ("GET", CLIENTS_PATH)]
    assert history[0] == Seen("GET", LOGIN_PATH, {})  # no cookie yet on the first visit
    assert set(history[1].cookies) == {CSRF_COOKIE, "extra"}


async def test_seen_before_any_request(client: Client) -> None:
    async with client.get(SEEN_PATH) as r:
        assert await r.json() == {"method": None, "path": None, "cookies": [], "headers": []}
        assert CSRF_COOKIE not in set_cookies(r)
