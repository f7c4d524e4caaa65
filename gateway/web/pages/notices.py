"""Telling a user that their account changed: a sign-in method added or removed, a recovery
code used, new recovery codes, a password accepted from a network they never signed in from,
two-step verification reset by IT. By e-mail when an address and an e-mail provider exist,
else by SMS, in the user's language, with when, from where and in which browser. Each kind
can be turned off (`notices:` in gateway.yaml). Sent in the background (a slow provider never
holds a page), recorded in the ledger and the audit trail, never retried endlessly.

Three ways in: `notify` for a change made by a page (the request says the language and
where from), `NewNetworks` for the alert rules' finding of a new network (an audit event),
and `requested` for what an administrator's command asked the running gateway to send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.i18n import DEFAULT, LANGUAGES, translate
from gateway.model import AuditEvent
from gateway.senders import Message
from gateway.stores import AuditQuery
from gateway.web.audit import audit_event
from gateway.web.devices import device_label
from gateway.web.keys import VIEW
from gateway.web.pages.code_sending import deliver
from gateway.web.pages.render import language
from gateway.web.signin import SignIn

log = logging.getLogger("gateway.notices")

# The audit events whose `lang` detail says which language a user's pages were in.
SIGN_INS = ("signin.crm_ok", "signin.password_ok")
# How a notice's audit event is recorded: (event name, outcome, reason).
_Recorder = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Where:
    """What a notice says of the change: where from and in which browser."""

    ip: str
    browser: str


def notify(request: web.Request, signin: SignIn, user: str, kind: str, **values: str) -> None:
    """A page changed the user's account: tell them, if that kind is on and they can be
    reached (else an audit event says why not)."""
    where = Where(request[VIEW].ip, device_label(request.headers.get("User-Agent", "")))

    def record(name: str, outcome: str, reason: str) -> None:
        audit_event(request, name, outcome=outcome, user=user, reason=reason)

    _send(signin, user, kind, language(request), where, values, record)


def notify_factor_added(request: web.Request, signin: SignIn, user: str, name: str) -> None:
    notify(request, signin, user, "factor_added", name=name)


class NewNetworks:
    """A trail listener: the alert rules' `signin.new_network` event becomes the user's
    notice, in the language of the sign-in page they used."""

    def __init__(self, signin: SignIn) -> None:
        self._signin = signin

    def observe(self, event: AuditEvent) -> None:
        if event.name != "signin.new_network" or not event.user:
            return
        details = dict(event.details)
        lang = str(details.get("lang", DEFAULT))
        where = Where(event.ip, device_label(event.user_agent))
        values = {"network": str(details.get("network", event.ip))}
        _send(self._signin, event.user, "new_network", lang, where, values, self._record(event))

    def _record(self, event: AuditEvent) -> _Recorder:
        trail = self._signin.guard.trail

        def record(name: str, outcome: str, reason: str) -> None:
            trail.record(name, outcome, user=event.user, ip=event.ip, reason=reason)

        return record


async def requested(signin: SignIn, kind: str, user: str) -> None:
    """An administrator's command asked for this notice (`users reset-2fa`): in the language
    of the user's last sign-in, from the gateway itself."""
    found = await signin.durable.audit_events(
        AuditQuery(user=user, names=SIGN_INS, newest_first=True, limit=1)
    )
    lang = str(dict(found[0][1].details).get("lang", DEFAULT)) if found else DEFAULT
    trail = signin.guard.trail

    def record(name: str, outcome: str, reason: str) -> None:
        trail.record(name, outcome, user=user, reason=reason)

    _send(signin, user, kind, lang, Where("", ""), {}, record)


def _send(
    signin: SignIn,
    user: str,
    kind: str,
    lang: str,
    where: Where,
    values: dict[str, str],
    record: _Recorder,
) -> None:
    if kind not in signin.messaging.notices:
        return  # turned off in gateway.yaml
    channel = next(
        (c for c in ("email", "sms") if c in signin.senders and signin.contact(user, c)), ""
    )
    if not channel:
        record("notice.not_sent", "refused", "no_contact")
        return
    lang = lang if lang in LANGUAGES else DEFAULT
    said = {
        "product": signin.config.branding.product_name,
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(signin.clock.now())),
        "ip": where.ip or "-",
        "browser": where.browser or "-",
        **values,
    }
    message = Message(
        to=signin.contact(user, channel),
        text=translate(lang, f"notice.{kind}.text", **said),
        subject=translate(lang, f"notice.{kind}.subject", **said) if channel == "email" else "",
    )
    record(f"notice.{kind}", "ok", channel)

    async def send() -> None:
        delivery = await deliver(signin, user, channel, message)
        if not (delivery.ok or delivery.uncertain):
            log.warning("notice to %s not sent by %s: %s", user, channel, delivery.detail)

    signin.tasks.spawn(send(), name=f"notice to {user}")
