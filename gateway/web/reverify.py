"""A signed-in user whose verification is due (their `reverify` time has passed, or a path
rule asks for a fresher factor): the request is not forwarded, and the CRM session is left as
it is. A page the browser loads goes to the challenge and comes back after the code; a script
of the CRM's page (fetch, XMLHttpRequest) gets JSON naming where to verify, never a page or a
redirect it cannot follow; a form or an upload is kept and sent after the code
(gateway.web.kept).
"""

from __future__ import annotations

from aiohttp import web

from gateway.model import Decision
from gateway.signin.session import Session
from gateway.web.audit import audit_event
from gateway.web.client import Stream
from gateway.web.forwarding import is_navigation
from gateway.web.kept import keep
from gateway.web.keys import DECISION, SESSION
from gateway.web.signin import SignIn
from gateway.web.urls import safe_return_path


async def verify_again(
    request: web.Request,
    signin: SignIn,
    decision: Decision,
    target: str,
    body: bytes | Stream | None = None,
) -> web.StreamResponse:
    """`target`: the path as judged (normalised) and the raw query, what a kept request is
    sent to; `body`: the request's body when the pipeline has read it already, or the
    stream to read it through (gateway.web.bodies.HeldBack)."""
    session = request[SESSION]
    request[DECISION] = "signin"
    audit_event(
        request,
        "signin.verification_due",
        outcome="refused",
        user=session.user,
        reason=decision.reason,
    )
    here = safe_return_path(request.rel_url.raw_path_qs) or "/"
    session.due_reason, session.due = decision.reason, list(decision.factors)
    if not is_navigation(request.headers):
        return await due_for_script(signin, session, decision, {"Cache-Control": "no-store"})
    if request.method in ("GET", "HEAD"):
        session.return_to = here
        await signin.book.save(session)
        return signin.redirect(f"{signin.prefix}challenge")
    # A form or an upload: kept, sent after the code (or a page saying to submit it again).
    return await keep(request, signin, session, here, target, body)


async def due_for_script(
    signin: SignIn, session: Session, decision: Decision, headers: dict[str, str]
) -> web.Response:
    """The answer to a script of the page (fetch, XMLHttpRequest) whose user must verify, in
    the proxy and the forward-auth modes: JSON naming where, never a page or a redirect it
    cannot follow. The session, told what is due, is saved."""
    await signin.book.save(session)
    answer = {
        "error": "verification_required",
        "reason": decision.reason,
        "verify_url": f"{signin.prefix}challenge",
        "factors": list(decision.factors),
    }
    return web.json_response(answer, status=401, headers=headers)
