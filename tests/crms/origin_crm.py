"""A CRM whose CSRF check, besides its token (an `XSRF-TOKEN` cookie and the `_csrf` field, as
Spring Security's cookie repository makes them), compares a POST's Origin with the Host it
received, as Django does since 4.0: behind a proxy that rewrites Host, every form is refused
(403) unless its trusted origins name the browser's. Login at /auth/login (`email`,
`password`), session cookie `SESSION` (made only at a login), failure back to
/auth/login?error, logout by POST."""

from __future__ import annotations

import hmac
import secrets
from html import escape

from aiohttp import web

from tests.crms.common import Handler, new_app, page, redirect

SESSION_COOKIE = "SESSION"
CSRF_COOKIE = "XSRF-TOKEN"
USERS = {"quinn@firm.example": "quinn-pw-31", "rosa@firm.example": "rosa-pw-32"}
ORIGIN_FAILED = "Origin checking failed - {origin} does not match any trusted origins."

SESSIONS = web.AppKey("origin_sessions", dict[str, str])
TRUSTED_ORIGINS = web.AppKey("origin_trusted", list[str])  # CSRF_TRUSTED_ORIGINS


@web.middleware
async def _csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "POST":
        origin = request.headers.get("Origin")
        host = request.headers.get("Host", "")
        if origin is not None and origin not in (
            f"http://{host}",
            f"https://{host}",
            *request.app[TRUSTED_ORIGINS],
        ):
            return _forbidden(ORIGIN_FAILED.format(origin=origin))
        form = await request.post()
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, str(form.get("_csrf", ""))):
            return _forbidden("CSRF token missing or incorrect.")
    return await handler(request)


def _forbidden(reason: str) -> web.Response:
    return page(
        "403 Forbidden", f"<h1>Forbidden (403)</h1><p>CSRF verification failed. {reason}</p>", 403
    )


def _token(request: web.Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(18)


def _with_token(response: web.Response, token: str) -> web.Response:
    response.headers.add("Set-Cookie", f"{CSRF_COOKIE}={token}; Path=/")
    return response


def _user(request: web.Request) -> str:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE, ""), "")


async def root(request: web.Request) -> web.Response:
    return redirect("/dashboard" if _user(request) else "/auth/login")


async def login_page(request: web.Request) -> web.Response:
    token = _token(request)
    error = '<p class="alert">Bad credentials</p>' if "error" in request.query else ""
    body = (
        f'<h1>Firm CRM</h1>{error}<form method="post" action="/auth/login">'
        f'<input type="hidden" name="_csrf" value="{escape(token)}">'
        '<input type="email" name="email" placeholder="E-mail" autocomplete="username">'
        '<input type="password" name="password" placeholder="Password">'
        '<button type="submit">Log in</button></form>'
    )
    return _with_token(page("Log in · Firm CRM", body), token)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    if email not in USERS or not secrets.compare_digest(USERS[email], password):
        return redirect("/auth/login?error")
    session = secrets.token_hex(16)
    request.app[SESSIONS][session] = email
    response = redirect("/dashboard")
    response.headers.add("Set-Cookie", f"{SESSION_COOKIE}={session}; Path=/; HttpOnly")
    return _with_token(response, secrets.token_urlsafe(18))  # a new token after a login


async def dashboard(request: web.Request) -> web.Response:
    user = _user(request)
    if not user:
        return redirect("/auth/login")
    token = _token(request)
    body = (
        f'<p>Hello {escape(user)}</p><form method="post" action="/auth/logout">'
        f'<input type="hidden" name="_csrf" value="{escape(token)}">'
        '<button type="submit">Log out</button></form>'
    )
    return _with_token(page("Dashboard · Firm CRM", body), token)


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].pop(request.cookies.get(SESSION_COOKIE, ""), None)
    response = redirect("/auth/login?logout")
    response.headers.add("Set-Cookie", f"{SESSION_COOKIE}=; Path=/; Max-Age=0")
    return response


def origin_crm_app(*, trusted_origins: tuple[str, ...] = ()) -> web.Application:
    app = new_app(_csrf)
    app[SESSIONS] = {}
    app[TRUSTED_ORIGINS] = list(trusted_origins)
    r = app.router
    r.add_get("/", root)
    r.add_get("/auth/login", login_page)
    r.add_post("/auth/login", login)
    r.add_get("/dashboard", dashboard)
    r.add_post("/auth/logout", logout)
    return app
