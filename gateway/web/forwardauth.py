"""The forward-auth endpoint, `{prefix}auth`: nginx (`auth_request`), Caddy (`forward_auth`)
and Traefik (`ForwardAuth`) keep the data path and ask here about each request before they
send it to the CRM. The answer is the one Decision (gateway.signin.decision), asked with what
the standalone proxy would ask it: the original method and normalised path, the client's
address, its API credential or its session. 200 with the identity headers when it may pass;
else the sign-in or verification page each proxy expects for a browser (nginx: 401 with a
Location to redirect to; Caddy, Traefik: a 302), JSON for a script or an API client, 403.

The original request is read from the headers the front proxy writes, believed only from a
peer in `trusted_proxies`. This module never forwards anything and never sees a body."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.config.forwardauth import ForwardAuth
from gateway.errors import AmbiguousCredential, BadRequest, HttpError, MethodNotAllowed, NotFound
from gateway.fields import carries_fields
from gateway.headers import PATH_OVERRIDES, fold
from gateway.metrics import DENIALS
from gateway.model import Action, Decision, Step
from gateway.paths import judged_path
from gateway.policy.tokens import find_credential
from gateway.signin.decision import Asks, Kind, Request, Who, still_verified
from gateway.signin.identity import login_may_be_in_body, names_login
from gateway.signin.session import FULL, Session
from gateway.signin.unwatched import login_named_unwatched
from gateway.web.audit import audit_about
from gateway.web.forwarding import is_navigation, wants_html
from gateway.web.guard import GUARD, Guard
from gateway.web.keys import CLOCK, CONFIG, DECISION, SESSION, USER, VIEW
from gateway.web.original import Original, asked_by_nginx, read_original
from gateway.web.pages.errors import error_response
from gateway.web.pages.forwardauth import REASON_HEADER, clear, refused
from gateway.web.pages.render import language
from gateway.web.reverify import due_for_script
from gateway.web.signin import SIGNIN, SignIn
from gateway.web.urls import reserved_subpath, safe_return_path

_DOTS = re.compile(r"(?:\.|%2[eE]){1,2}")  # `.` or `..`, any escaped


async def dispatch(request: web.Request, sub: str) -> web.StreamResponse:
    """`auth` (the endpoint), `auth/refused` (nginx's pages for a refusal), `auth/clear`."""
    settings = request.app[CONFIG].forward_auth
    route = ROUTES.get(sub)
    if settings is None or route is None:
        raise NotFound(f"no gateway page at {sub!r}")
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"{request.method} on {sub}")
    return await route(request, settings)


async def answer(request: web.Request, settings: ForwardAuth) -> web.StreamResponse:
    """The endpoint: may the original request pass, and as whom."""
    view = request[VIEW]
    if not view.peer_trusted:
        # Anyone else could name any request and address: nothing they say is believed.
        _audit(request, "forward_auth.untrusted", "refused", None, reason="peer_not_trusted")
        return _refusal(request, None, 403, "forward_auth_untrusted")
    try:
        original = read_original(request.headers)
    except BadRequest as exc:
        _audit(request, "forward_auth.refused", "refused", None, reason=exc.reason)
        # nginx (which names X-Original-*) knows only 401 and 403: anything else is its 500.
        status = 403 if asked_by_nginx(request.headers) else 400
        return _refusal(request, None, status, exc.reason)
    try:
        return await _judge(request, settings, original)
    except HttpError as exc:  # a path that reads two ways, a store that is down
        if exc.status >= 500:
            raise
        return _refusal(request, original, exc.status, exc.reason)


