"""Gateway mode's own login page (CSRF-protected by a double-submit cookie; passwords from
the users file, the same limits as the CRM's login), the logout, the language switch and
the pages' stylesheet."""

from __future__ import annotations

import secrets

from aiohttp import web

from gateway.errors import CsrfFailed, NotFound
from gateway.i18n import LANGUAGES
from gateway.signin.decision import Kind, Who
from gateway.signin.identity import canonical_user
from gateway.web.audit import audit_event
from gateway.web.cookies import LANGUAGE_COOKIE, LOGIN_COOKIE
from gateway.web.keys import USER, VIEW
from gateway.web.pages.forms import checked_form, read_form
from gateway.web.pages.render import language, locked_text, page, stylesheet, translator
from gateway.web.signin import SignIn
from gateway.web.urls import safe_return_path


async def login_page(request: web.Request, signin: SignIn) -> web.StreamResponse:
    """Gateway mode. No server-side record until the password passes: the form's CSRF token
    is a signed copy of a random cookie (double submit), so a flood of page views costs no
    memory."""
    if signin.login.mode != "gateway":
        raise NotFound("the CRM's own login page signs people in")
    t = translator(request)
    nonce = request.cookies.get(signin.cookies.name(request, LOGIN_COOKIE), "")
    fresh_nonce = len(nonce) != 32
    if fresh_nonce:
        nonce = secrets.token_urlsafe(24)
    back = safe_return_path(request.query.get("next", "")) or "/"
    error = ""
    username = ""
    status = 200
    if request.method == "POST":
        form = await read_form(request)
        if fresh_nonce or not signin.book.form_token_ok(form.get("csrf", ""), nonce):
            audit_event(request, "csrf.failed", outcome="refused", reason="csrf_failed")
            raise CsrfFailed("login form token missing or wrong")
        username = canonical_user(form.get("username", ""))[:256]
        back = safe_return_path(form.get("next", "")) or "/"
        ip = request[VIEW].ip
        regulator = signin.regulator
        if username:
            # Their address rules first: from an address they may not use, nothing is said
            # of the password (nor counted).
            signin.guard.judge(request, Who(Kind.LOGIN, username))
        until = await signin.password_attempt(request, username)
        if until:
            error, status = locked_text(request, until, "login.locked"), 429
        elif username and await _verify(signin, username, form.get("password", ""), ip):
            request[USER] = username
            # Counted whole, as at the CRM's login: a client leaving meanwhile (each count is
            # several steps of the shared store) must not leave half a count behind.
            succeeded = regulator.password_succeeded(username, ip)
            await signin.tasks.shielded(succeeded, name="password count")
            lang = language(request)
            audit_event(request, "signin.password_ok", outcome="ok", user=username, lang=lang)
            session = await signin.begin(username, return_to=back)
            response = await signin.after_password(request, session)
            response.headers.add(*signin.cookies.set(request, LOGIN_COOKIE, "", max_age=0))
            return response
        else:
            failed = regulator.password_failed(username, ip)
            until = await signin.tasks.shielded(failed, name="password count")
            audit_event(request, "signin.password_failed", outcome="failed", user=username)
            if until:
                error, status = locked_text(request, until, "login.locked"), 429
            else:
                error, status = t("login.wrong"), 401
    response = page(
        request,
        "login.html",
        t("login.title"),
        status=status,
        csrf=signin.book.form_token(nonce),
        error=error,
        username=username,
        next=back,
    )
    if fresh_nonce:
        response.headers.add(*signin.cookies.set(request, LOGIN_COOKIE, nonce, max_age=3600))
    return response


async def _verify(signin: SignIn, user: str, password: str, ip: str) -> bool:
    """The password checked (argon2id, off the event loop); an attempt the client gave up on
    gives its slot back."""
    try:
        return await signin.verify_password(user, password)
    except BaseException:
        abandoned = signin.regulator.password_abandoned(user, ip)
        await signin.tasks.shielded(abandoned, name="password count")
        raise


async def logout(request: web.Request, signin: SignIn) -> web.StreamResponse:
    session = await signin.session(request)
    if session is not None:
        await checked_form(request, session)
        await signin.book.end(session)
        audit_event(request, "signin.logout", outcome="ok", user=session.user)
    target = signin.login_url
    if signin.login.mode == "upstream" and signin.login.method != "GET":
        target = "/"
    response = signin.redirect(target)
    response.headers.add(*signin.cookies.clear_session(request))
    return response


async def switch_language(request: web.Request, signin: SignIn) -> web.StreamResponse:
    chosen = request.query.get("to", "")
    back = safe_return_path(request.query.get("next", "")) or f"{signin.prefix}account"
    response = signin.redirect(back)
    if chosen in LANGUAGES:
        response.headers.add(*signin.cookies.set(request, LANGUAGE_COOKIE, chosen, 365 * 86400))
    return response


async def serve_stylesheet(request: web.Request, signin: SignIn) -> web.StreamResponse:
    return web.Response(
        body=stylesheet(),
        content_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
