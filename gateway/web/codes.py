"""Codes by SMS and e-mail on the challenge page: sending one (cooldown, caps, the provider,
the ledger, the audit line) and what the page says about it. Checking a typed code is
gateway.factors.codes; the page itself is gateway.web.routes.

Sending answers with a redirect back to the challenge (`?factor=sms&sent=…`), so a reload
never sends a second message.
"""

from __future__ import annotations

import logging
import math
from decimal import Decimal
from typing import Any

from aiohttp import web

from gateway.crypto import same
from gateway.factors.codes import CHANNELS
from gateway.factors.contact import mask_email, mask_phone, message_subject, message_text
from gateway.metrics import record_message
from gateway.senders import Message
from gateway.session import Session
from gateway.stores import LedgerRow
from gateway.web.guard import audit_event
from gateway.web.keys import VIEW
from gateway.web.render import language, translator
from gateway.web.signin import SignIn

log = logging.getLogger("gateway.codes")

_SENT_MESSAGES = {
    "failed": "challenge.send_failed",
    "hourly_cap": "challenge.hourly_cap",
    "ip_cap": "challenge.ip_cap",
}


async def code_message_state(
    request: web.Request, signin: SignIn, user: str, factor: str
) -> dict[str, Any]:
    """What the challenge page shows for an SMS or e-mail code; {} for other factors."""
    if factor not in CHANNELS or signin.codes is None:
        return {}
    t = translator(request)
    contact = signin.contact(user, factor)
    if not contact:
        audit_event(request, "code.no_contact", outcome="refused", user=user, reason=factor)
        return {
            "channel": factor,
            "error": t(f"challenge.no_{'phone' if factor == 'sms' else 'email'}"),
        }
    shown = mask_phone(contact) if factor == "sms" else mask_email(contact)
    rules = signin.codes.rules
    state: dict[str, Any] = {
        "channel": factor,
        "to": shown,
        "pending": await signin.codes.pending(user, factor),
        "minutes": max(1, math.ceil(rules.ttl / 60)),
    }
    sent = request.query.get("sent", "")
    if sent in _SENT_MESSAGES:
        state["problem"] = t(_SENT_MESSAGES[sent])
    elif sent == "cooldown":
        state["problem"] = t("challenge.resend_wait", seconds=request.query.get("wait", "60"))
    return state


async def send_code(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    data = await request.post()
    token = data.get("csrf")
    if not isinstance(token, str) or not same(token, session.csrf):
        audit_event(request, "csrf.failed", outcome="refused", reason="csrf_failed")
        return signin.redirect(f"{signin.prefix}challenge")
    factor = str(data.get("factor", ""))
    user = session.user
    back = f"{signin.prefix}challenge?factor={factor}"
    sender = signin.senders.get(factor)
    contact = signin.contact(user, factor)
    allowed = factor in signin.settings(user).factors
    if signin.codes is None or sender is None or not contact or not allowed:
        return signin.redirect(back)
    ip = request[VIEW].ip
    issued = await signin.codes.issue(user, factor, ip)
    if not issued.ok:
        audit_event(request, "code.refused", outcome="refused", user=user, reason=issued.reason)
        wait = f"&wait={math.ceil(issued.wait)}" if issued.reason == "cooldown" else ""
        return signin.redirect(f"{back}&sent={issued.reason}{wait}")
    channel = signin.messaging.sms if factor == "sms" else signin.messaging.email
    assert channel is not None  # a sender exists only for a configured channel
    lang = language(request)
    values = {
        "code": issued.code,
        "minutes": max(1, math.ceil(signin.codes.rules.ttl / 60)),
        "product": signin.config.branding.product_name,
    }
    message = Message(
        to=contact,
        text=message_text(channel, factor, lang, **values),
        subject=message_subject(channel, lang, **values) if factor == "email" else "",
    )
    delivery = await sender.send(message)
    cost = channel.cost if delivery.ok else Decimal(0)
    groups = ",".join(signin.guard.user_for(user).groups)
    await signin.durable.record_message(
        LedgerRow(
            time=signin.clock.now(),
            user=user,
            groups=groups,
            channel=factor,
            provider=delivery.provider,
            status="sent" if delivery.ok else "failed",
            attempts=delivery.attempts,
            cost=str(cost),
            currency=channel.currency,
        )
    )
    record_message(factor, delivery.provider, delivery.ok, cost, channel.currency)
    if not delivery.ok:
        await signin.codes.withdraw(user, factor)
        log.warning(
            "%s code for %s not sent by %s: %s", factor, user, delivery.provider, delivery.detail
        )
        audit_event(request, "code.send_failed", outcome="failed", user=user, reason=factor)
        return signin.redirect(f"{back}&sent=failed")
    audit_event(request, "code.sent", outcome="ok", user=user, reason=factor)
    return signin.redirect(back)
