"""The account page of a signed-in user: their sign-in methods (apps, passkeys), recovery
codes left and remembered devices. Removing an app or a passkey and new recovery codes ask for
a factor passed within `sessions.step_up_window` first; forgetting a device does not (it only
takes trust away)."""

from __future__ import annotations

from aiohttp import web

from gateway.metrics import PASSKEYS
from gateway.model import FACTOR_NAMES
from gateway.signin.session import FULL, Session
from gateway.web.audit import audit_event
from gateway.web.pages.forms import checked_form
from gateway.web.pages.frame import before_change, needs, session_page
from gateway.web.pages.notices import notify
from gateway.web.pages.render import translator, when
from gateway.web.signin import SignIn


@needs(FULL)
async def account(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    user = session.user
    t = translator(request)
    authenticators = [
        {
            "id": a.id,
            "name": a.name,
            "kind": t(f"account.kind_{a.kind}"),
            "created": when(a.created)[:10],
            "last_used": when(a.last_used) if a.last_used else "",
        }
        for a in await signin.durable.authenticators(user)
        if a.kind in FACTOR_NAMES  # a kind a newer version made is left alone
    ]
    offered = signin.offered(signin.settings(user))
    adds = [  # the factors a user adds themselves that the policy offers: a button each
        (f"{signin.prefix}{signin.factors[f].enrol_page}", t(f"account.add_{f}"))
        for f in offered
        if signin.factors[f].enrol_page
    ]
    now = signin.clock.now()
    current = signin.devices.device_id(
        request, user
    )  # the list holds only this user's live devices
    devices = [
        {
            "id": d.id,
            "label": d.label,
            "until": when(d.remembered_until),
            "current": d.id == current,
        }
        for d in await signin.durable.devices(user)
        if d.remembered_until > now
    ]
    notices = {
        "added": "enrol.added",
        "removed": "account.removed",
        "forgotten": "account.device_forgotten",
    }
    notice = next((t(v, name="") for k, v in notices.items() if k in request.query), "")
    error = t("account.cannot_remove_last") if "last" in request.query else ""
    return session_page(
        request,
        session,
        "account.html",
        t("account.title"),
        user=user,
        authenticators=authenticators,
        adds=adds,
        recovery_left=await signin.recovery.left(user),
        devices=devices,
        notice=notice.replace("  ", " "),
        error=error,
    )


@needs(FULL)
async def account_remove(
    request: web.Request, signin: SignIn, session: Session
) -> web.StreamResponse:
    form = await checked_form(request, session)
    decided = await before_change(request, signin, session, "account")
    if decided is not None:
        return decided
    user = session.user
    rows = await signin.durable.authenticators(user)  # apps and passkeys: the last of any
    if len(rows) <= 1 and signin.settings(user).enforcement != "optional":
        return signin.redirect(f"{signin.prefix}account?last=1")
    chosen = form.get("id", "")
    kind = next((row.kind for row in rows if row.id == chosen), "")
    if await signin.durable.remove_authenticator(user, chosen):
        audit_event(request, "authenticator.removed", outcome="ok", user=user, factor=kind)
        if kind == "webauthn":
            PASSKEYS.labels("remove", "ok").inc()
        name = next((row.name for row in rows if row.id == chosen), "")
        notify(request, signin, user, "factor_removed", name=name)
        await signin.devices.forget_others(request, user, "factor_removed")
        if len(rows) <= 1:
            await signin.durable.replace_recovery_codes(user, [], signin.clock.now())
    return signin.redirect(f"{signin.prefix}account?removed=1")


@needs(FULL)
async def account_regenerate(
    request: web.Request, signin: SignIn, session: Session
) -> web.StreamResponse:
    await checked_form(request, session)
    decided = await before_change(request, signin, session, "account")
    if decided is not None:
        return decided
    codes = await signin.recovery.new_codes(session.user)
    await signin.pending.offer_codes(session, codes)
    await signin.book.save(session)
    await signin.devices.forget_others(request, session.user, "recovery_regenerated")
    audit_event(request, "recovery.regenerated", outcome="ok", user=session.user)
    notify(request, signin, session.user, "codes_regenerated")
    return signin.redirect(f"{signin.prefix}recovery-codes")


@needs(FULL)
async def account_forget_device(
    request: web.Request, signin: SignIn, found: Session
) -> web.StreamResponse:
    form = await checked_form(request, found)
    now = signin.clock.now()
    if await signin.durable.revoke_device(found.user, form.get("id", ""), now):
        audit_event(request, "device.revoked", outcome="ok", user=found.user)
    return signin.redirect(f"{signin.prefix}account?forgotten=1")
