"""The seams between the gateway and its state: what every backend must provide (the rows it
keeps, the durable and shared stores). What a backend module gives the registry, and the
snapshots of backups, are gateway.stores.kinds. No implementation here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from gateway.model import AuditEvent

# StoreUnavailable.reason of a durable store that is not there (opened without `create`).
STORE_MISSING = "store_missing"
# StoreUnavailable.reason of a row refused because it would break a uniqueness rule.
DUPLICATE = "duplicate"


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


class IntervalChoice(NamedTuple):
    """The verification interval a user chose for themselves (the account page): seconds
    (0: at every sign-in), and when they chose it. The policy's interval caps it."""

    seconds: float
    chosen: float


# The note in which the gateway names the seal keys it started with (JSON: ids, started).
SEAL_RING_NOTE = "seal_ring"


@dataclass(frozen=True)
class AuditQuery:
    """Which audit events to return. Names match exactly, or by prefix when they end in `*`
    ("challenge.*"; case counts, no other character is a wildcard); every given criterion
    must hold. since <= time < until. `after_id` pages forward (tail -f), `before_id` back
    (a page of the newest first, then the one before it); 0 sets no bound."""

    since: float = 0.0
    until: float = float("inf")
    user: str = ""
    names: tuple[str, ...] = ()
    ip: str = ""
    outcome: str = ""
    request_id: str = ""
    after_id: int = 0
    before_id: int = 0
    limit: int = 1000
    newest_first: bool = False


