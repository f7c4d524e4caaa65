"""A test double of a Django CRM's sign-in, shaped like Django's auth views and CSRF middleware:
`csrftoken` cookie and `csrfmiddlewaretoken` field, `sessionid`, rotation at login, relative
redirects, logout by POST only. A second upstream for sign-in tests; not the real Django."""

from __future__ import annotations

import hmac
import re
import secrets
import string
from collections.abc import Awaitable, Callable
from html import escape
from typing import NamedTuple
from urllib.parse import quote

from aiohttp import web

SESSION_COOKIE = "sessionid"
CSRF_COOKIE = "csrftoken"
CSRF_FIELD = "csrfmiddlewaretoken"

LOGIN_PATH = "/accounts/login/"
LOGOUT_PATH = "/accounts/logout/"
DASHBOARD_PATH = "/dashboard/"  # LOGIN_REDIRECT_URL
CLIENTS_PATH = "/clients/"
CLIENTS_ADD_PATH = "/clients/add/"
SEEN_PATH = "/__seen__"

LOGIN_ERROR = (
    "Please enter a correct username and password. Note that both fields may be case-sensitive."
)
CSRF_FAILED = "CSRF verification failed. Request aborted."

USERS: dict[str, str] = {"dora": "dora-pass", "emil": "emil-pass"}


class Seen(NamedTuple):
    """One request as the CRM received it."""

    method: str
    path: str
    cookies: dict[str, str]


SESSIONS = web.AppKey("django_sessions", dict[str, str])  # sessionid -> user name
CLIENTS = web.AppKey("django_clients", list[dict[str, str]])
SEEN = web.AppKey("django_seen", list[Seen])  # every request but SEEN_PATH, oldest first
LAST_HEADERS = web.AppKey("django_last_headers", list[tuple[str, str]])  # of SEEN[-1]

_CSRF = web.RequestKey("django_csrf", str)  # the token this request's page uses
_ALNUM = string.ascii_letters + string.digits
_TOKEN_RE = re.compile(r"[A-Za-z0-9]{32}")
_SAFE_NEXT_RE = re.compile(r"/(?![/\\])[\x21-\x7e]*")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _random(chars: str, length: int = 32) -> str:
    return "".join(secrets.choice(chars) for _ in range(length))


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _cookie_token(request: web.Request) -> str | None:
    """The `csrftoken` cookie if it is well formed (Django replaces a malformed one)."""
    value = request.cookies.get(CSRF_COOKIE, "")
    return value if _TOKEN_RE.fullmatch(value) else None


def _csrf_token(request: web.Request) -> str:
    """Django's get_token: the cookie's token, or a new one the middleware will set."""
    if _CSRF not in request:
        request[_CSRF] = _cookie_token(request) or _random(_ALNUM)
    return request[_CSRF]


def _set_csrf_cookie(response: web.StreamResponse, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path="/", samesite="Lax")


def _user(request: web.Request) -> str | None:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE, ""))


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _to_login(request: web.Request) -> web.Response:
    """Django's redirect_to_login: relative, with the full path as `next`."""
    return _redirect(f"{LOGIN_PATH}?next={quote(request.path_qs, safe='/')}")


def _safe_next(value: str) -> str:
    """Django's url_has_allowed_host_and_scheme, for relative targets only."""
    return value if _SAFE_NEXT_RE.fullmatch(value) else DASHBOARD_PATH


def _hidden(request: web.Request) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(_csrf_token(request))}">'


def _page(request: web.Request, title: str, body: str, status: int = 200) -> web.Response:
    user = _user(request)
    nav = (
        f'<nav><a href="{DASHBOARD_PATH}">Dashboard</a> <a href="{CLIENTS_PATH}">Clients</a> '
        f'<form method="post" action="{LOGOUT_PATH}">{_hidden(request)}'
        f'<button type="submit">Log out {escape(user)}</button></form></nav>'
        if user
        else ""
    )
    html = (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{escape(title)} | "
        f"Django CRM</title></head><body><h1>Django CRM</h1>{nav}<main>{body}</main>"
        "</body></html>"
    )
    return web.Response(text=html, content_type="text/html", status=status)


