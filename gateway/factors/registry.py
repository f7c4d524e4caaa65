"""The closed registry of second factors: every factor this gateway can offer, built once at
start from what it needs. The one place that names the factor classes."""

from __future__ import annotations

from collections.abc import Callable, Collection

from gateway.clock import Clock
from gateway.crypto import Sealer
from gateway.factors.codes import CodeBook, SentCodeFactor
from gateway.factors.protocol import SecondFactor
from gateway.factors.recovery import RecoveryFactor
from gateway.factors.totp import TotpFactor, totp_purpose
from gateway.signin.regulation import Regulator
from gateway.stores import DurableStore


def build_factors(
    *,
    durable: DurableStore,
    regulator: Regulator,
    sealer: Sealer,
    clock: Clock,
    codes: CodeBook | None,
    channels: Collection[str],
    contact: Callable[[str, str], str],
) -> dict[str, SecondFactor]:
    """Name → factor, in gateway.model.FACTOR_NAMES order. `channels`: the message channels with a
    provider configured ("sms", "email"); `contact(user, channel)`: the number or address on
    file."""

    def sent(name: str) -> SentCodeFactor:
        return SentCodeFactor(name, codes if name in channels else None, contact)

    return {
        "totp": TotpFactor(durable, regulator, sealer, clock),
        "sms": sent("sms"),
        "email": sent("email"),
        "recovery": RecoveryFactor(durable, regulator, clock),
    }


# Authenticator kinds whose row holds a secret sealed under the seal key, and the purpose it
# is sealed for (user, row id → purpose): `crm-gateway keys rotate` re-seals every such row.
SEALED: dict[str, Callable[[str, str], str]] = {"totp": totp_purpose}
