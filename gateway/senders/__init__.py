"""Code senders behind one Protocol; `open_sender` is the closed registry chosen by config.

Senders never import the core or the web layer, and never raise for a failed delivery.
"""

from __future__ import annotations

from typing import assert_never

from gateway.clock import Clock
from gateway.config.messaging import (
    HttpProvider,
    OutboxProvider,
    Provider,
    SmtpProvider,
    TwilioProvider,
)
from gateway.senders.http import HttpSender
from gateway.senders.outbox import OutboxSender
from gateway.senders.protocols import Delivery, Message, Sender
from gateway.senders.smtp import SmtpSender
from gateway.senders.twilio import TwilioSender

__all__ = [
    "Delivery",
    "HttpSender",
    "Message",
    "OutboxSender",
    "Sender",
    "SmtpSender",
    "TwilioSender",
    "open_sender",
]


def open_sender(provider: Provider, *, clock: Clock | None = None, channel: str = "") -> Sender:
    """The sender for a configured provider; `clock` stamps outbox lines and e-mail dates,
    `channel` ("sms", "email") labels outbox lines. HTTP sessions open on first send."""
    match provider:
        case HttpProvider():
            return HttpSender(provider)
        case TwilioProvider():
            return TwilioSender(provider)
        case SmtpProvider():
            return SmtpSender(provider, clock=clock)
        case OutboxProvider():
            return OutboxSender(provider, clock=clock, channel=channel)
        case _:
            assert_never(provider)