async def _judge(
    request: web.Request, settings: ForwardAuth, original: Original
) -> web.StreamResponse:
    config = request.app[CONFIG]
    signin = request.app.get(SIGNIN)
    if _carries(request.headers, _identity_names(settings, signin)):
        # The front proxy replaces these with our answer; one that came from the client
        # means it may not (older Caddy releases only set them: GHSA-7r4p-vjf4-gxv4).
        _audit(request, "forward_auth.refused", "refused", original, reason="identity_header")
        return _refusal(request, original, 400, "identity_header_sent")
    if "#" in original.target.partition("?")[2]:  # a server ending the query there runs another
        return _refusal(request, original, 400, "bad_request_target")
    raw_path, _, raw_query = original.target.partition("?")
    if reserved_subpath(raw_path, config.path_prefix) is not None:
        # Our own pages go to the gateway; one the front proxy would send to the CRM (a
        # spelling its location did not match) never reaches it.
        step = Step("", "the gateway's reserved prefix is never the CRM's")
        return _deny(request, original, Decision(Action.DENY, "reserved_prefix", (step,)), False)
    guard = request.app.get(GUARD)
    if guard is None:  # no policies and no sign-in: the transparent proxy's answer
        return _pass(request, settings, "")
    path = judged_path(raw_path, guard.fold_paths)
    if signin is not None and (
        names_login(signin.login, original.method, original.target)
        or (
            # A form to the login's path (`/index.php?action=List` with `action=Login` in
            # it): the CRM may take it for its login, and this endpoint never sees a body.
            _carries_body(request)
            and login_may_be_in_body(signin.login, original.method, original.target)
        )
        # Or a cookie that names it (PHP without a php.ini reads cookies over the form).
        or login_named_unwatched(signin.login, original.method, original.target, request.headers)
    ):
        # The CRM's login must go through the gateway's proxy, which holds the CRM's cookies
        # until the second factor and counts the password: the front proxy sent it here, in
        # a spelling its route for it did not match. It never reaches the CRM this way.
        step = Step("", "the CRM's login goes through the gateway's proxy, not past it")
        return _deny(request, original, Decision(Action.DENY, "login_not_proxied", (step,)), False)
    if any(fold(name) in PATH_OVERRIDES for name in request.headers):
        step = Step("", "a header names another path for the CRM, which the proxy relays")
        return _deny(request, original, Decision(Action.DENY, "path_ambiguous", (step,)), False)
    who = await _who(request, guard, signin, settings, original, raw_query)
    if signin is not None and _crm_session_unverified(request, signin, who):
        return _crm_session_refused(request, signin, original)
    gateway_login = signin is not None and signin.gateway_mode
    asked = Request(Asks.CRM, request[VIEW].ip, original.method, path)
    view = guard.view
    decision, overridable = guard.decided(view, who, asked, gateway_login)
    token = who.kind is Kind.TOKEN
    if decision.action is Action.DENY:
        return _deny(request, original, decision, token)
    if _dot_segment(raw_path):
        # Judged resolved, as the proxy mode judges it; but the proxy mode then forwards the
        # path it judged, while nginx and Caddy send the CRM the target as the client wrote
        # it. A CRM that routes on the raw path, or resolves `/admin//../x` as RFC 3986 does
        # (to /admin/x), would serve another path than the one judged. Browsers resolve dot
        # segments before they send: only a hand-made request carries one.
        step = Step("", "a dot segment the CRM would read its own way: judged resolved, sent raw")
        return _deny(request, original, Decision(Action.DENY, "path_ambiguous", (step,)), token)
    if overridable and carries_fields(request.headers.get("Content-Type", "")):
        # A `_method` in the body would meet a rule that refuses its method, and no body
        # reaches this endpoint: refused, where the proxy mode reads the body to be sure.
        step = Step("", "a form or JSON body here could ask for a refused method (_method)")
        return _deny(request, original, Decision(Action.DENY, "method_ambiguous", (step,)), token)
    if (
        signin is not None
        and who.kind is Kind.SESSION
        and decision.allowed
        and signin.signs_out(
            original.method,
            f"{path}?{raw_query}",
            _carries_body(request),
            request.headers,
        )
    ):
        # The CRM's logout ends the gateway session too, as in the proxy mode, and needs no
        # code when one is due (the proxy mode also clears our cookie: the deploy/ configs
        # send the logout through it).
        await signin.book.end(request[SESSION])
        _audit(request, "signin.logout", "ok", original)
        return _pass(request, settings, decision.user, guard)
    decision = still_verified(view, who, decision, request.app[CLOCK].now())
    if decision.action is Action.CHALLENGE and signin is not None:
        return await _verify(request, signin, original, decision)
    if decision.action is Action.SIGN_IN and signin is not None:
        return _sign_in(request, signin, original)
    if decision.action is not Action.FORWARD:  # nothing else may pass (a token on a fresh path)
        return _deny(request, original, decision, token)
    return _pass(request, settings, decision.user, guard)


