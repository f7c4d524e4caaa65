"""The seams between the gateway and its state: what every backend must provide."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from gateway.model import AuditEvent


class Authenticator(NamedTuple):
    id: str
    user: str
    kind: str  # "totp"
    name: str  # the user's own label: "Phone", "Tablet"
    sealed: bytes  # the secret, sealed (gateway.crypto.Sealer) under `key_id`
    key_id: str
    created: float
    last_used: float | None = None


class Device(NamedTuple):
    """A browser that passed a second factor: when, and until when it is remembered."""

    id: str
    user: str
    label: str  # from the User-Agent, for the account page
    created: float
    verified: float
    remembered_until: float = 0.0
    revoked: float | None = None


class LedgerRow(NamedTuple):
    """One SMS or e-mail sent (or tried): what the quarterly bill adds up."""

    time: float
    user: str
    groups: str  # the user's groups when it was sent, comma-separated
    channel: str  # "sms" or "email"
    provider: str
    status: str  # "sent" or "failed"
    attempts: int
    cost: str  # a decimal amount, as text (no float rounding in a bill)
    currency: str


# The note in which the gateway names the seal keys it started with (JSON: ids, started).
SEAL_RING_NOTE = "seal_ring"


@dataclass(frozen=True)
class AuditQuery:
    """Which audit events to return. Names match exactly, or by prefix when they end in `*`
    ("challenge.*"); every given criterion must hold. `after_id` pages forward (tail -f)."""

    since: float = 0.0
    until: float = float("inf")
    user: str = ""
    names: tuple[str, ...] = ()
    ip: str = ""
    outcome: str = ""
    request_id: str = ""
    after_id: int = 0
    limit: int = 1000
    newest_first: bool = False


class DurableStore(Protocol):
    """Authenticators, recovery-code hashes, token hashes, audit events: survives restarts."""

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable when it does not."""
        ...

    async def close(self) -> None: ...

    async def add_token(
        self, token_id: str, user: str, token_digest: bytes, label: str, now: float
    ) -> None: ...

    async def revoke_token(self, token_id: str, now: float) -> bool:
        """True when an active token was revoked; False when none had that id."""
        ...

    async def tokens(self) -> list[tuple[str, str, str, float, float | None]]: ...

    async def active_tokens(self) -> tuple[int, list[tuple[str, str, bytes]]]:
        """(version, [(id, user, digest)]): the version changes whenever tokens change."""
        ...

    async def tokens_version(self) -> int: ...

    async def add_authenticator(self, row: Authenticator) -> None: ...

    async def authenticators(self, user: str) -> list[Authenticator]: ...

    async def all_authenticators(self) -> list[Authenticator]: ...

    async def reseal_authenticator(
        self, auth_id: str, sealed: bytes, key_id: str, *, expected: bytes
    ) -> bool:
        """Replace the sealed secret only while it is still `expected`; True when replaced."""
        ...

    async def touch_authenticator(self, auth_id: str, now: float) -> None: ...

    async def remove_authenticator(self, user: str, auth_id: str) -> bool: ...

    async def replace_recovery_codes(self, user: str, digests: list[bytes], now: float) -> None: ...

    async def use_recovery_code(self, user: str, digest: bytes, now: float) -> bool:
        """Mark an unused code used; False when there is none (wrong, or used before)."""
        ...

    async def recovery_codes_left(self, user: str) -> int: ...

    async def save_device(self, row: Device) -> None:
        """Insert, or update verified/remembered_until of the user's own unrevoked device."""
        ...

    async def device(self, device_id: str) -> Device | None: ...

    async def devices(self, user: str) -> list[Device]:
        """The user's devices that are not revoked."""
        ...

    async def revoke_device(self, user: str, device_id: str, now: float) -> bool: ...

    async def revoke_sessions(self, user: str, now: float) -> None: ...

    async def revocations(self) -> tuple[int, dict[str, float]]:
        """(version, {user: sessions started before this time are void})."""
        ...

    async def revocations_version(self) -> int: ...

    async def record_message(self, row: LedgerRow) -> None: ...

    async def messages(self, since: float, until: float) -> list[LedgerRow]: ...

    async def set_factor_choice(self, user: str, factor: str) -> None: ...

    async def request_action(self, action: str, user: str, now: float) -> int: ...

    async def pending_requests(self) -> list[tuple[int, str, str]]: ...

    async def claim_request(self, request_id: int, now: float) -> bool: ...

    async def request_done(self, request_id: int) -> bool: ...

    async def remove_authenticators(self, user: str) -> int: ...

    async def revoke_devices(self, user: str, now: float) -> int: ...

    async def known_users(self) -> list[str]: ...

    async def factor_choice(self, user: str) -> str:
        """The factor the user last passed with ("" when none yet)."""
        ...

    async def add_audit_events(self, events: list[AuditEvent]) -> None:
        """Append events, all or none."""
        ...

    async def audit_events(self, query: AuditQuery) -> list[tuple[int, AuditEvent]]:
        """(id, event) pairs, oldest first unless the query asks otherwise; ids only grow."""
        ...

    async def prune_audit(self, before: float) -> int:
        """Remove events older than `before`; how many went."""
        ...

    async def note_network(self, user: str, network: str, now: float) -> bool:
        """Remember that `user` signed in from `network`; True when it was new to them."""
        ...

    async def set_note(self, name: str, value: str) -> None:
        """A small named value the running gateway leaves for the admin commands."""
        ...

    async def note(self, name: str) -> str:
        """The note's value ("" when none was left)."""
        ...

    async def networks(self, user: str) -> list[tuple[str, float, float]]:
        """(network, first seen, last seen) for the user, oldest first."""
        ...


class SharedStore(Protocol):
    """Short-lived state shared by every worker: sessions, replay guards, rate windows.

    Keys are text, values bytes, and every value has a time to live in seconds."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only when the key is absent (or expired); True when stored."""
        ...

    async def take(self, key: str) -> bytes | None:
        """Return and delete in one step: of two takers, one gets the value."""
        ...

    async def delete(self, key: str) -> None: ...

    async def replace(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only when the key is present (and live); True when stored. A session saved
        after it was ended elsewhere must stay ended."""
        ...

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Add `amount` and return the count; a new counter lives `ttl` seconds."""
        ...
