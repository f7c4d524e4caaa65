"""The two pages the forward-auth endpoint (gateway.web.forwardauth) sends to: nginx's page for
a refusal (its auth_request drops the endpoint's body) and the one that removes a CRM cookie
the endpoint refused. Neither decides anything: the endpoint did."""

from __future__ import annotations

import re

from aiohttp import web

from gateway.config.forwardauth import ForwardAuth
from gateway.errors import AmbiguousCredential, NotFound
from gateway.policy.tokens import find_credential
from gateway.signin.session import FULL
from gateway.web.forwarding import wants_html
from gateway.web.guard import GUARD
from gateway.web.keys import CONFIG, DECISION, VIEW
from gateway.web.pages.errors import error_response
from gateway.web.pages.render import language
from gateway.web.signin import SIGNIN
from gateway.web.urls import safe_return_path

REASON_HEADER = "X-Gateway-Reason"  # on every refusal of the endpoint: nginx passes it on here
_REASON = re.compile(r"^[a-z0-9_]{1,64}$")


async def refused(request: web.Request, settings: ForwardAuth) -> web.StreamResponse:
    """nginx's page for a refusal (`error_page 401 403` in deploy/): auth_request drops the
    endpoint's body, so nginx asks for it here by status and reason; the same page or JSON
    the endpoint gave, nothing more (the reason is a code, the status 401 or 403)."""
    reason = request.query.get("reason", "")
    status = 401 if request.query.get("status") == "401" else 403
    reason = reason if _REASON.match(reason) else "access_denied"
    if reason in ("reverify", "fresh") and status == 401:
        prefix = request.app[CONFIG].path_prefix
        body = {"error": "verification_required", "reason": reason}
        return web.json_response({**body, "verify_url": f"{prefix}challenge"}, status=401)
    request[DECISION] = "page"
    return error_response(
        status=status,
        reason=reason,
        request_id=request[VIEW].request_id,
        html=wants_html(request.headers) and not _carries_credential(request),
        branding=request.app[CONFIG].branding,
        language=language(request),
        headers={"Cache-Control": "no-store"},
    )


def _carries_credential(request: web.Request) -> bool:
    """Whether the refused request carried an API credential in a header (nginx passes the
    client's headers on here): the endpoint answered it JSON, never a page, whatever it
    accepts. A credential in the query is not seen (nginx sends ours instead)."""
    guard = request.app.get(GUARD)
    if guard is None:
        return False
    try:
        return find_credential(request.headers, "", guard.places) is not None
    except AmbiguousCredential:
        return True


async def clear(request: web.Request, settings: ForwardAuth) -> web.StreamResponse:
    """Where a browser with a CRM cookie the endpoint refused is sent: the CRM's cookies are
    removed (only then: never a CRM session released to this browser's complete session)
    and the browser goes back to where it was going."""
    signin = request.app.get(SIGNIN)
    if signin is None:
        raise NotFound("no sign-in")
    back = safe_return_path(request.query.get("next", "")) or "/"
    response = signin.redirect(back)
    request[DECISION] = "page"
    session = await signin.session(request)
    full = session if session is not None and session.stage == FULL else None
    lines = request.headers.getall("Cookie", [])
    binding = full.crm_binding if full is not None else ""
    if signin.cookies.crm_pairs_refused(lines, full.user if full else None, binding):
        # As the browser spells them (`SID` for `sid`): a name it was not told to forget would
        # be refused again at the next request.
        for name in sorted(signin.cookies.crm_names_sent(lines)):
            response.headers.add("Set-Cookie", f"{name}=; Max-Age=0; Path=/")
    return response
