"""The request pipeline, one request at a time, in this order:

1. scope      who is asking, from where (gateway.web.scope, before this module)
2. our pages  the reserved prefix: sign-in pages, health (never forwarded)
3. who        a login form naming a user, an API credential, a session, or nobody
4. decide     gateway.signin.decision.decide: one function, one Decision
5. act        forward, send to sign in, challenge, deny
6. proxy      web.proxy streams it to the CRM and back

Everything a request does is here in that order, as a list; the steps themselves live in
their own modules.
"""

from __future__ import annotations

from typing import NoReturn
from urllib.parse import quote

from aiohttp import hdrs, web

from gateway.errors import (
    BadRequest,
    LoginInBody,
    MethodNotAllowed,
    NotFound,
    SignInRequired,
    UpstreamError,
)
from gateway.fields import overrides_method
from gateway.model import Action, Decision, Step
from gateway.signin.decision import Asks, Kind, Request, Who
from gateway.signin.formscan import FormScan, form_names_login
from gateway.signin.identity import login_may_be_in_body
from gateway.signin.session import FULL
from gateway.signin.unwatched import login_named_unwatched
from gateway.web import crmlogin, forwardauth, health, proxy, reverify
from gateway.web.audit import audit_event
from gateway.web.bodies import (
    FORM_LIMIT,
    HeldBack,
    go_on,
    read_whole,
    refuse_encoded,
    refuse_unmet_expectation,
)
from gateway.web.forwarding import wants_html
from gateway.web.guard import GUARD, Guard, Judged
from gateway.web.keys import CLOCK, CONFIG, DECISION, SESSION, VIEW
from gateway.web.pages import routes
from gateway.web.signin import SIGNIN, SignIn
from gateway.web.socketwatch import WATCH, SocketWatch
from gateway.web.urls import reserved_subpath, safe_return_path


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The one route: every request, whatever its path."""
    expects = hdrs.EXPECT in request.headers  # a client that may wait for 100 Continue
    if expects:
        refuse_unmet_expectation(request)
    sub = reserved_subpath(request.raw_path, request.app[CONFIG].path_prefix)
    if sub is not None:
        await go_on(request)
        return await our_page(request, sub)
    guard = request.app.get(GUARD)
    if guard is None:  # no policies and no sign-in: a transparent proxy
        if expects:
            await go_on(request)
        return await proxy.handle(request)
    signin = request.app.get(SIGNIN)
    if "#" in request.raw_path and "#" in request.raw_path.partition("?")[2]:
        # Never sent by a browser; a server that ends the query there (Apache) would run
        # another request than the one judged (`?x=#&action=Logout`). In the path it is
        # path_ambiguous, as the rules' judge says.
        raise BadRequest("a fragment in the request target", reason="bad_request_target")
    if signin is not None and login_named_unwatched(
        signin.login, request.method, request.raw_path, request.headers
    ):
        audit_event(request, "signin.refused", outcome="refused", reason="login_ambiguous")
        raise BadRequest("the login named where it is not watched", reason="login_ambiguous")
    if signin is not None and signin.is_crm_login(request):
        # Before anything else: a credential must not carry a login past the hold (the CRM's
        # cookies would reach the browser before the second factor).
        await go_on(request)
        return await crmlogin.handle(request, signin)
    who = await identify(request, guard, signin)
    body: bytes | HeldBack | None = None
    if (
        signin is not None
        and request.body_exists
        and login_may_be_in_body(signin.login, request.method, request.raw_path)
    ):
        # The login named in the form (`action=Login`, which a PHP CRM reads there too) is
        # the login, before any rule, whoever asks: as the login named in the query above.
        body = await read_for_login(request, signin, who)
        content_type = request.headers.get("Content-Type", "")
        if isinstance(body, bytes) and form_names_login(
            signin.login, request.raw_path, body, content_type
        ):
            return await crmlogin.handle(request, signin, body)
    judged = guard.judge(
        request,
        who,
        gateway_login=signin is not None and signin.gateway_mode,
        now=request.app[CLOCK].now(),
    )
    if expects:  # not refused (judge raises then): the client may send its body
        await go_on(request)
    if judged.overridable and request.body_exists:
        body = await look_for_override(request, guard, who, judged, body)
    if judged.decision.action is Action.FORWARD and proxy.is_websocket_upgrade(request):
        request[WATCH] = watch_socket(request, guard, signin, who, judged)
    try:
        return await act(request, signin, who, judged, body)
    except (UpstreamError, LoginInBody):
        if not isinstance(body, HeldBack) or not body.scan.refused:
            raise
        refuse_login_in_body(request)  # the CRM never had all of it: the upload was cut


async def our_page(request: web.Request, sub: str) -> web.StreamResponse:
    request[DECISION] = "page"
    if sub == "auth" or sub.startswith("auth/"):  # forward auth, with or without sign-in
        return await forwardauth.dispatch(request, sub)
    page = await routes.dispatch(request, sub)
    if page is not None:
        return page
    route = health.ROUTES.get(sub)
    if route is None:
        raise NotFound(f"no gateway page at {sub!r}")
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"{request.method} on {sub}")
    return await route(request)


async def identify(request: web.Request, guard: Guard, signin: SignIn | None) -> Who:
    """Who the request is: an API credential (judged by token, address and path, never by a
    session, never shown a page), else a signed-in session, else nobody."""
    who = guard.who(request)
    if who.kind is not Kind.ANONYMOUS or signin is None:
        return who
    session = await signin.session(request)
    if session is None or session.stage != FULL:
        return who
    return signin.book.who(session, who.refused)


def watch_socket(
    request: web.Request, guard: Guard, signin: SignIn | None, who: Who, judged: Judged
) -> SocketWatch:
    """What a WebSocket that goes is held to while it is open (gateway.web.socketwatch): the
    question its upgrade asked, and the session or the API credential it was asked as."""
    path, _, raw_query = judged.target.partition("?")
    asked = Request(Asks.CRM, request[VIEW].ip, request.method, path)
    session = request.get(SESSION) if who.kind is Kind.SESSION else None
    return SocketWatch(
        guard,
        request.app[CLOCK],
        asked,
        who,
        gateway_login=signin is not None and signin.gateway_mode,
        book=signin.book if signin is not None and session is not None else None,
        session=session,
        credential=guard.credential(request) if who.kind is Kind.TOKEN else None,
        header_names=request.headers.keys(),
        raw_query=raw_query,
    )


async def look_for_override(
    request: web.Request, guard: Guard, who: Who, judged: Judged, body: bytes | HeldBack | None
) -> bytes | HeldBack | None:
    """A POST whose body could ask the CRM for a method a rule refuses (`_method` in a form
    or JSON body: Rails, Laravel, Symfony: `judged.overridable`, asked by the caller with
    the body's presence) is read whole, up to FORM_LIMIT, and refused when it does. `body`:
    read already (read_for_login), or to stream through its scan, and the one returned."""
    if not isinstance(body, bytes):
        held = body
        body = await read_whole(request, FORM_LIMIT, reason="form_too_large")
        if held is not None:  # read whole after all: its scan sees it whole
            held.scan.feed(body)
            held.scan.finish()
            if held.scan.found:
                refuse_login_in_body(request)
    if overrides_method(body, request.headers.get("Content-Type", "")):
        step = Step("", "a _method field in the body asks the CRM for another method")
        denied = Decision(Action.DENY, "method_ambiguous", (step,))
        guard.refuse(request, denied, api=who.kind is Kind.TOKEN)
    return body


async def read_for_login(request: web.Request, signin: SignIn, who: Who) -> bytes | HeldBack:
    """The body of a request to the login's path whose query does not name the login (a PHP
    CRM takes `action=Login` from the form too), read whole up to login.max_body to see
    whether its form names the login. Asked in a session or with an API credential and
    announced larger (an upload to a CRM that serves everything at one path), it streams,
    looked at on the way (HeldBack: its end held back until it is known to name no login).
    Anonymous, or of unknown length, it must fit, as the login must (413 login_too_large):
    nothing of the CRM's but its login answers an anonymous request."""
    limit = signin.login.max_body
    length = request.content_length
    if length is not None and length > limit and who.kind is not Kind.ANONYMOUS:
        content_type = request.headers.get("Content-Type", "")
        scan = FormScan(signin.login, request.raw_path, content_type)
        if scan.scanned:  # gzip: the scan would read other fields than a decoding CRM
            refuse_encoded(request)
        # Nothing read yet: 100 Continue waits for the rules, as for any other upload.
        return HeldBack(request.content, scan)
    await go_on(request)
    return await read_whole(request, limit, reason="login_too_large")


