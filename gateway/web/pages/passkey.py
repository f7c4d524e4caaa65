"""The passkey page: adding a passkey or security key (WebAuthn) as a first factor, where the
policy offers passkeys, or from the account page after a step-up; recovery codes come with a
first factor as they do with an app. Also serves the page script that asks the browser (the
only script of ours). What is checked is gateway.factors.webauthn's; this module turns it
into a page, an audit event and a metric."""

from __future__ import annotations

from aiohttp import web

from gateway.factors.webauthn import KIND, MAX_PASSKEYS, WebAuthnFactor
from gateway.metrics import PASSKEYS
from gateway.signin.session import FULL, PASSWORD, Session
from gateway.web.audit import audit_event
from gateway.web.pages.enrol import choices, factor_added
from gateway.web.pages.forms import checked_form
from gateway.web.pages.frame import before_change, needs, no_factor, session_page
from gateway.web.pages.notices import notify_factor_added
from gateway.web.pages.render import script, translator
from gateway.web.signin import SignIn


def passkeys(signin: SignIn) -> WebAuthnFactor:
    """The passkey factor, for the pages that add and list passkeys."""
    found = signin.factors[KIND]
    assert isinstance(found, WebAuthnFactor)
    return found


@needs(PASSWORD, FULL)
async def passkey(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    user = session.user
    decided = await before_change(request, signin, session, "passkey")
    if decided is not None:
        return decided
    settings = signin.settings(user)
    offered = signin.offered(settings)
    if KIND not in offered:  # not in the policy, or no public_url to make passkeys for
        return no_factor(request, user)
    factor = passkeys(signin)
    t = translator(request)
    had = len(await signin.durable.authenticators(user))  # of any kind: the first factor?
    error, status = "", 200
    name = t("passkey.default_name")
    if request.method == "POST":
        form = await checked_form(request, session)
        name = form.get("name", "").strip()[:64] or name
        outcome = await factor.register(user, session.sid, form.get("credential", ""), name)
        PASSKEYS.labels("register", outcome.reason).inc()
        if outcome.ok:
            return await _registered(request, signin, session, name, first=not had)
        audit_event(
            request,
            "webauthn.register_failed",
            outcome="failed",
            user=user,
            reason=outcome.reason,
            **({"detail": outcome.detail} if outcome.detail else {}),
        )
        error, status = t(f"challenge.{outcome.reason}"), 400
    if len(await factor.passkeys(user)) >= MAX_PASSKEYS:
        # Only a signed-in user gets here: at the password stage one on file meant the
        # challenge.
        return session_page(
            request,
            session,
            "notice.html",
            t("passkey.title"),
            status=409,
            paragraphs=[t("challenge.too_many")],
            link=(f"{signin.prefix}account", t("account.title")),
        )
    return session_page(
        request,
        session,
        "passkey.html",
        t("passkey.title"),
        status=status,
        error=error,
        notice=t("passkey.first") if not had else "",
        options=await factor.registration(user, session.sid),
        name=name,
        script="webauthn.js",
        **choices(request, signin, session, settings, KIND),
    )


async def _registered(
    request: web.Request, signin: SignIn, session: Session, name: str, *, first: bool
) -> web.StreamResponse:
    user = session.user
    audit_event(request, "webauthn.registered", outcome="ok", user=user, reason=KIND)
    if not first:
        await signin.devices.forget_others(request, user, "factor_added")
    notify_factor_added(request, signin, user, name)
    wants_codes = "recovery" in signin.offered(signin.settings(user))
    signin.pending.seal(session, "enrolled", KIND)  # what the recovery-codes page completes with
    # The new passkey just answered a challenge of ours, signed: that is a passed factor.
    return await factor_added(request, signin, session, KIND, first=first, codes=wants_codes)


async def serve_script(request: web.Request, signin: SignIn) -> web.StreamResponse:
    return web.Response(
        body=script("webauthn.js"),
        content_type="text/javascript",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
