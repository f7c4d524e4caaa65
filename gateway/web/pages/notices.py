"""Telling a user that their account changed (a sign-in method was added): by e-mail when an
address and an e-mail provider exist, else by SMS, in the language of the page that made the
change, with when, from where and in which browser. Sent in the background (a slow provider
never holds the page), recorded in the ledger and the audit trail, never retried endlessly.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from gateway.i18n import translate
from gateway.senders import Message
from gateway.web.audit import audit_event
from gateway.web.devices import device_label
from gateway.web.keys import VIEW
from gateway.web.pages.codes import deliver
from gateway.web.pages.render import language
from gateway.web.signin import SignIn

log = logging.getLogger("gateway.notices")


def notify_factor_added(request: web.Request, signin: SignIn, user: str, name: str) -> None:
    """Send the "a sign-in method was added" notice, if this user can be reached."""
    channel = next(
        (c for c in ("email", "sms") if c in signin.senders and signin.contact(user, c)), ""
    )
    if not channel:
        audit_event(request, "notice.not_sent", outcome="refused", user=user, reason="no_contact")
        return
    lang = language(request)
    values = {
        "product": signin.config.branding.product_name,
        "name": name,
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(signin.clock.now())),
        "ip": request[VIEW].ip,
        "browser": device_label(request.headers.get("User-Agent", "")),
    }
    message = Message(
        to=signin.contact(user, channel),
        text=translate(lang, "notice.factor_added.text", **values),
        subject=translate(lang, "notice.factor_added.subject", **values)
        if channel == "email"
        else "",
    )
    audit_event(request, "notice.factor_added", outcome="ok", user=user, reason=channel)

    async def send() -> None:
        delivery = await deliver(signin, user, channel, message)
        if not (delivery.ok or delivery.uncertain):
            log.warning("notice to %s not sent by %s: %s", user, channel, delivery.detail)

    signin.tasks.spawn(send(), name=f"notice to {user}")
