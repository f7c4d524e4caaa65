"""Alerts out: a signed JSON POST to the webhook and a plain-text e-mail to each address.
Bounded retries (gateway.senders.retry); never raises for a failed delivery, and never puts
the webhook URL or secret in a detail (a chat webhook's URL is its key).
"""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp

from gateway.alerts.alert import Alert, alert_json, mail_text, signature
from gateway.clock import Clock
from gateway.config.alerts import Alerts, Webhook
from gateway.config.messaging import OutboxProvider
from gateway.senders.http import LazySession
from gateway.senders.outbox import OutboxSender
from gateway.senders.protocols import Delivery, Message, Sender
from gateway.senders.retry import Outcome, deliver
from gateway.senders.smtp import SmtpSender

# Unlike a code, an alert may arrive twice (receivers can drop a repeated `alert` id) but
# should not be lost: timeouts, cut connections and 5xx answers are all tried again.
_RETRIED: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError)


def _worth_retrying(status: int) -> bool:
    return status == 429 or status >= 500


class AlertDelivery:
    def __init__(self, config: Alerts, clock: Clock, *, backoff: float = 0.5) -> None:
        """`backoff`: seconds before the first retry, doubling after (tests make it short)."""
        self._webhook = config.webhook
        self._backoff = backoff
        self._session = LazySession(config.webhook.timeout) if config.webhook else None
        self._to = config.email.to if config.email else ()
        self._mailer: Sender | None = None
        if config.email is not None:
            provider = config.email.provider
            self._mailer = (
                OutboxSender(provider, clock=clock, channel="alert")
                if isinstance(provider, OutboxProvider)
                else SmtpSender(provider, clock=clock, backoff=backoff)
            )
        self.gateway = socket.gethostname()

    async def send(self, alert: Alert) -> list[tuple[str, Delivery]]:
        """Every configured destination at once: [("webhook", …), ("email", …)]."""
        names: list[str] = []
        jobs = []
        if self._webhook is not None and self._session is not None:
            names.append("webhook")
            jobs.append(self._post(alert, self._webhook, self._session))
        if self._mailer is not None and self._to:
            names.append("email")
            jobs.append(self._mail(alert, self._mailer))
        return list(zip(names, await asyncio.gather(*jobs), strict=True))

    async def _post(self, alert: Alert, webhook: Webhook, session: LazySession) -> Delivery:
        body = json.dumps(alert_json(alert, self.gateway), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "crm-gateway-alerts",
            "X-Gateway-Alert": alert.id,
        }
        if webhook.secret:
            headers["X-Gateway-Signature"] = signature(webhook.secret, body)

        async def attempt() -> Outcome:
            # Redirects are not followed: the signed body must go only where it was configured.
            async with session.get().post(
                webhook.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
            return Outcome(
                ok=200 <= status < 300,
                detail=f"status {status}",
                transient=_worth_retrying(status),
            )

        return await deliver(
            "webhook",
            attempt,
            retries=webhook.retries,
            backoff=self._backoff,
            transient=_RETRIED,
            secrets=[webhook.url, webhook.secret],
        )

    async def _mail(self, alert: Alert, mailer: Sender) -> Delivery:
        """One message per address (a refused address must not stop the others); one answer:
        ok when every address took it."""
        subject, text = mail_text(alert, self.gateway)
        answers = await asyncio.gather(
            *(mailer.send(Message(to, text, subject)) for to in self._to)
        )
        failed = [answer for answer in answers if not answer.ok]
        attempts = max(answer.attempts for answer in answers)
        if not failed:
            return Delivery(
                ok=True, provider=mailer.name, detail=answers[0].detail, attempts=attempts
            )
        detail = f"{len(failed)} of {len(answers)} addresses failed: {failed[0].detail}"
        return Delivery(ok=False, provider=mailer.name, detail=detail, attempts=attempts)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._mailer is not None:
            await self._mailer.close()
