"""A CRM that asks for the user name first and for the password on a second page, as the
big suites do: `POST /signin` with `login` leads (303) to `/signin/password`, whose form
carries the name again in a hidden field beside `password`; a signed cookie (`signin_step`)
remembers the first step. A double-submit CSRF cookie guards both forms. The password step
refuses a name other than the first step's; `trusts_first_step` makes a CRM that ignores the
field and signs in whoever the first step named (which no gateway can sit in front of)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from html import escape

from aiohttp import web

from tests.crms.common import new_app, page, redirect

SESSION_COOKIE = "sid"
STEP_COOKIE = "signin_step"
CSRF_COOKIE = "csrf"
USERS = {"nora": "nora-pass-5", "pieter": "pieter-pass-6"}
WRONG = "Wrong password. Try again."

SESSIONS = web.AppKey("two_step_sessions", dict[str, str])
TRUSTS_FIRST_STEP = web.AppKey("two_step_trusts_first", bool)
_KEY = secrets.token_bytes(32)


def _sign(name: str) -> str:
    mac = hmac.new(_KEY, name.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{name}.{mac}"


def _first_step(request: web.Request) -> str:
    name, _, mac = request.cookies.get(STEP_COOKIE, "").rpartition(".")
    return name if name and hmac.compare_digest(_sign(name), f"{name}.{mac}") else ""


def _csrf(request: web.Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)


def _with_csrf(response: web.Response, token: str) -> web.Response:
    response.headers.add("Set-Cookie", f"{CSRF_COOKIE}={token}; Path=/; SameSite=Lax")
    return response


async def _csrf_ok(request: web.Request) -> bool:
    form = await request.post()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie, str(form.get("_csrf", "")))


def _user(request: web.Request) -> str:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE, ""), "")


async def root(request: web.Request) -> web.Response:
    return redirect("/home" if _user(request) else "/signin")


async def signin_page(request: web.Request) -> web.Response:
    token = _csrf(request)
    body = (
        '<h1>Sign in</h1><form method="post" action="/signin">'
        f'<input type="hidden" name="_csrf" value="{escape(token)}">'
        '<label>E-mail or user name <input name="login" autocomplete="username"></label>'
        '<button type="submit">Next</button></form>'
    )
    return _with_csrf(page("Sign in", body), token)


async def signin(request: web.Request) -> web.Response:
    if not await _csrf_ok(request):
        return page("Forbidden", "<p>Session expired: reload the page.</p>", status=403)
    name = str((await request.post()).get("login", "")).strip()
    response = redirect("/signin/password", status=303)
    response.headers.add("Set-Cookie", f"{STEP_COOKIE}={_sign(name)}; Path=/signin; HttpOnly")
    return response


def _password_form(token: str, name: str, error: str = "") -> web.Response:
    message = f'<p role="alert">{escape(error)}</p>' if error else ""
    body = (
        f"<h1>Welcome, {escape(name)}</h1>{message}"
        '<form method="post" action="/signin/password">'
        f'<input type="hidden" name="_csrf" value="{escape(token)}">'
        f'<input type="hidden" name="login" value="{escape(name)}">'
        '<label>Password <input type="password" name="password" '
        'autocomplete="current-password"></label><button type="submit">Sign in</button></form>'
        '<p><a href="/signin">Not you?</a></p>'
    )
    return _with_csrf(page("Enter your password", body), token)


async def password_page(request: web.Request) -> web.Response:
    name = _first_step(request)
    if not name:
        return redirect("/signin")
    return _password_form(_csrf(request), name)


async def password(request: web.Request) -> web.Response:
    if not await _csrf_ok(request):
        return page("Forbidden", "<p>Session expired: reload the page.</p>", status=403)
    form = await request.post()
    first = _first_step(request)
    named = str(form.get("login", ""))
    user = first if request.app[TRUSTS_FIRST_STEP] else named
    if not first or user != first:
        return redirect("/signin", status=303)
    if user not in USERS or not secrets.compare_digest(USERS[user], str(form.get("password"))):
        return _password_form(_csrf(request), first, WRONG)
    session = secrets.token_urlsafe(18)
    request.app[SESSIONS][session] = user
    response = redirect("/home")
    response.headers.add("Set-Cookie", f"{SESSION_COOKIE}={session}; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", f"{STEP_COOKIE}=; Path=/signin; Max-Age=0")
    return response


async def home(request: web.Request) -> web.Response:
    user = _user(request)
    if not user:
        return redirect("/signin")
    token = _csrf(request)
    body = (
        f"<p>Signed in as {escape(user)}</p>"
        f'<form method="post" action="/signout"><input type="hidden" name="_csrf" '
        f'value="{escape(token)}"><button type="submit">Sign out</button></form>'
    )
    return _with_csrf(page("Home", body), token)


async def signout(request: web.Request) -> web.Response:
    if await _csrf_ok(request):
        request.app[SESSIONS].pop(request.cookies.get(SESSION_COOKIE, ""), None)
    response = redirect("/signin", status=303)
    response.headers.add("Set-Cookie", f"{SESSION_COOKIE}=; Path=/; Max-Age=0")
    return response


def two_step_crm_app(*, trusts_first_step: bool = False) -> web.Application:
    app = new_app()
    app[SESSIONS] = {}
    app[TRUSTS_FIRST_STEP] = trusts_first_step
    r = app.router
    r.add_get("/", root)
    r.add_get("/signin", signin_page)
    r.add_post("/signin", signin)
    r.add_get("/signin/password", password_page)
    r.add_post("/signin/password", password)
    r.add_get("/home", home)
    r.add_post("/signout", signout)
    return app