def _dot_segment(raw_path: str) -> bool:
    """Whether the original path holds a dot segment (`..`, `.`, `%2e%2e` in any case)."""
    if "." not in raw_path and "%" not in raw_path:
        return False
    return any(_DOTS.fullmatch(segment) for segment in raw_path.split("/"))


def _carries_body(request: web.Request) -> bool:
    """Whether the original request carries a body, as its headers say (none reaches this
    endpoint; nginx's and Caddy's copies keep Content-Type, and may blank Content-Length)."""
    headers = request.headers
    length = headers.get("Content-Length", "").strip()
    return bool(
        headers.get("Content-Type") or "Transfer-Encoding" in headers or length not in ("", "0")
    )


def _carries(headers: CIMultiDictProxy[str], folded_names: frozenset[str]) -> bool:
    """Whether a header of one of these names is there, in any case or `_` spelling."""
    if any(name in headers for name in folded_names):
        return True
    return any("_" in name and fold(name) in folded_names for name in headers)


def _identity_names(settings: ForwardAuth, signin: SignIn | None) -> frozenset[str]:
    names = {fold(settings.user_header), fold(settings.groups_header)}
    if signin is not None and signin.gateway_mode:
        names.add(fold(signin.login.identity_header))
    return frozenset(names)


async def _who(
    request: web.Request,
    guard: Guard,
    signin: SignIn | None,
    settings: ForwardAuth,
    original: Original,
    raw_query: str,
) -> Who:
    """As the proxy mode's `identify`: an API credential (in the original's headers or
    query), else a complete session, else nobody."""
    try:
        credential = find_credential(request.headers, raw_query, guard.places)
    except AmbiguousCredential:
        return Who(Kind.TOKEN, refused="credential_ambiguous")
    who = guard.who_by(credential, request.headers.keys(), original.method, raw_query)
    if who.token_known:
        request[USER] = who.user
    if who.kind is not Kind.ANONYMOUS or signin is None:
        return who
    session = await _session(request, signin, settings)
    if session is None or session.stage != FULL:
        return who
    return Who(
        Kind.SESSION,
        session.user,
        verified=session.verified,
        refused=who.refused,
        verified_by=tuple(sorted(session.verified_by.items())),
        chosen_interval=session.chosen_interval,
    )


async def _session(request: web.Request, signin: SignIn, settings: ForwardAuth) -> Session | None:
    """The request's session, as this worker read it within `session_cache` seconds: a
    signed-in request costs no round trip to the shared store."""
    cookie = signin.cookies.get(request, signin.cookies.session_name)
    if not cookie:
        return None
    session = await signin.book.load(cookie, reuse_for=settings.session_cache)
    if session is not None:
        request[SESSION] = session
        if session.stage == FULL:
            request[USER] = session.user
    return session


def _crm_session_unverified(request: web.Request, signin: SignIn, who: Who) -> bool:
    """A CRM cookie the proxy mode would have removed: any of the CRM's without a complete
    session, its session cookie with a value not released to this session. No proxy in
    front can remove it, so the request does not go."""
    session = request.get(SESSION) if who.kind is Kind.SESSION else None
    signed_in = session.user if session is not None else None
    binding = session.crm_binding if session is not None else ""
    return signin.cookies.crm_pairs_refused(
        request.headers.getall("Cookie", []), signed_in, binding
    )


def _crm_session_refused(
    request: web.Request, signin: SignIn, original: Original
) -> web.StreamResponse:
    """A browser goes to auth/clear, which removes the CRM's cookies and sends it back
    (the CRM then asks for its login, which the front proxy sends through the gateway)."""
    _audit(request, "forward_auth.crm_cookie", "refused", original, reason="crm_session_unverified")
    back = safe_return_path(original.target) or "/"
    if _page_load(request, original):
        request[DECISION] = "auth_signin"
        return _redirect(
            request, original, f"{signin.prefix}auth/clear?next={quote(back, safe='')}"
        )
    return _refusal(request, original, 401, "crm_session_unverified")


def _page_load(request: web.Request, original: Original) -> bool:
    return original.method in ("GET", "HEAD") and wants_html(request.headers)


def _sign_in(request: web.Request, signin: SignIn, original: Original) -> web.StreamResponse:
    """login mode gateway, a path not open to anyone: our login page, as the proxy mode."""
    if not _page_load(request, original):
        return _refusal(request, original, 401, "signin_required")
    request[DECISION] = "auth_signin"
    back = safe_return_path(original.target) or "/"
    return _redirect(request, original, f"{signin.prefix}login?next={quote(back, safe='')}")