class DurableStore(Protocol):
    """Authenticators, recovery-code hashes, token hashes, audit events: survives restarts.

    The contract every backend keeps (tests/contracts/test_durable_store.py holds each one):

    - Opened by the registry (gateway.stores.open_durable), ready to use; `close` ends it, a
      second `close` does nothing, and every call after it raises StoreUnavailable.
    - Whatever a backend raises for itself becomes StoreUnavailable where it enters (503,
      fail closed); `detail` names the store and the trouble in one line, `__cause__` is the
      backend's own error when there is one. A row that would break a uniqueness rule (a
      token registered twice, an authenticator id taken) raises StoreUnavailable with
      `reason == DUPLICATE`, and nothing is changed.
    - A change is whole or not at all, and once a call has returned it is seen by every other
      connection to the same store (another worker, another host) and after a restart.
    - Users, ids and names are compared exactly as given (case included): callers canonicalise.
      Times are seconds (floats) and come back exactly as given, text and bytes as given.
    """

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable when it does not."""
        ...

    async def close(self) -> None:
        """Release the store; harmless when called again. Later calls raise StoreUnavailable."""
        ...

    # -- API tokens -------------------------------------------------------------------------

    async def add_token(
        self, token_id: str, user: str, token_digest: bytes, label: str, now: float
    ) -> None:
        """Register a token (its digest only). An id or a digest registered before, revoked or
        not, is refused with reason DUPLICATE. The tokens version moves on."""
        ...

    async def revoke_token(self, token_id: str, now: float) -> bool:
        """True when an active token was revoked (and the tokens version moved on); False when
        no active token had that id (none, or revoked before)."""
        ...

    async def tokens(self) -> list[tuple[str, str, str, float, float | None]]:
        """(id, user, label, created, revoked) of every token, revoked ones included, oldest
        first (then by id)."""
        ...

    async def active_tokens(self) -> tuple[int, list[tuple[str, str, bytes]]]:
        """(version, [(id, user, digest)]) of the tokens not revoked: the version changes
        whenever tokens change, and the list is never older than the version it comes with."""
        ...

    async def tokens_version(self) -> int:
        """The version `active_tokens` would give now (0 for a new store): a cheap poll."""
        ...

    # -- authenticators ---------------------------------------------------------------------

    async def add_authenticator(self, row: Authenticator) -> None:
        """Keep a new authenticator (`last_used` starts empty); an id taken is refused with
        reason DUPLICATE, whoever holds it."""
        ...

    async def authenticators(self, user: str) -> list[Authenticator]:
        """The user's own authenticators, oldest first (then by id)."""
        ...

    async def all_authenticators(self) -> list[Authenticator]:
        """Every authenticator, by user, then oldest first (then by id)."""
        ...

    async def reseal_authenticator(
        self, auth_id: str, sealed: bytes, key_id: str, *, expected: bytes
    ) -> bool:
        """Replace the sealed secret only while it is still `expected`; True when replaced."""
        ...

    async def touch_authenticator(self, auth_id: str, now: float) -> None:
        """Note its last use; an id not there is no error."""
        ...

    async def remove_authenticator(self, user: str, auth_id: str) -> bool:
        """Remove one of the user's own authenticators; False when the user holds none with
        that id (another user's is left alone)."""
        ...

    async def remove_authenticators(self, user: str) -> int:
        """Remove every authenticator of the user; how many went."""
        ...

    # -- recovery codes ---------------------------------------------------------------------

    async def replace_recovery_codes(self, user: str, digests: list[bytes], now: float) -> None:
        """The user's codes become exactly `digests` (none: an empty list), used or not; other
        users' codes stay."""
        ...

    async def use_recovery_code(self, user: str, digest: bytes, now: float) -> bool:
        """Mark an unused code of the user used; False when there is none (wrong, another
        user's, or used before). Atomic: of concurrent uses of one code, on any connection,
        exactly one is True."""
        ...

    async def recovery_codes_left(self, user: str) -> int:
        """The user's unused codes (0 without a set)."""
        ...

    # -- remembered devices and session revocations -------------------------------------------

    async def save_device(self, row: Device) -> None:
        """Insert, or update verified/remembered_until/label of the user's own unrevoked
        device (`created` stays the first). A device id of another user, or a revoked one, is
        left as it is: never taken over, never revived."""
        ...

    async def device(self, device_id: str) -> Device | None:
        """The device, revoked or not (`revoked` tells); None when unknown."""
        ...

    async def devices(self, user: str) -> list[Device]:
        """The user's devices that are not revoked, oldest first."""
        ...

    async def revoke_device(self, user: str, device_id: str, now: float) -> bool:
        """Revoke one of the user's own live devices; False when there is none such (unknown,
        another user's, or revoked before: its first revocation time stays)."""
        ...

    async def revoke_devices(self, user: str, now: float) -> int:
        """Revoke every live device of the user; how many were live."""
        ...

    async def revoke_sessions(self, user: str, now: float) -> None:
        """Every session of `user` started before `now` ends (the last call wins); the
        revocations version moves on (the tokens version does not)."""
        ...

    async def revocations(self) -> tuple[int, dict[str, float]]:
        """(version, {user: sessions started before this time are void}); the map is never
        older than the version it comes with."""
        ...

    async def revocations_version(self) -> int:
        """The version `revocations` would give now (0 for a new store): a cheap poll."""
        ...

    async def known_users(self) -> list[str]:
        """Every user the store holds authenticators, recovery codes or devices (revoked ones
        too) for, sorted, each once."""
        ...

    # -- the SMS and e-mail ledger, factor and interval choices, admin requests -------------

    async def record_message(self, row: LedgerRow) -> None:
        """Keep one ledger row exactly as given (the cost stays text)."""
        ...

    async def messages(self, since: float, until: float) -> list[LedgerRow]:
        """Ledger rows with since <= time < until, oldest first."""
        ...

    async def set_factor_choice(self, user: str, factor: str) -> None:
        """Remember the factor the user last passed with (replacing the one before)."""
        ...

    async def factor_choice(self, user: str) -> str:
        """The factor the user last passed with ("" when none yet)."""
        ...

    async def set_interval_choice(self, user: str, seconds: float, now: float) -> None:
        """Keep the interval the user chose (replacing the one before), chosen at `now`."""
        ...

    async def interval_choice(self, user: str) -> IntervalChoice | None:
        """The interval the user chose; None when they chose none (the policy's holds)."""
        ...

    async def clear_interval_choice(self, user: str) -> bool:
        """Forget the user's choice; True when there was one."""
        ...

    async def request_action(self, action: str, user: str, now: float) -> int:
        """Ask the running gateway to carry out `action` for `user`: the request's id (ids
        only grow)."""
        ...

    async def pending_requests(self) -> list[tuple[int, str, str]]:
        """(id, action, user) of the requests not yet claimed, oldest first."""
        ...

    async def claim_request(self, request_id: int, now: float) -> bool:
        """Mark a request done; True for the one caller (of any worker or host) that claimed
        it, False for every other and for an unknown id."""
        ...

    async def request_done(self, request_id: int) -> bool:
        """Whether the request was claimed (False for an unknown id)."""
        ...

    # -- the audit trail --------------------------------------------------------------------

    async def add_audit_events(self, events: list[AuditEvent]) -> None:
        """Append events in their order, all or none: when one cannot be stored, none is.
        An empty list does nothing. Events carry what requests sent: characters UTF-8 cannot
        hold (lone surrogates, aiohttp's reading of header bytes that are not UTF-8) come
        back as U+FFFD, and an event is never refused for its text."""
        ...

    async def audit_events(self, query: AuditQuery) -> list[tuple[int, AuditEvent]]:
        """(id, event) pairs that match every criterion of the query, by id: oldest first
        unless the query asks otherwise, at most `limit`. Events come back as they were
        added (details sorted by key, their numbers still numbers). Ids only grow: an event
        added later has a greater id, even after the events before it were pruned."""
        ...

    async def audit_counts(self, query: AuditQuery, bucket: float) -> list[tuple[float, str, int]]:
        """How many events of each name match the query's criteria (its limit and order do
        not count), per bucket of `bucket` seconds counted from the epoch (3600: UTC hours,
        86400: UTC days): (bucket start, name, count), by bucket then name; buckets and
        names without events are left out."""
        ...

    async def prune_audit(self, before: float) -> int:
        """Remove events with time < `before`; how many went."""
        ...

    # -- networks users sign in from, notes for the admin commands ----------------------------

    async def note_network(self, user: str, network: str, now: float) -> bool:
        """Remember that `user` signed in from `network`; True when it was new to them (of
        concurrent notes of one new network, exactly one). Known: its last seen moves on."""
        ...

    async def networks(self, user: str) -> list[tuple[str, float, float]]:
        """(network, first seen, last seen) for the user, oldest first (then by network)."""
        ...

    async def set_note(self, name: str, value: str) -> None:
        """A small named value the running gateway leaves for the admin commands (replacing
        the one before)."""
        ...

    async def note(self, name: str) -> str:
        """The note's value ("" when none was left)."""
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

    async def incr(self, key: str, ttl: float, amount: int = 1, *, renew: bool = False) -> int:
        """Add `amount` and return the count; a new counter lives `ttl` seconds (`renew`: the
        counter lives `ttl` seconds from this call, whether new or not)."""
        ...


@runtime_checkable
class InProcessStore(Protocol):
    """A shared store whose entries live in this process (the memory store): they end with
    it unless exported at shutdown and restored at the next start (gateway/web/snapshot.py).
    A store kept elsewhere (Redis) keeps its own and is not one of these."""

    def export(self) -> list[tuple[str, float, bytes]]:
        """(key, seconds left, value) of every live entry: what a restart must keep."""
        ...

    def restore(self, entries: list[tuple[str, float, bytes]], elapsed: float) -> None:
        """Entries from `export`, `elapsed` seconds later: what has run out stays out."""
        ...

    def __len__(self) -> int: ...
