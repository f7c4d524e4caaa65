"""The enrolment page: adding an authenticator app (a QR code and its key, confirmed by a
first code) when the policy asks for a factor the user does not have yet, or from the
account page after a step-up; recovery codes are issued with the first factor."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.factors import totp
from gateway.factors.totp import MAX_AUTHENTICATORS
from gateway.model import Settings
from gateway.signin.session import FULL, PASSWORD, Session
from gateway.web.audit import audit_event
from gateway.web.keys import VIEW
from gateway.web.pages.forms import checked_form
from gateway.web.pages.frame import before_change, needs, no_factor, session_page
from gateway.web.pages.notices import notify_factor_added
from gateway.web.pages.render import locked_text, retry_after, translator
from gateway.web.signin import SignIn


@needs(PASSWORD, FULL)
async def enrol(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    user = session.user
    decided = await before_change(request, signin, session, "enrol")
    if decided is not None:
        return decided
    settings = signin.settings(user)
    if "totp" not in settings.factors:
        # Only factors this version cannot check (SMS, e-mail) are allowed.
        return no_factor(request, user)
    t = translator(request)
    apps = len(await signin.totp.authenticators(user))
    if apps >= MAX_AUTHENTICATORS:
        # Only a signed-in user gets here: at the password stage an app on file meant the
        # challenge.
        return session_page(
            request,
            session,
            "notice.html",
            t("enrol.title"),
            status=409,
            paragraphs=[t("enrol.too_many")],
            link=(f"{signin.prefix}account", t("account.title")),
        )
    secret = signin.pending.unsealed(session, "totp")
    if secret is None:
        secret = totp.new_secret()
        signin.pending.seal(session, "totp", secret)
        await signin.book.save(session)
    error = ""
    name = t("enrol.default_name")
    locked_until = await signin.regulator.locked_until(user, request[VIEW].ip)
    if request.method == "POST" and not locked_until:
        form = await checked_form(request, session)
        name = form.get("name", "").strip()[:64] or t("enrol.default_name")
        verdict = await signin.totp.check_new(
            user, secret, form.get("code", "")[:64], request[VIEW].ip
        )
        if verdict.ok:
            # The first factor of any kind (a passkey counts) brings recovery codes.
            first = not await signin.durable.authenticators(user)
            return await _enrolled(request, signin, session, secret, name, first=first)
        audit_event(request, "enrol.failed", outcome="failed", user=user, reason=verdict.reason)
        locked_until = verdict.locked_until
        # The code was right but already used (re-enrolling within a step of the last code).
        error = t("enrol.replayed" if verdict.reason == "replayed" else "enrol.wrong_code")
    status = 400 if error else 200
    if locked_until:
        error, status = locked_text(request, locked_until, "challenge.locked"), 429
    product = signin.config.branding.product_name
    uri = totp.provisioning_uri(secret, user, product)
    response = session_page(
        request,
        session,
        "enrol.html",
        t("enrol.title"),
        status=status,
        error=error,
        notice=t("enrol.intro") if not apps else "",
        qr=totp.qr_svg(uri, t("enrol.qr_label")),
        key=totp.grouped(secret),
        uri=uri,
        name=name,
        **choices(request, signin, session, settings, "totp"),
    )
    if locked_until:
        response.headers["Retry-After"] = retry_after(request, locked_until)
    return response


async def _enrolled(
    request: web.Request, signin: SignIn, session: Session, secret: str, name: str, *, first: bool
) -> web.StreamResponse:
    user = session.user
    await signin.totp.add(user, secret, name)
    audit_event(request, "enrol.completed", outcome="ok", user=user, reason="totp")
    if not first:
        await signin.devices.forget_others(request, user, "factor_added")
    notify_factor_added(request, signin, user, name)
    session.pending.pop("totp", None)
    wants_codes = "recovery" in signin.settings(user).factors
    # The new authenticator just produced a right code: that is a passed factor.
    return await factor_added(request, signin, session, "totp", first=first, codes=wants_codes)


def choices(
    request: web.Request, signin: SignIn, session: Session, settings: Settings, kind: str
) -> dict[str, Any]:
    """What both enrolment pages (an app, a passkey) offer around their form: the deadline
    and the skip button while enrolment is asked for but not yet required, the other factors
    the user may add instead of `kind` (each on its own page), and the way back to the
    account page once signed in (templates/enrol-choices.html)."""
    t = translator(request)
    deadline, can_skip = "", False
    if settings.enforcement == "required_from" and session.stage == PASSWORD:
        deadline = t("enrol.deadline", date=settings.required_from)
        can_skip = not signin.mandatory(settings)
    others = [f for f in signin.offered(settings) if f != kind and signin.factors[f].enrol_page]
    return {
        "deadline": deadline,
        "can_skip": can_skip,
        "alternatives": [
            (f"{signin.prefix}{signin.factors[f].enrol_page}", t(f"enrol.use_{f}")) for f in others
        ],
        "cancel": f"{signin.prefix}account" if session.stage == FULL else "",
    }


async def factor_added(
    request: web.Request, signin: SignIn, session: Session, kind: str, *, first: bool, codes: bool
) -> web.StreamResponse:
    """After a new factor of `kind` answered its first challenge, which counts as a passed
    factor: recovery codes (when `codes` and this is the first factor, or none are left),
    then the codes page, the rest of the sign-in, or the account page."""
    user = session.user
    if codes and (first or await signin.recovery.left(user) == 0):
        await signin.pending.offer_codes(session, await signin.recovery.new_codes(user))
        audit_event(request, "recovery.generated", outcome="ok", user=user)
    session.verified = signin.clock.now()
    await signin.book.save(session)
    if "recovery" in session.pending:
        return signin.redirect(f"{signin.prefix}recovery-codes")
    if session.stage == PASSWORD:
        return await signin.complete(request, session, factor=kind)
    return signin.redirect(f"{signin.prefix}account?added=1")


@needs(PASSWORD)
async def skip(request: web.Request, signin: SignIn, found: Session) -> web.StreamResponse:
    await checked_form(request, found)
    decided = await before_change(request, signin, found, "enrol")
    if decided is not None:
        # Postponing is for enrolment only: a user with a factor on file always answers it.
        return decided
    settings = signin.settings(found.user)
    if settings.enforcement != "required_from" or signin.mandatory(settings):
        return signin.redirect(f"{signin.prefix}enrol")
    audit_event(request, "enrol.postponed", outcome="ok", user=found.user)
    return await signin.complete(request, found, factor="")
