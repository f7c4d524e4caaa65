"""What happens to a raised alert: the dedup check (one worker wins the shared store's `add`),
delivery in a bounded set of named tasks, and the record of it: an `alert.sent` or
`alert.failed` audit event and the crm_gateway_alerts counter for each destination.
"""

from __future__ import annotations

import logging

from gateway.alerts.alert import Alert
from gateway.alerts.delivery import AlertDelivery
from gateway.audit import AuditTrail
from gateway.clock import Clock
from gateway.config.alerts import Alerts
from gateway.errors import StoreUnavailable
from gateway.metrics import ALERTS
from gateway.stores.protocols import SharedStore
from gateway.tasks import Background

log = logging.getLogger("gateway.alerts")

MAX_SENDING = 32  # alerts being delivered at once; with dedup, more means a storm
KEY = "alert:sent:"


class Dispatcher:
    def __init__(
        self,
        config: Alerts,
        shared: SharedStore,
        clock: Clock,
        trail: AuditTrail,
        *,
        backoff: float = 0.5,
    ) -> None:
        self._dedup = config.dedup
        self._shared = shared
        self._trail = trail
        self._delivery = AlertDelivery(config, clock, backoff=backoff)
        self.sending = Background("alert delivery")

    async def dispatch(self, alert: Alert, *, dedup: str) -> None:
        """Deliver unless an alert with the same `dedup` name was sent within the window.
        Returns once delivery has started: it runs in a task of its own."""
        key = KEY + dedup
        if self._dedup and not await self._shared.add(key, alert.id.encode(), self._dedup):
            ALERTS.labels(alert.rule, "suppressed").inc()
            log.info("alert %s about %s suppressed: sent within dedup", alert.rule, alert.subject)
            return
        if len(self.sending) >= MAX_SENDING:
            self._record(alert, "all", ok=False, detail="too many alerts being delivered")
            await self._shared.delete(key)
            return
        self.sending.spawn(self._deliver(alert, key), name=f"alert delivery: {alert.rule}")

    async def _deliver(self, alert: Alert, dedup_key: str) -> None:
        try:
            answers = await self._delivery.send(alert)
        except Exception:  # the senders answer rather than raise; this is the last guard
            log.exception("alert %s not delivered", alert.rule)
            answers = []
        for destination, delivery in answers:
            self._record(
                alert,
                destination,
                ok=delivery.ok,
                detail=delivery.detail,
                attempts=delivery.attempts,
            )
        if not any(delivery.ok for _, delivery in answers):
            # Nobody heard it: the next crossing of the threshold may try again.
            try:
                await self._shared.delete(dedup_key)
            except StoreUnavailable as exc:
                log.warning("dedup mark of an undelivered alert kept: %s", exc.detail)

    def _record(
        self, alert: Alert, destination: str, *, ok: bool, detail: str, attempts: int = 0
    ) -> None:
        ALERTS.labels(alert.rule, "sent" if ok else "failed").inc()
        if ok:
            log.info("alert %s about %s sent by %s", alert.rule, alert.subject, destination)
        else:
            log.warning(
                "alert %s about %s not delivered by %s: %s",
                alert.rule,
                alert.subject,
                destination,
                detail,
            )
        extra = {} if ok else {"detail": detail}
        self._trail.record(
            "alert.sent" if ok else "alert.failed",
            "ok" if ok else "failed",
            user=alert.user,
            reason=alert.rule,
            alert=alert.id,
            destination=destination,
            subject=alert.subject,
            attempts=attempts,
            **extra,
        )

    async def close(self) -> None:
        await self._delivery.close()
