"""Forms and uploads kept while a verification is due, and sent once it passes.

A request with a body that arrives when the user must verify again is read (up to
`sessions.keep_body`, 1 MiB by default, never further), sealed to the session and the user
and put in the shared store for KEEP_FOR seconds under an id only that session knows; the
browser goes to the challenge. One request waits per user: keeping another drops the one
before (memory stays bounded by users, not by what one of them sends). When a factor
passes, the entry is taken (so it is sent once at most), judged again as the request it is
(its body too, where a `_method` field could ask for a method a rule refuses), and sent to
the CRM as it came (method, headers, body bytes) to the path it was judged on (normalised,
as every forwarded request is) with the browser's cookies of now; the CRM's answer is the
answer to the challenge's form. An entry that is gone (used, expired), does not open
(tampered, another session's) or is over the size is never sent: the user is told plainly.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import SealBroken
from gateway.fields import overrides_method
from gateway.model import Action, Decision
from gateway.paths import judged_path
from gateway.signin.decision import Asks, Request, still_verified
from gateway.signin.session import Session
from gateway.web import proxy
from gateway.web.audit import audit_event
from gateway.web.client import Stream
from gateway.web.keys import CLOCK, SESSION, UPSTREAM_CLIENT, VIEW
from gateway.web.pages.render import page, translator
from gateway.web.signin import SignIn
from gateway.web.upstream import headers_for_crm
from gateway.web.urls import safe_return_path

KEEP_FOR = 300.0  # seconds a kept request waits for the code
# Not kept: the browser's cookies are taken again when it is sent (the CRM's of that moment).
_NOT_KEPT = frozenset({"cookie", "content-length", "transfer-encoding", "expect"})


@dataclass(frozen=True)
class Kept:
    method: str
    target: str  # the path as judged (normalised) and the raw query: what is sent
    headers: tuple[tuple[str, str], ...]
    body: bytes


async def keep(
    request: web.Request,
    signin: SignIn,
    session: Session,
    here: str,
    target: str,
    body: bytes | Stream | None = None,
) -> web.StreamResponse:
    """Keep the request for after the code, or (over the size) ask for it again after.
    `target`: the judged path and raw query; `body`: already read by the pipeline (to look
    for a `_method` field), else read here (through `body` when it is a stream)."""
    limit = signin.config.signin.sessions.keep_body
    if isinstance(body, bytes):
        whole = body if len(body) <= limit else None
    else:
        whole = await _read_up_to(request, limit, body)
    if whole is None:
        session.return_to = _came_from(request) or "/"
        await signin.book.save(session)
        audit_event(request, "kept.too_large", outcome="refused", user=session.user)
        t = translator(request)
        response = page(
            request,
            "notice.html",
            t("kept.title"),
            status=413,
            paragraphs=[t("kept.too_large")],
            link=(f"{signin.prefix}challenge", t("kept.verify")),
        )
        response.force_close()  # the rest of the body is never read
        return response
    kept = Kept(
        request.method,
        target,
        tuple((k, v) for k, v in request.headers.items() if k.lower() not in _NOT_KEPT),
        whole,
    )
    entry = secrets.token_urlsafe(18)
    sealed = signin.sealer.seal(_encode(kept), _purpose(session, entry))
    # One waiting request per user: the one before it is dropped (it would never be sent:
    # each session sends only the last it kept).
    before = await signin.shared.take(f"kept-of:{session.user}")
    if before is not None:
        await signin.shared.delete(f"kept:{before.decode()}")
    await signin.shared.put(f"kept:{entry}", sealed, KEEP_FOR)
    await signin.shared.put(f"kept-of:{session.user}", entry.encode(), KEEP_FOR)
    signin.pending.seal(session, "kept", entry)
    session.return_to = _came_from(request) or here
    await signin.book.save(session)
    audit_event(request, "kept.saved", outcome="ok", user=session.user, size=len(whole))
    return signin.redirect(f"{signin.prefix}challenge")


async def take(signin: SignIn, session: Session) -> tuple[str, Kept | None]:
    """The session's kept request, taken (it is sent once at most): ("", None) when it keeps
    none; (id, None) when it is gone (used, expired) or does not open."""
    entry = signin.pending.unsealed(session, "kept")
    if not entry:
        return "", None
    sealed = await signin.shared.take(f"kept:{entry}")
    if sealed is None:
        return entry, None
    try:
        return entry, _decode(signin.sealer.unseal(sealed, _purpose(session, entry)))
    except (SealBroken, ValueError, KeyError, TypeError):
        return entry, None


async def send(
    request: web.Request, signin: SignIn, fresh: Session, kept: Kept, cookie: tuple[str, str]
) -> web.StreamResponse:
    """Send a kept request now that a factor passed: judged again as itself (a policy may
    have changed meanwhile), the CRM's answer relayed with the new session's cookie."""
    now = request.app[CLOCK].now()
    raw_path, _, _ = kept.target.partition("?")
    who = signin.book.who(fresh)
    path = judged_path(raw_path, signin.guard.fold_paths)
    asked = Request(Asks.CRM, request[VIEW].ip, kept.method, path)
    view = signin.guard.view
    decision, overridable = signin.guard.decided(view, who, asked, signin.gateway_mode)
    decision = still_verified(view, who, decision, now)
    ctype = {k.lower(): v for k, v in kept.headers}.get("content-type", "")
    if overridable and overrides_method(kept.body, ctype):
        # A `_method` field asks the CRM for a method a rule now refuses (a reload meanwhile).
        decision = Decision(Action.DENY, "method_ambiguous")
    if decision.action is not Action.FORWARD:
        why = decision.reason
        audit_event(request, "kept.refused", outcome="refused", user=fresh.user, reason=why)
        return gone(request, signin, fresh, status=403)
    headers = CIMultiDict(kept.headers)
    if "Cookie" in request.headers:
        headers["Cookie"] = request.headers["Cookie"]
    sent = headers_for_crm(request, incoming=CIMultiDictProxy(headers))
    signin.cookies.adjust(fresh.user, fresh.crm_binding)(sent)
    answer = await request.app[UPSTREAM_CLIENT].request(kept.method, kept.target, sent, kept.body)
    audit_event(request, "kept.sent", outcome="ok", user=fresh.user, status=answer.status)
    request[SESSION] = fresh
    try:
        dropped = await signin.crm_cookie_set(request, fresh, answer)
        return await proxy.relay(request, answer, [cookie], drop_cookies=dropped)
    finally:
        answer.release()


def gone(
    request: web.Request, signin: SignIn, fresh: Session, *, status: int = 410
) -> web.Response:
    """What the user was sending was not sent: say so, and lead back to where they were."""
    t = translator(request)
    return page(
        request,
        "notice.html",
        t("kept.title"),
        status=status,
        paragraphs=[t("kept.gone")],
        link=(fresh.return_to or "/", t("kept.back")),
    )


def _purpose(session: Session, entry: str) -> str:
    return f"kept\x00{entry}\x00{session.sid}\x00{session.user}"


def _encode(kept: Kept) -> bytes:
    return json.dumps(
        {
            "method": kept.method,
            "target": kept.target,
            "headers": kept.headers,
            "body": base64.b64encode(kept.body).decode(),
        }
    ).encode()


def _decode(data: bytes) -> Kept:
    found = json.loads(data)
    return Kept(
        str(found["method"]),
        str(found["target"]),
        tuple((str(k), str(v)) for k, v in found["headers"]),
        base64.b64decode(found["body"]),
    )


async def _read_up_to(request: web.Request, limit: int, through: Stream | None) -> bytes | None:
    """The whole body (read `through` a stream when given), or None as soon as it is longer
    than `limit` (never read further)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    source = through or request.content
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await source.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _came_from(request: web.Request) -> str:
    """The page the form was on (a same-site Referer), to come back to after the code."""
    referer = request.headers.get("Referer", "")
    found = urlsplit(referer)
    if not referer or found.netloc != request[VIEW].host:
        return ""
    return safe_return_path(found.path + (f"?{found.query}" if found.query else "")) or ""
