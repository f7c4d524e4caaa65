"""Codes by SMS and e-mail on the challenge page: sending one (cooldown, caps, the provider,
the ledger, the audit line) and what the page says about it. Checking a typed code is
gateway.factors.codes; the page itself is gateway.web.pages.challenge.

Sending answers with a redirect back to the challenge (`?factor=sms&sent=…`), so a reload
never sends a second message.
"""

from __future__ import annotations

import logging
import math
from decimal import Decimal

from aiohttp import web

from gateway.factors.codes import CodeBook
from gateway.factors.contact import message_subject, message_text
from gateway.metrics import record_message
from gateway.senders import Delivery, Message
from gateway.signin.session import Session
from gateway.stores import LedgerRow
from gateway.web.audit import audit_event
from gateway.web.keys import VIEW
from gateway.web.pages.forms import checked_form
from gateway.web.pages.render import language, translator
from gateway.web.signin import SignIn

log = logging.getLogger("gateway.codes")

_SENT_MESSAGES = {
    "failed": "challenge.send_failed",
    "hourly_cap": "challenge.hourly_cap",
    "ip_cap": "challenge.ip_cap",
}


async def deliver(signin: SignIn, user: str, channel: str, message: Message) -> Delivery:
    """Send one message by SMS or e-mail and record it: the ledger (with its cost when it was
    sent, or perhaps sent: a timeout after the request left) and the metrics."""
    sender = signin.senders[channel]
    settings = signin.messaging.sms if channel == "sms" else signin.messaging.email
    assert settings is not None  # a sender exists only for a configured channel
    delivery = await sender.send(message)
    charged = delivery.ok or delivery.uncertain
    status = "sent" if delivery.ok else "unknown" if delivery.uncertain else "failed"
    cost = settings.cost if charged else Decimal(0)
    await signin.durable.record_message(
        LedgerRow(
            time=signin.clock.now(),
            user=user,
            groups=",".join(signin.guard.user_for(user).groups),
            channel=channel,
            provider=delivery.provider,
            status=status,
            attempts=delivery.attempts,
            cost=str(cost),
            currency=settings.currency,
        )
    )
    record_message(channel, delivery.provider, charged, cost, settings.currency)
    return delivery


def _minutes(codes: CodeBook) -> int:
    """How long a code works, in whole minutes as the page and the message say it."""
    return max(1, math.ceil(codes.rules.ttl / 60))


def sent_problem(request: web.Request) -> str:
    """What the challenge page says about the last request to send a code (after the
    redirect of `send_code`): why nothing was sent, or how long to wait."""
    t = translator(request)
    sent = request.query.get("sent", "")
    if sent in _SENT_MESSAGES:
        return t(_SENT_MESSAGES[sent])
    if sent == "cooldown":
        wait = request.query.get("wait", "")
        seconds = min(int(wait), 3600) if wait.isdigit() and len(wait) < 6 else 60
        return t("challenge.resend_wait", seconds=seconds)
    return ""


async def send_code(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    form = await checked_form(request, session)
    factor = form.get("factor", "")
    if factor not in signin.factors or not signin.factors[factor].sends:
        return signin.redirect(f"{signin.prefix}challenge")
    user = session.user
    back = f"{signin.prefix}challenge?factor={factor}"
    sender = signin.senders.get(factor)
    contact = signin.contact(user, factor)
    allowed = factor in signin.settings(user).factors
    if signin.codes is None or sender is None or not contact or not allowed:
        return signin.redirect(back)
    ip = request[VIEW].ip
    if await signin.regulator.locked_until(user, ip):
        return signin.redirect(back)  # the page says until when; nothing is sent meanwhile
    issued = await signin.codes.issue(user, factor, ip, contact, session.sid)
    if not issued.ok:
        audit_event(request, "code.refused", outcome="refused", user=user, reason=issued.reason)
        wait = f"&wait={math.ceil(issued.wait)}" if issued.reason == "cooldown" else ""
        return signin.redirect(f"{back}&sent={issued.reason}{wait}")
    channel = signin.messaging.sms if factor == "sms" else signin.messaging.email
    assert channel is not None  # a sender exists only for a configured channel
    lang = language(request)
    values = {
        "code": issued.code,
        "minutes": _minutes(signin.codes),
        "product": signin.config.branding.product_name,
    }
    message = Message(
        to=contact,
        text=message_text(channel, factor, lang, **values),
        subject=message_subject(channel, lang, **values) if factor == "email" else "",
    )
    codes = signin.codes

    async def send_and_record() -> Delivery:
        delivery = await deliver(signin, user, factor, message)
        if not (delivery.ok or delivery.uncertain):
            await codes.withdraw(user, factor)  # not sent: void, and may be asked for again
        return delivery

    # Shielded: a browser that goes away mid-send must not leave a sent SMS unbilled.
    delivery = await signin.tasks.shielded(send_and_record(), name=f"{factor} code to {user}")
    if not (delivery.ok or delivery.uncertain):
        log.warning(
            "%s code for %s not sent by %s: %s", factor, user, delivery.provider, delivery.detail
        )
        audit_event(request, "code.send_failed", outcome="failed", user=user, reason=factor)
        return signin.redirect(f"{back}&sent=failed")
    audit_event(
        request, "code.sent", outcome="ok" if delivery.ok else "unknown", user=user, reason=factor
    )
    return signin.redirect(back)