@web.middleware
async def _django(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Records what arrived, checks CSRF on POST, sets `csrftoken` on GET when absent."""
    if request.path != SEEN_PATH:
        request.app[SEEN].append(Seen(request.method, request.path, dict(request.cookies)))
        request.app[LAST_HEADERS][:] = list(request.headers.items())
    if request.method == "POST" and request.match_info.http_exception is None:
        reason = await _csrf_failure(request)
        if reason:
            body = f"<h1>Forbidden <span>(403)</span></h1><p>{CSRF_FAILED}</p><p>{reason}</p>"
            return _page(request, "403 Forbidden", body, status=403)
    response = await handler(request)
    if request.method == "GET" and request.path != SEEN_PATH and _cookie_token(request) is None:
        _set_csrf_cookie(response, _csrf_token(request))
    return response


async def _csrf_failure(request: web.Request) -> str:
    cookie = _cookie_token(request)
    if cookie is None:
        return "CSRF cookie not set."
    form = await request.post()
    submitted = form.get(CSRF_FIELD, "")
    if not isinstance(submitted, str) or not _same(cookie, submitted):
        return "CSRF token incorrect."
    return ""


def _login_form(request: web.Request, next_path: str, username: str = "", error: str = "") -> str:
    errors = f'<ul class="errorlist nonfield"><li>{escape(error)}</li></ul>' if error else ""
    return (
        f'{errors}<form method="post" action="{LOGIN_PATH}">{_hidden(request)}'
        '<p><label for="id_username">Username:</label> <input type="text" name="username" '
        f'value="{escape(username)}" autofocus autocapitalize="none" autocomplete="username" '
        'maxlength="150" required id="id_username"></p>'
        '<p><label for="id_password">Password:</label> <input type="password" name="password" '
        'autocomplete="current-password" required id="id_password"></p>'
        f'<input type="hidden" name="next" value="{escape(next_path)}">'
        '<input type="submit" value="Log in"></form>'
    )


async def login_page(request: web.Request) -> web.Response:
    return _page(request, "Log in", _login_form(request, request.query.get("next", "")))


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", ""))
    password = str(form.get("password", ""))
    next_path = str(form.get("next", ""))
    expected = USERS.get(username)
    if expected is None or not _same(expected, password):
        body = _login_form(request, next_path, username, LOGIN_ERROR)
        return _page(request, "Log in", body)
    sessions = request.app[SESSIONS]
    sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)  # cycle_key
    session_id = _random(string.ascii_lowercase + string.digits)
    sessions[session_id] = username
    response = _redirect(_safe_next(next_path))
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, path="/", samesite="Lax")
    _set_csrf_cookie(response, _random(_ALNUM))  # rotate_token
    return response


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].pop(request.cookies.get(SESSION_COOKIE, ""), None)
    response = _redirect(LOGIN_PATH)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def dashboard(request: web.Request) -> web.Response:
    user = _user(request)
    if user is None:
        return _to_login(request)
    return _page(request, "Dashboard", f"<p>Welcome, {escape(user)}</p>")


async def clients(request: web.Request) -> web.Response:
    if _user(request) is None:
        return _to_login(request)
    rows = "".join(
        f"<tr><td>{escape(c['name'])}</td><td>{escape(c['email'])}</td></tr>"
        for c in request.app[CLIENTS]
    )
    body = (
        f'<p><a href="{CLIENTS_ADD_PATH}">Add client</a></p>'
        f"<table><tr><th>Name</th><th>E-mail</th></tr>{rows}</table>"
    )
    return _page(request, "Clients", body)


def _client_form(request: web.Request, error: str = "") -> str:
    errors = f'<ul class="errorlist"><li>{escape(error)}</li></ul>' if error else ""
    return (
        f'{errors}<form method="post" action="{CLIENTS_ADD_PATH}">{_hidden(request)}'
        '<p><label for="id_name">Name:</label> <input name="name" required id="id_name"></p>'
        '<p><label for="id_email">E-mail:</label> <input type="email" name="email" '
        'id="id_email"></p><input type="submit" value="Save"></form>'
    )


async def add_client_page(request: web.Request) -> web.Response:
    if _user(request) is None:
        return _to_login(request)
    return _page(request, "Add client", _client_form(request))


async def add_client(request: web.Request) -> web.Response:
    if _user(request) is None:
        return _to_login(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()
    if not name:
        return _page(request, "Add client", _client_form(request, "This field is required."))
    request.app[CLIENTS].append({"name": name, "email": str(form.get("email", "")).strip()})
    return _redirect(CLIENTS_PATH)


async def seen(request: web.Request) -> web.Response:
    """The last request before this one: its cookie names and header lines."""
    history = request.app[SEEN]
    last = history[-1] if history else None
    return web.json_response(
        {
            "method": last.method if last else None,
            "path": last.path if last else None,
            "cookies": list(last.cookies) if last else [],
            "headers": [[k, v] for k, v in request.app[LAST_HEADERS]],
        }
    )


def django_crm_app() -> web.Application:
    app = web.Application(middlewares=[_django])
    app[SESSIONS] = {}
    app[CLIENTS] = [
        {"name": "Acme Corporation", "email": "office@acme.example"},
        {"name": "Globex GmbH", "email": "info@globex.example"},
        {"name": "Initech AB", "email": "kontakt@initech.example"},
    ]
    app[SEEN] = []
    app[LAST_HEADERS] = []
    r = app.router
    r.add_get(LOGIN_PATH, login_page)
    r.add_post(LOGIN_PATH, login)
    r.add_post(LOGOUT_PATH, logout)
    r.add_get(DASHBOARD_PATH, dashboard)
    r.add_get(CLIENTS_PATH, clients)
    r.add_get(CLIENTS_ADD_PATH, add_client_page)
    r.add_post(CLIENTS_ADD_PATH, add_client)
    r.add_get(SEEN_PATH, seen)
    return app
