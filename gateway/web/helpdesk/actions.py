"""What a helpdesk administrator does to one user from the console: unlock, revoke sessions,
reset two-step verification, new recovery codes (shown once here, or sent to the user), forget
a device, forget the interval the user chose. The same changes as the CLI's
(gateway.admin.accounts), carried out at once in this gateway. One user per request; never on
oneself, never on a higher admin role, never by an auditor; each recorded as the CLI's are,
with the administrator's name (`details.by`)."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from gateway.admin import accounts
from gateway.config.console import Console
from gateway.errors import BadRequest
from gateway.i18n import DEFAULT, LANGUAGES, translate
from gateway.model import canonical_user
from gateway.senders import Message
from gateway.stores import AuditQuery
from gateway.web.audit import audit_event
from gateway.web.helpdesk.access import Admin, refused
from gateway.web.helpdesk.inputs import fields
from gateway.web.helpdesk.users import console_page
from gateway.web.pages.code_sending import deliver
from gateway.web.pages.forms import checked_form
from gateway.web.pages.notices import SIGN_INS, requested
from gateway.web.pages.render import translator
from gateway.web.signin import SignIn

ACTIONS = ("unlock", "revoke", "reset", "regenerate", "forget", "interval")
FORM = frozenset({"csrf", "user", "action", "device", "delivery", "keep_devices", "confirm"})


async def act(
    request: web.Request, signin: SignIn, console: Console, admin: Admin
) -> web.StreamResponse:
    await checked_form(request, admin.session)  # the CSRF token: audited and refused if wrong
    posted = await request.post()
    form = fields(((k, v) for k, v in posted.items() if isinstance(v, str)), FORM)
    action = form.get("action", "")
    if action not in ACTIONS:
        raise BadRequest(f"action {action[:40]!r}", reason="tampered")
    name = canonical_user(form.get("user", ""))
    view = signin.guard.view
    known = name and (name in view.users or name in await signin.durable.known_users())
    if not known:
        raise BadRequest(f"no user {form.get('user', '')[:80]!r}", reason="unknown_user")
    refusal = _refusal(admin, name, console.rank_of(view.user_for(name).roles))
    if refusal:
        return refused(request, refusal, user=name, action=action, link=_back(signin, name))
    now = signin.clock.now()
    store = signin.durable
    done = "unlocked"
    if action == "unlock":
        await signin.regulator.unlock(name)
        _record(request, "admin.unlock", name, admin)
    elif action == "revoke":
        keep = form.get("keep_devices") == "1"
        devices = await accounts.revoke_sessions(store, name, now, keep_devices=keep)
        await _end_sessions(signin, name, now)
        _record(
            request,
            "admin.sessions_revoked",
            name,
            admin,
            devices="kept" if devices is None else devices,
        )
        done = "revoked"
    elif action == "reset":
        if form.get("confirm") != "1":
            return refused(request, "not_confirmed", user=name, link=_back(signin, name))
        reset = await accounts.reset_two_step(store, name, now)
        await _end_sessions(signin, name, now)
        await signin.regulator.unlock(name)  # now here; the request it left does it again
        _record(
            request,
            "admin.reset_2fa",
            name,
            admin,
            authenticators=reset.authenticators,
            devices=reset.devices,
        )
        done = "reset"
    elif action == "forget":
        if not await accounts.forget_device(store, name, form.get("device", "")[:80], now):
            return refused(request, "unknown_device", user=name, link=_back(signin, name))
        _record(request, "admin.device_forgotten", name, admin)
        done = "forgotten"
    elif action == "interval":
        if await accounts.reset_interval(store, name, now):
            await signin.book.follow_choice(name, None)  # here at once; the request does it too
        _record(request, "admin.interval_reset", name, admin)
        done = "interval_reset"
    else:
        return await _regenerate(request, signin, admin, name, form.get("delivery", ""))
    return signin.redirect(f"{signin.prefix}admin/user?u={quote(name, safe='')}&done={done}")


def _refusal(admin: Admin, name: str, target_rank: int) -> str:
    if not admin.may_act:
        return "read_only"
    if name == admin.name:
        return "self"  # one's own sign-in is changed on one's account page, with its checks
    if target_rank > admin.rank:
        return "higher_role"
    return ""


def _back(signin: SignIn, name: str) -> tuple[str, str]:
    return (f"{signin.prefix}admin/user?u={quote(name, safe='')}", name)


def _record(request: web.Request, event: str, name: str, admin: Admin, **details: object) -> None:
    audit_event(request, event, outcome="ok", user=name, by=admin.name, via="console", **details)


async def _end_sessions(signin: SignIn, name: str, now: float) -> None:
    """The sessions still open end now, here and on every worker (the shared store holds
    them); the revocation in the durable store covers any this listing did not reach."""
    signin.book.revocations[name] = now
    for session in await signin.book.sessions_of(name, limit=1000):
        await signin.book.end(session)


async def _regenerate(
    request: web.Request, signin: SignIn, admin: Admin, name: str, delivery: str
) -> web.StreamResponse:
    if delivery not in ("show", "send"):
        raise BadRequest(f"delivery {delivery[:20]!r}", reason="tampered")
    channel = ""
    if delivery == "send":
        channel = next(
            (c for c in ("email", "sms") if c in signin.senders and signin.contact(name, c)), ""
        )
        if not channel:
            return refused(request, "no_contact", user=name, link=_back(signin, name))
    codes = await accounts.regenerate_codes(signin.durable, name, signin.clock.now())
    if codes is None:
        return refused(request, "no_authenticator", user=name, link=_back(signin, name))
    await signin.devices.forget_others(request, name, "recovery_regenerated")
    _record(request, "admin.recovery_regenerated", name, admin, delivery=delivery, channel=channel)
    t = translator(request)
    if delivery == "show":
        await requested(signin, "codes_regenerated", name)
        return console_page(
            request,
            admin,
            "codes.html",
            t("helpdesk.codes.title", user=name),
            "users",
            user=name,
            codes=codes,
        )
    lang = await _language_of(signin, name)
    product = signin.config.branding.product_name
    said = {"product": product, "codes": "\n".join(codes), "user": name}
    message = Message(
        to=signin.contact(name, channel),
        text=translate(lang, "helpdesk.codes_message.text", **said),
        subject=translate(lang, "helpdesk.codes_message.subject", **said)
        if channel == "email"
        else "",
    )
    delivery_done = await deliver(signin, name, channel, message)
    if not (delivery_done.ok or delivery_done.uncertain):
        audit_event(request, "admin.codes_not_sent", outcome="failed", user=name, reason=channel)
    return signin.redirect(f"{signin.prefix}admin/user?u={quote(name, safe='')}&done=sent")


async def _language_of(signin: SignIn, user: str) -> str:
    """The language of the user's last sign-in page, as notices are sent in."""
    found = await signin.durable.audit_events(
        AuditQuery(user=user, names=SIGN_INS, newest_first=True, limit=1)
    )
    lang = str(dict(found[0][1].details).get("lang", DEFAULT)) if found else DEFAULT
    return lang if lang in LANGUAGES else DEFAULT
