"""Reading our own forms: small urlencoded UTF-8 bodies, a same-origin `Origin`, and the
session's CSRF token. Anything else is refused before a handler looks at it."""

from __future__ import annotations

from aiohttp import web

from gateway.crypto import same
from gateway.errors import BadRequest, CsrfFailed
from gateway.signin.session import Session
from gateway.web.audit import audit_event
from gateway.web.keys import VIEW

_FORM_LIMIT = 16 * 1024


async def read_form(request: web.Request) -> dict[str, str]:
    """Our forms are small urlencoded UTF-8 bodies; anything else is refused with 400."""
    if request.content_length is not None and request.content_length > _FORM_LIMIT:
        # Our forms are small (a passkey's answer, the largest, is a few KB): worth a line.
        audit_event(request, "form.too_large", outcome="refused", reason="form_too_large")
        raise BadRequest("form too large", reason="bad_request")
    if request.content_type != "application/x-www-form-urlencoded":
        raise BadRequest(f"a form of type {request.content_type!r}", reason="bad_request")
    origin = request.headers.get("Origin")
    host = request[VIEW].host
    if origin is not None and origin != "null" and origin.split("://", 1)[-1] != host:
        raise CsrfFailed(f"cross-origin form from {origin[:100]!r}")
    try:
        data = await request.post()
    except (ValueError, LookupError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"form does not parse: {type(exc).__name__}", reason="bad_request"
        ) from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def checked_form(request: web.Request, session: Session) -> dict[str, str]:
    """The posted form, after the CSRF token and (when sent) Origin are checked."""
    data = await read_form(request)
    if not same(data.get("csrf", ""), session.csrf):
        audit_event(request, "csrf.failed", outcome="refused", reason="csrf_failed")
        raise CsrfFailed("CSRF token missing or wrong")
    return data
