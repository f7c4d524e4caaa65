"""Bounded retries with exponential backoff, and what a Delivery may say: shared by the senders.
Only transient failures are tried again; nothing here raises for a failed delivery.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from gateway.senders.protocols import Delivery, Message

logger = logging.getLogger(__name__)

DETAIL_LIMIT = 200  # provider messages can be long; a Delivery says why in one line
_DIGITS = re.compile(r"\d{4,}")


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt; `transient` failures are worth another attempt."""

    ok: bool
    detail: str
    transient: bool = False
    uncertain: bool = False


Attempt = Callable[[], Awaitable[Outcome]]


def backoff_delay(base: float, retry: int) -> float:
    """Seconds to wait before retry number `retry` (1, 2, …): base, 2·base, 4·base, …"""
    return base * 2.0 ** (retry - 1)


def secrets_of(message: Message) -> list[str]:
    """What must never appear in a detail: the text, every number in it (the code), and the
    destination (a phone number or address is personal data; logs carry the user name)."""
    to = message.to
    return [message.text, *_DIGITS.findall(message.text), to, to.lstrip("+"), *_DIGITS.findall(to)]


def scrub(detail: str, secrets: Iterable[str]) -> str:
    """Remove every secret from a detail, then cut it to one short line."""
    # Longest first, so a secret that contains another is removed whole.
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        detail = detail.replace(secret, "[redacted]")
    detail = " ".join(detail.split())
    return detail if len(detail) <= DETAIL_LIMIT else detail[: DETAIL_LIMIT - 1] + "…"


def describe(exc: BaseException) -> str:
    """A transient exception in a few words: its type only, as its text may hold a URL key."""
    if isinstance(exc, TimeoutError):
        return f"timed out ({type(exc).__name__})"
    return f"connection failed ({type(exc).__name__})"


async def deliver(
    provider: str,
    attempt: Attempt,
    *,
    retries: int,
    backoff: float,
    transient: tuple[type[Exception], ...],
    secrets: Iterable[str],
    uncertain: tuple[type[Exception], ...] = (),
) -> Delivery:
    """Run `attempt` up to `retries` + 1 times while it fails transiently or raises `transient`.

    `uncertain` exceptions (a timeout or a cut connection once the request was sent) end the
    tries at once: the provider may have the message, and a retry would text the user twice."""
    made = 0
    outcome = Outcome(ok=False, detail="not attempted")
    for made in range(1, max(retries, 0) + 2):
        if made > 1:
            await asyncio.sleep(backoff_delay(backoff, made - 1))
        try:
            outcome = await attempt()
        except transient as exc:  # checked first: never connected is never uncertain
            outcome = Outcome(ok=False, detail=describe(exc), transient=True)
        except uncertain as exc:
            outcome = Outcome(ok=False, detail=describe(exc), uncertain=True)
        except Exception as exc:  # the Sender contract: a failed delivery is answered, not raised
            logger.warning("sender %s: unexpected %s", provider, type(exc).__name__)
            outcome = Outcome(ok=False, detail=f"unexpected {type(exc).__name__}")
        if outcome.ok or not outcome.transient:
            break
    return Delivery(
        ok=outcome.ok,
        provider=provider,
        detail=scrub(outcome.detail, secrets),
        attempts=made,
        uncertain=outcome.uncertain,
    )