async def _verify(
    request: web.Request, signin: SignIn, original: Original, decision: Decision
) -> web.StreamResponse:
    """A signed-in user's verification is due (gateway.web.reverify in the proxy mode): a
    page load goes to the challenge and comes back; a script gets JSON naming the page. A
    form's body never reaches this endpoint, so it is not kept: after the code the browser
    goes back to the page the form was on, where it is sent again."""
    session = request[SESSION]
    request[DECISION] = "auth_signin"
    _audit(request, "signin.verification_due", "refused", original, reason=decision.reason)
    session.due_reason, session.due = decision.reason, list(decision.factors)
    if not is_navigation(request.headers):
        return await due_for_script(signin, session, decision, _no_store(decision.reason))
    here = original.target if original.method in ("GET", "HEAD") else _referer(request, original)
    session.return_to = safe_return_path(here) or "/"
    await signin.book.save(session)
    return _redirect(request, original, f"{signin.prefix}challenge")


def _referer(request: web.Request, original: Original) -> str:
    """The page a form was sent from, when it is on the same site."""
    parts = urlsplit(request.headers.get("Referer", ""))
    if not parts.netloc or parts.netloc.lower() != original.host.lower():
        return "/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _pass(
    request: web.Request, settings: ForwardAuth, user: str, guard: Guard | None = None
) -> web.Response:
    request[DECISION] = "auth_pass"
    headers = {"Cache-Control": "no-store"}
    if user and guard is not None:
        headers[settings.user_header] = user
        groups = guard.view.user_for(user).groups
        if groups:
            headers[settings.groups_header] = ",".join(groups)
    return web.Response(status=200, headers=headers)


def _deny(
    request: web.Request, original: Original, decision: Decision, token: bool
) -> web.Response:
    """Audited and counted as the proxy mode's guard does (with the original's path and
    method), answered with the status it gives."""
    if token:
        event = "token.denied"
    else:
        event = "ip.denied" if decision.reason.startswith("ip_") else "path.denied"
    DENIALS.labels(decision.reason).inc()
    rule = decision.steps[-1].source if decision.steps else ""
    _audit(request, event, "denied", original, reason=decision.reason, rule=rule)
    status = 403
    if decision.reason == "token_unknown":
        status = 401
    elif decision.reason in ("credential_ambiguous", "method_ambiguous", "path_ambiguous"):
        status = 400
    request[DECISION] = "auth_deny"
    return _refusal(request, original, status, decision.reason, api=token)


def _refusal(
    request: web.Request,
    original: Original | None,
    status: int,
    reason: str,
    *,
    api: bool = False,
) -> web.Response:
    """Our error answer, as the proxy mode gives it (a page for a browser, JSON otherwise;
    never a page to an API client). nginx's auth_request knows only 401 and 403: any other
    refusal is a 403 to it, and the reason goes along for its auth/refused page."""
    if not request[DECISION]:
        request[DECISION] = "auth_deny"
    if original is not None and original.nginx and status != 401:
        status = 403
    return error_response(
        status=status,
        reason=reason,
        request_id=request[VIEW].request_id,
        html=wants_html(request.headers) and not api,
        branding=request.app[CONFIG].branding,
        language=language(request),
        headers=_no_store(reason),
    )


def _redirect(request: web.Request, original: Original, location: str) -> web.Response:
    """Where a browser goes: nginx turns a 401 with a Location into its redirect (our
    deploy/ config); Caddy and Traefik hand the 302 to the browser as it is."""
    status = 401 if original.nginx else 302
    headers = {"Location": location, **_no_store("")}
    return web.Response(status=status, headers=headers)


def _no_store(reason: str) -> dict[str, str]:
    return {"Cache-Control": "no-store", **({REASON_HEADER: reason} if reason else {})}


def _audit(
    request: web.Request,
    event: str,
    outcome: str,
    original: Original | None,
    **fields: str,
) -> None:
    """An audit event about the original request (its path and method, not the endpoint's)."""
    path = original.target.partition("?")[0] if original else request.path
    method = original.method if original else request.method
    audit_about(request, path, method, event, outcome=outcome, via="forward_auth", **fields)


ROUTES = {"auth": answer, "auth/refused": refused, "auth/clear": clear}
