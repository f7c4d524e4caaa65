"""The account page of a signed-in user: their sign-in methods (apps, passkeys), recovery
codes left, how often they are asked for a code (their interval, within the policy's) and
remembered devices. Removing an app or a passkey, new recovery codes and a longer interval ask
for a factor passed within `sessions.step_up_window` first; forgetting a device or a shorter
interval does not (they only take trust away)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.metrics import PASSKEYS
from gateway.model import FACTOR_NAMES, format_interval
from gateway.signin.interval import applies, loosens, open_to, parse_choice
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
        "interval_saved": "account.interval_saved",
    }
    notice = next((t(v, name="") for k, v in notices.items() if k in request.query), "")
    errors = {"last": "account.cannot_remove_last", "interval_refused": "account.interval_refused"}
    error = next((t(v) for k, v in errors.items() if k in request.query), "")
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
        **await _interval(signin, user, t),
    )


def interval_name(t: Callable[..., str], seconds: float) -> str:
    """A verification interval in the user's language: a named one ("Daily"), or the
    policy's own duration as it is written ("12h")."""
    written = format_interval(seconds)
    key = f"interval.{written}"
    named = t(key)
    return named if named != key else t("interval.other", interval=written)


async def _interval(signin: SignIn, user: str, t: Callable[..., str]) -> dict[str, object]:
    """The interval section's values: the policy's (the cap), the choices open under it (the
    policy's own first), the one in force, and whether an earlier choice no longer counts."""
    cap = signin.settings(user).interval
    found = await signin.durable.interval_choice(user)
    chosen = None if found is None else found.seconds
    counts = applies(cap, chosen)
    choices = [("policy", t("account.interval_policy", interval=interval_name(t, cap)))]
    choices += [(format_interval(s), interval_name(t, s)) for s in open_to(cap)]
    return {
        "interval_cap": interval_name(t, cap),
        "interval_choices": choices if cap > 0 else [],
        "interval_selected": format_interval(chosen) if counts and chosen is not None else "policy",
        "interval_now": interval_name(t, chosen if counts and chosen is not None else cap),
        "interval_overruled": interval_name(t, chosen) if chosen is not None and not counts else "",
    }


@needs(FULL)
async def account_interval(
    request: web.Request, signin: SignIn, session: Session
) -> web.StreamResponse:
    """The user chooses how often they are asked for a code, within the policy's interval
    ("policy": as the policy says). Anything else (a forged value, one at or above the cap)
    is refused and changes nothing. A change that asks less of the user in any way (a longer
    interval, or a longer `reverify`: hourly to `always`) asks for a fresh factor first; a
    stricter one does not. The choice is kept in the durable store and every
    open session of the user follows it at once."""
    form = await checked_form(request, session)
    user = session.user
    settings = signin.settings(user)
    cap = settings.interval
    value = form.get("interval", "")
    chosen = None if value == "policy" else parse_choice(value)
    if value != "policy" and (chosen is None or chosen not in open_to(cap)):
        audit_event(
            request,
            "interval.chosen",
            outcome="refused",
            user=user,
            reason="not_open",
            interval=value[:20],
            cap=format_interval(cap),
        )
        return signin.redirect(f"{signin.prefix}account?interval_refused=1")
    # Less often in any way (at sign-in, or inside a session): a factor first. Measured from
    # the session's copy and the stored choice both: a copy that lags the store (another
    # tab's change, an older session) never makes a loosening look like a tightening.
    found = await signin.durable.interval_choice(user)
    stored = None if found is None else found.seconds
    if loosens(settings, session.chosen_interval, chosen) or loosens(settings, stored, chosen):
        decided = await before_change(request, signin, session, "account")
        if decided is not None:
            return decided
    if chosen is None:
        await signin.durable.clear_interval_choice(user)
    else:
        await signin.durable.set_interval_choice(user, chosen, signin.clock.now())
    sessions = await signin.book.follow_choice(user, chosen)
    audit_event(
        request,
        "interval.chosen",
        outcome="ok",
        user=user,
        interval="policy" if chosen is None else format_interval(chosen),
        cap=format_interval(cap),
        sessions=sessions,
    )
    return signin.redirect(f"{signin.prefix}account?interval_saved=1")


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
