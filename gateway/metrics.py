"""Counters the operations tooling exposes (Prometheus): defined once, here, and updated by
the code that knows what happened. Exposition is the admin listener's job, not this module's."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import Counter

MESSAGES = Counter(
    "crm_gateway_codes_sent",
    "SMS and e-mail codes handed to a provider, by channel, provider and outcome",
    ["channel", "provider", "status"],
)
MESSAGE_COST = Counter(
    "crm_gateway_message_cost",
    "What the codes sent cost, in the configured currency",
    ["channel", "currency"],
)


def record_message(channel: str, provider: str, ok: bool, cost: Decimal, currency: str) -> None:
    MESSAGES.labels(channel, provider, "sent" if ok else "failed").inc()
    if cost:
        MESSAGE_COST.labels(channel, currency).inc(float(cost))
