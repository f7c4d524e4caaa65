"""Recovery codes to save: shown once they are made (and again at later sign-ins until the
user confirms they saved them), as a page and as a text file to download."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import NotFound
from gateway.signin.session import FULL, PASSWORD, Session
from gateway.web.audit import audit_event
from gateway.web.pages.forms import checked_form
from gateway.web.pages.frame import needs, session_page
from gateway.web.pages.render import translator, when
from gateway.web.signin import SignIn


@needs(PASSWORD, FULL)
async def recovery_codes(
    request: web.Request, signin: SignIn, session: Session
) -> web.StreamResponse:
    codes = signin.pending.unsealed(session, "recovery")
    if codes is None:
        return signin.redirect(
            f"{signin.prefix}{'account' if session.stage == FULL else 'challenge'}"
        )
    t = translator(request)
    error = ""
    if request.method == "POST":
        form = await checked_form(request, session)
        if form.get("saved") == "1":
            after = signin.pending.unsealed(session, "after_codes")
            await signin.pending.codes_saved(session)
            audit_event(request, "recovery.confirmed", outcome="ok", user=session.user)
            if session.stage == PASSWORD:
                # The factor just added (an app unless the passkey page said otherwise).
                added = signin.pending.unsealed(session, "enrolled") or "totp"
                return await signin.complete(request, session, factor=added)
            return signin.redirect(after or f"{signin.prefix}account")
        error = t("recovery.must_confirm")
    return session_page(
        request,
        session,
        "recovery.html",
        t("recovery.title"),
        status=400 if error else 200,
        codes=codes.split("\n"),
        error=error,
        printing=request.query.get("print") == "1",
    )


@needs(PASSWORD, FULL)
async def recovery_codes_file(
    request: web.Request, signin: SignIn, found: Session
) -> web.StreamResponse:
    codes = signin.pending.unsealed(found, "recovery")
    if codes is None:
        raise NotFound("no recovery codes waiting to be saved")
    t = translator(request)
    header = t(
        "recovery.file_header",
        user=found.user,
        product=signin.config.branding.product_name,
        date=when(signin.clock.now())[:10],
    )
    return web.Response(
        text=header + "\n\n" + codes + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="recovery-codes.txt"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
