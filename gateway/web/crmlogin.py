"""The CRM's own login form in flight (login mode upstream): read once, the user it names
judged like any request (their address rules apply before their password reaches the CRM),
the password counted like a code, and the CRM's answer read. On success the CRM's cookies
are held back, sealed, until the second factor passes; nothing of the CRM's session leaves
without it, whatever the CRM answered.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from gateway.errors import AmbiguousLogin, BadRequest
from gateway.fields import overrides_method
from gateway.signin.confusable import confusable_with
from gateway.signin.decision import Kind, Who
from gateway.signin.identity import login_name, login_succeeded, user_of
from gateway.signin.unwatched import cookie_user
from gateway.web import proxy
from gateway.web.audit import audit_event
from gateway.web.bodies import read_whole
from gateway.web.client import CrmResponse
from gateway.web.forwarding import OriginRewriter
from gateway.web.guard import GUARD
from gateway.web.keys import DECISION, REWRITER, USER, VIEW
from gateway.web.pages.render import language
from gateway.web.signin import SignIn
from gateway.web.urls import safe_return_path


async def _judged(
    request: web.Request,
    signin: SignIn,
    user: str,
    sent: Awaitable[CrmResponse],
    gone: asyncio.Event,
) -> tuple[CrmResponse | None, bool, Exception | None]:
    """The CRM's answer to a login and whether it took the password, counted whether or not
    the client is still there (`gone`): a wrong password counts though the client left
    (audited with reason `left`), or a CRM that refuses slowly and admits at once would tell
    a guesser who always hangs up which passwords are wrong by its speed alone; a right one
    is the caller's to count, or, its client gone, gives its slot back. No answer (the CRM
    failed: 502, 504) gives the attempt's slot back, so an outage of the CRM locks nobody
    out: that failure is returned for the caller to raise, not raised in the task (it is no
    crash of the task). The answer: None once let go (the client gone)."""
    regulator = signin.regulator
    ip = request[VIEW].ip
    try:
        response = await sent
    except BaseException as failed:  # the CRM failed, or the gateway stops: no verdict
        await regulator.password_abandoned(user, ip)
        if isinstance(failed, Exception):
            return None, False, failed
        raise
    try:
        location = response.headers.get("Location", "")
        set_cookies = response.headers.getall("Set-Cookie", [])
        succeeded = login_succeeded(response.status, location, set_cookies, signin.login)
        if not succeeded:
            left = {"reason": "left"} if gone.is_set() else {}
            audit_event(request, "signin.crm_failed", outcome="failed", user=user, **left)
            await regulator.password_failed(user, ip)
        elif gone.is_set():  # a right password nobody waits for: it never came to a sign-in
            await regulator.password_abandoned(user, ip)
    except BaseException:
        response.release()
        raise
    if gone.is_set():
        response.release()
        return None, succeeded, None
    return response, succeeded, None


def _let_go(signin: SignIn, user: str, ip: str, judged: asyncio.Task[Any]) -> None:
    """A login whose client left just as the CRM's answer came (_judged saw it still there):
    the answer is let go, and a right password gives its slot back."""
    if judged.cancelled() or judged.exception() is not None:
        return
    response, succeeded, _ = judged.result()
    if response is None:  # let go by _judged already
        return
    response.release()
    if succeeded:
        abandoned = signin.regulator.password_abandoned(user, ip)
        signin.tasks.spawn(abandoned, name="password count")


async def handle(
    request: web.Request, signin: SignIn, body: bytes | None = None
) -> web.StreamResponse:
    """`body`: the login's body, read already (a login named in its form, not its query)."""
    old = await signin.session(request)
    if body is None:
        body = await read_whole(request, signin.login.max_body, reason="login_too_large")
    try:
        content_type = request.headers.get("Content-Type", "")
        raw_query = request.raw_path.partition("?")[2]
        typed = login_name(body, content_type, signin.login, raw_query)
        user = user_of(typed)
        cookies = request.headers.getall("Cookie", [])
        if any(other != user for other in cookie_user(cookies, signin.login)):
            # PHP reads cookies over the form where no php.ini says otherwise: the CRM
            # would log in the cookie's user while the gateway challenges the form's.
            raise AmbiguousLogin("a cookie naming another user than the login's form")
    except AmbiguousLogin as exc:
        audit_event(request, "signin.refused", outcome="refused", reason="login_ambiguous")
        raise BadRequest(str(exc), reason="login_ambiguous") from None
    request[USER] = user
    guard = request.app[GUARD]
    # A method override refuses a login too: in a header or the query (Guard.who), or in the
    # login's body, read whole already (`_method=DELETE`: Laravel or Symfony would run
    # DELETE on the login's path, which no rule judged).
    refused = guard.who(request).refused
    if not refused and overrides_method(body, content_type):
        refused = "method_ambiguous"
    target = guard.judge(request, Who(Kind.LOGIN, user, refused=refused)).target
    # The password limits too: guessing at the CRM is counted like guessing codes.
    until = await signin.password_attempt(request, user)
    if until:
        return signin.locked_page(request, until)
    regulator = signin.regulator
    ip = request[VIEW].ip
    sent = proxy.send(
        request, target, adjust=signin.cookies.adjust(None), body=body if body else None
    )
    gone = asyncio.Event()  # set when the client left (or the gateway stopped) first
    judged = signin.tasks.spawn(_judged(request, signin, user, sent, gone), name="password count")
    try:
        response, succeeded, failed = await asyncio.shield(judged)
    except asyncio.CancelledError:
        # The CRM's verdict is still counted (_judged), then its answer is let go.
        gone.set()
        judged.add_done_callback(functools.partial(_let_go, signin, user, ip))
        raise
    if failed is not None:
        raise failed
    assert response is not None  # let go only once its client has gone
    try:
        location = response.headers.get("Location", "")
        set_cookies = response.headers.getall("Set-Cookie", [])
        if not succeeded:
            # Whatever the CRM thinks, no session cookie of its leaves without the factor
            # (a login made to look failed, e.g. by its redirect target, stays held back).
            return await proxy.relay(request, response, drop_cookies=signin.cookies.crm)
    finally:
        response.release()
    # The language of the user's pages: notices sent later (a new network) speak it.
    audit_event(request, "signin.crm_ok", outcome="ok", user=user, lang=language(request))
    try:
        facts = await signin.facts(request, user)
        listed = guard.view.users
        confusable = not facts.usable and await confusable_with(user, typed, signin.durable, listed)
    except BaseException:  # the durable store down: no verdict, the attempt's slot goes back
        await signin.tasks.shielded(regulator.password_abandoned(user, ip), name="password count")
        raise
    if confusable:
        # The CRM may have logged a known user in (its database compares names more loosely):
        # never asked for `user`'s factors, nor sent to enrol as `user`. Asked only with a
        # password the CRM took, so it tells no one without it which names are known; its
        # cookies are never released, and it counts as a wrong password.
        await signin.tasks.shielded(regulator.password_failed(user, ip), name="password count")
        audit_event(request, "signin.refused", outcome="refused", reason="user_confusable")
        raise BadRequest("a user name the CRM may read as another's", reason="user_confusable")
    await signin.tasks.shielded(regulator.password_succeeded(user, ip), name="password count")
    if old is not None:
        await signin.book.end(old)
    rewriter: OriginRewriter = request.app[REWRITER]
    held_key = f"held:{secrets.token_urlsafe(24)}"
    # A nameless Set-Cookie (`=crm_session=x`, sent back by browsers as that pair) is not the
    # CRM's cookie for this user as named: never released with theirs.
    cookies = [rewriter.set_cookie(c) for c in set_cookies if not signin.cookies.nameless_crm(c)]
    sealed = signin.sealer.seal(json.dumps(cookies).encode(), f"held\x00{user}")
    await signin.shared.put(held_key, sealed, signin.config.signin.sessions.hold_cookies)
    back = safe_return_path(rewriter.url(location)) if location else None
    session = await signin.begin(user, held=held_key, return_to=back or "/")
    request[DECISION] = "signin"
    return await signin.after_password(request, session, facts)
