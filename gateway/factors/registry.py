"""The closed registry of second factors: every factor this gateway can offer, built once at
start from what it needs. The one place that names the factor classes."""

from __future__ import annotations

from collections.abc import Callable, Collection

from gateway.clock import Clock
from gateway.config.webauthn import WebAuthn
from gateway.crypto import Sealer
from gateway.factors.codes import CodeBook, SentCodeFactor
from gateway.factors.protocol import SecondFactor
from gateway.factors.recovery import RecoveryFactor
from gateway.factors.totp import TotpFactor, totp_purpose
from gateway.factors.webauthn import WebAuthnFactor, webauthn_purpose
from gateway.signin.regulation import Regulator
from gateway.stores import DurableStore, SharedStore


def build_factors(
    *,
    durable: DurableStore,
    regulator: Regulator,
    sealer: Sealer,
    clock: Clock,
    codes: CodeBook | None,
    channels: Collection[str],
    contact: Callable[[str, str], str],
    shared: SharedStore | None = None,
    relying_party: WebAuthn | None = None,
) -> dict[str, SecondFactor]:
    """Name → factor, in gateway.model.FACTOR_NAMES order. `channels`: the message channels with a
    provider configured ("sms", "email"); `contact(user, channel)`: the number or address on
    file; `shared` (the passkeys' challenges) and `relying_party` (public_url's, gateway.yaml):
    passkeys are offered only with both."""

    def sent(name: str) -> SentCodeFactor:
        return SentCodeFactor(name, codes if name in channels else None, contact)

    return {
        "totp": TotpFactor(durable, regulator, sealer, clock),
        "sms": sent("sms"),
        "email": sent("email"),
        "recovery": RecoveryFactor(durable, regulator, clock),
        "webauthn": WebAuthnFactor(durable, shared, regulator, sealer, clock, relying_party),
    }


# Authenticator kinds whose row holds a secret sealed under the seal key, and the purpose it
# is sealed for (user, row id → purpose): `crm-gateway keys rotate` re-seals every such row.
SEALED: dict[str, Callable[[str, str], str]] = {
    "totp": totp_purpose,
    "webauthn": webauthn_purpose,
}


async def retired_factors(
    factors: dict[str, SecondFactor], offered: list[str], user: str
) -> tuple[str, ...]:
    """Factors the user added themselves that `offered` (the policy's, now) leaves out, still
    on file (gateway.signin.decision.Facts.retired)."""
    kept = [f for f, factor in factors.items() if factor.enrol_page and f not in offered]
    return tuple([f for f in kept if await factors[f].on_file(user)])