def refuse_login_in_body(request: web.Request) -> NoReturn:
    """A body over login.max_body that names the CRM's login (padded to pass unread):
    refused as a login that large is, audited; the CRM never checked its password."""
    audit_event(request, "signin.refused", outcome="refused", reason="login_in_upload")
    raise LoginInBody("a login in a body over login.max_body")


async def act(
    request: web.Request,
    signin: SignIn | None,
    who: Who,
    judged: Judged,
    body: bytes | HeldBack | None = None,
) -> web.StreamResponse:
    """Carry out a Decision about a request for the CRM (a denial was refused already)."""
    decision = judged.decision
    if decision.action is Action.SIGN_IN:
        request[DECISION] = "signin"
        assert signin is not None
        if request.method in ("GET", "HEAD") and wants_html(request.headers):
            back = safe_return_path(request.rel_url.raw_path_qs) or "/"
            return signin.redirect(f"{signin.prefix}login?next={quote(back, safe='')}")
        raise SignInRequired("sign-in required")
    if signin is None:
        return await proxy.handle(request, judged.target, body=body)
    if decision.action is Action.CHALLENGE:  # a signed-in user's verification is due
        if signin.signs_out(request.method, judged.target, request.body_exists, request.headers):
            return await signin.forward_signed_in(request, judged.target, body)
        return await reverify.verify_again(request, signin, decision, judged.target, body)
    if who.kind is Kind.SESSION:
        return await signin.forward_signed_in(request, judged.target, body)
    # No session of the CRM's reaches a browser without the second factor, whatever route
    # the CRM set it on (a second login route, an API login): held only at the watched one.
    return await proxy.handle(
        request,
        judged.target,
        adjust=signin.cookies.adjust(None),
        drop_cookies=signin.cookies.crm,
        body=body,
    )
