"""What every page for a session shares: the stages a page may be reached in (`needs`), the
page itself with the session's CSRF token, the page for a user with no usable factor, and
the decision before a change (a step-up when the last factor is too old)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.model import Action
from gateway.signin.decision import Asks, Kind, Who
from gateway.signin.session import FULL, PASSWORD, Session
from gateway.web.audit import audit_event
from gateway.web.keys import USER
from gateway.web.pages.render import page, translator
from gateway.web.signin import SignIn

Handler = Callable[[web.Request, SignIn], Awaitable[web.StreamResponse]]


SessionHandler = Callable[[web.Request, SignIn, Session], Awaitable[web.StreamResponse]]


async def before_change(
    request: web.Request, signin: SignIn, session: Session, back: str
) -> web.Response | None:
    """A change to how the user signs in (add or remove a factor, new codes, postponing
    enrolment), decided by gateway.signin.decision: None when it may go ahead, else the way to the
    factor that must pass first (the challenge, or a step-up coming back to `back`)."""
    facts = await signin.facts(request, session.user, device=False)
    kind = Kind.SIGNING_IN if session.stage == PASSWORD else Kind.SESSION
    who = Who(kind, session.user, verified=session.verified)
    decision = signin.decide(request, who, Asks.CHANGE, facts)
    if decision.action in (Action.CHALLENGE, Action.DENY):  # the challenge page says why
        return signin.redirect(f"{signin.prefix}challenge")
    if decision.action is Action.STEP_UP:
        return await step_up(request, signin, session, back)
    return None


def needs(*stages: str) -> Callable[[SessionHandler], Handler]:
    """A page for sessions at one of `stages`; any other visitor gets the "expired" page."""

    def wrap(handler: SessionHandler) -> Handler:
        @functools.wraps(handler)
        async def page_for_session(request: web.Request, signin: SignIn) -> web.StreamResponse:
            session = await signin.session(request)
            if session is None or session.stage not in stages:
                return signin.expired(request)
            request[USER] = session.user  # for the access log and the audit trail
            return await handler(request, signin, session)

        return page_for_session

    return wrap


def session_page(
    request: web.Request, session: Session, template: str, title: str, **context: Any
) -> web.Response:
    """A page for a session's user: its CSRF token in the forms, the sign-out button once
    signed in."""
    return page(
        request, template, title, csrf=session.csrf, signed_in=session.stage == FULL, **context
    )


def no_factor(request: web.Request, user: str) -> web.Response:
    """No factor this user could answer is allowed here: say so plainly (no redirect loop)."""
    audit_event(request, "challenge.no_factor", outcome="refused", user=user)
    t = translator(request)
    return page(
        request,
        "notice.html",
        t("challenge.title"),
        status=403,
        paragraphs=[t("error.no_factor.body")],
    )


async def step_up(
    request: web.Request, signin: SignIn, session: Session, back: str
) -> web.Response:
    session.return_to = f"{signin.prefix}{back}"
    await signin.book.save(session)
    return signin.redirect(f"{signin.prefix}challenge")
