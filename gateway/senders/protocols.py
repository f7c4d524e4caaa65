"""The seam between the gateway and whatever delivers a code: one Protocol for SMS and e-mail.

A sender never raises for a failed delivery: it answers a Delivery that says what happened
(the web layer shows "could not be sent" and offers another factor; the ledger records it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Message:
    to: str  # E.164 phone number, or an e-mail address
    text: str
    subject: str = ""  # e-mail only


@dataclass(frozen=True)
class Delivery:
    ok: bool
    provider: str  # "http", "twilio", "smtp", "outbox"
    detail: str = ""  # the provider's message id, or why it failed: never the text or a secret
    attempts: int = 1
    # Not known to have failed: the request may have reached the provider (a timeout or a cut
    # connection after sending). Not retried, so the user is never texted twice; the code
    # stays valid and the message is charged.
    uncertain: bool = False


class Sender(Protocol):
    name: str

    async def send(self, message: Message) -> Delivery: ...

    async def close(self) -> None: ...
