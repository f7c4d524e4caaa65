"""Gateway sessions: a signed cookie naming a server-side record, and the device cookie.

Owns the session lifecycle (create, load with idle/absolute/revocation checks, rotate on step
up, end) over a SharedStore. Knows nothing of HTTP: the web layer reads and writes cookies.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from gateway.bounded import remember
from gateway.clock import Clock
from gateway.config.signin import Sessions
from gateway.crypto import KeyRing
from gateway.signin.decision import Kind, Who
from gateway.stores import SharedStore

# Stages of a session, in order. A request is forwarded as the user only at FULL.
PASSWORD = "password"  # noqa: S105 - a stage name, not a secret; the password passed (CRM or ours); the second factor is pending
FULL = "full"  # signed in: second factor passed, or not required for this user

DEVICE_MAX_AGE = 400 * 86400.0  # browsers cap cookie lifetimes at 400 days
SIGNING_IN_PER_USER = 20  # sign-ins of one user waiting for their second factor at once
# Per worker, so that a signed-in request costs little more than an anonymous one: a cookie's
# signature is checked once, and a record read again unchanged is not parsed again. The
# record itself is read from the shared store on every request: a step taken on another
# worker (a factor passed, a logout, a rotation) counts at once everywhere.
CACHED = 4096  # cookies and parsed sessions kept per worker; the oldest go first
WHOS_KEPT = 4096  # the Who of distinct sessions kept per worker (about 540 bytes each)
LOOKED_AT = 200  # places of a user's ring read back to list their open sessions


@dataclass
class Session:
    sid: str
    user: str
    stage: str
    created: float  # wall clock
    last_seen: float
    csrf: str
    verified: float = 0.0  # when a second factor last passed in this session
    held: str = ""  # shared-store key of the CRM's held Set-Cookie headers
    return_to: str = ""  # where to go after the challenge (a checked relative path)
    pending: dict[str, str] = field(default_factory=dict)  # enrolment state (sealed, b64)
    crm_binding: str = ""  # digest of the CRM session cookie released to this session
    slot: str = ""  # shared-store key of this session's place among its user's sessions
    verified_by: dict[str, float] = field(default_factory=dict)  # factor → when it last passed
    # A verification asked for on a request for the CRM ("reverify", "fresh": see
    # gateway.signin.decision.still_verified) and the factors that count for it (empty: any
    # the user has); both cleared when one passes.
    due_reason: str = ""
    due: list[str] = field(default_factory=list)
    # The interval the user chose on the account page (seconds; None: the policy's), read
    # from the durable store when the sign-in starts and kept current by the account page:
    # a request never asks the store for it (gateway.signin.interval).
    chosen_interval: float | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Session | None:
        try:
            raw: Any = json.loads(data)
            # Keys of another version (a field added or dropped) do not sign anyone out.
            return cls(**{k: v for k, v in raw.items() if k in _SESSION_FIELDS})
        except (ValueError, TypeError, AttributeError):
            return None


# Read on every request of a signed-in user (Session.from_bytes): worked out once.
_SESSION_FIELDS = frozenset(f.name for f in fields(Session))


def _serializer(ring: KeyRing, clock: Clock, salt: str) -> URLSafeTimedSerializer:
    class ClockSigner(TimestampSigner):
        # itsdangerous reads the system clock; ours comes from the injected clock.
        def get_timestamp(self) -> int:
            return int(clock.now())

    # itsdangerous signs with the last key and tries all: our rings list the newest first.
    keys = [key for _, key in reversed(ring.keys)]
    return URLSafeTimedSerializer(keys, salt=salt, signer=ClockSigner)


class SessionBook:
    """Creates, finds and ends sessions. `revoked_before(user)` comes from the durable store
    (an admin reset or `sessions revoke`); sessions older than it are void everywhere."""

    def __init__(self, shared: SharedStore, ring: KeyRing, clock: Clock, rules: Sessions) -> None:
        self._shared = shared
        self._clock = clock
        self.rules = rules
        self._cookies = _serializer(ring, clock, "crm-gateway.session")
        self._devices = _serializer(ring, clock, "crm-gateway.device")
        self._forms = _serializer(ring, clock, "crm-gateway.login-form")
        self.revocations: dict[str, float] = {}
        self._signed: dict[str, tuple[str, float]] = {}  # cookie → (session id, signed at)
        # id → (record, parsed, when read: monotonic), the record as this worker last saw it
        self._records: dict[str, tuple[bytes, Session, float]] = {}
        self._whos: dict[tuple[object, ...], Who] = {}  # what a session is made of → its Who

    # -- cookies -------------------------------------------------------------------------

    def cookie_value(self, session: Session) -> str:
        return str(self._cookies.dumps(session.sid))

    def sid_from_cookie(self, value: str) -> str | None:
        """The session id a cookie names, when its signature holds and it is younger than
        the absolute timeout. A signature is checked once per worker (CACHED cookies)."""
        known = self._signed.get(value)
        if known is None:
            try:
                sid, signed = self._cookies.loads(
                    value, max_age=int(self.rules.absolute_timeout), return_timestamp=True
                )
            except (BadData, ValueError, TypeError):
                return None
            if not isinstance(sid, str) or len(sid) != 43:
                return None
            known = (sid, signed.timestamp())
            remember(self._signed, value, known, CACHED)
        sid, signed_at = known
        if self._clock.now() - signed_at > self.rules.absolute_timeout:
            self._signed.pop(value, None)
            return None
        return sid

    def device_cookie(self, device_id: str, user: str) -> str:
        return str(self._devices.dumps([device_id, user]))

    def device_from_cookie(self, value: str, user: str) -> str | None:
        """The device id, only when the cookie was issued to this user."""
        try:
            found = self._devices.loads(value, max_age=int(DEVICE_MAX_AGE))
        except (BadData, ValueError, TypeError):
            return None
        if isinstance(found, list) and len(found) == 2 and found[1] == user:
            return str(found[0])
        return None

    def form_token(self, nonce: str) -> str:
        """A login form's CSRF token: the signed nonce of its cookie (valid for an hour)."""
        return str(self._forms.dumps(nonce))

    def form_token_ok(self, token: str, nonce: str) -> bool:
        try:
            found = self._forms.loads(token, max_age=3600)
        except (BadData, ValueError, TypeError):
            return False
        return isinstance(found, str) and found == nonce

    # -- records -------------------------------------------------------------------------

    def _ttl(self, session: Session) -> float:
        left = session.created + self.rules.absolute_timeout - self._clock.now()
        return max(1.0, min(self.rules.idle_timeout, left))

    async def create(self, user: str, stage: str, **values: Any) -> Session:
        now = self._clock.now()
        session = Session(
            sid=secrets.token_urlsafe(32),
            user=user,
            stage=stage,
            created=now,
            last_seen=now,
            csrf=secrets.token_urlsafe(24),
            **values,
        )
        await self._take_slot(session)
        await self._insert(session)
        return session

    async def _take_slot(self, session: Session) -> None:
        """Each user's sessions fill a ring of places, numbered by an atomic counter, so
        every worker agrees: the session that takes a place already taken in this round ends
        the one there, which is the oldest. Signed-in sessions have a ring of
        `max_per_user`; sign-ins still at the password have one of their own, small, so a
        password alone never ends a session that passed the second factor. The counter
        lives an absolute timeout from the newest place taken, so it runs out only once every
        session of its round has: a new round never hides a live session from its user's
        listing (sessions_of, follow_choice), whose places it has begun to fill again."""
        ring, cap = ("full", self.rules.max_per_user)
        if session.stage != FULL:
            ring, cap = ("signing-in", SIGNING_IN_PER_USER)
        ttl = self.rules.absolute_timeout
        number = await self._shared.incr(f"sessions-of:{ring}:{session.user}", ttl, renew=True)
        session.slot = f"session-slot:{ring}:{session.user}:{number % cap}"
        oldest = await self._shared.take(session.slot)
        await self._shared.put(session.slot, session.sid.encode(), ttl)
        if oldest is not None and number > cap:
            self._forget(oldest.decode())
            await self._shared.delete(f"session:{oldest.decode()}")

    async def _insert(self, session: Session) -> None:
        await self._shared.put(f"session:{session.sid}", session.to_bytes(), self._ttl(session))

    def _forget(self, sid: str) -> None:
        self._records.pop(sid, None)

    async def save(self, session: Session) -> bool:
        """Write back a session that still exists: one ended meanwhile (logout in another tab,
        a rotation, an admin reset) stays ended. False when it was gone."""
        data = session.to_bytes()
        saved = await self._shared.replace(f"session:{session.sid}", data, self._ttl(session))
        if session.sid in self._records:  # what this worker remembers follows what it wrote
            self._forget(session.sid)
            if saved:
                remember(
                    self._records,
                    session.sid,
                    (data, _copy(session), self._clock.monotonic()),
                    CACHED,
                )
        return saved

    async def _read(self, sid: str, reuse_for: float = 0.0) -> Session | None:
        """The session record as the shared store holds it now, parsed once per version (a
        copy each time: callers change what they are given). `reuse_for`: the record this
        worker read (or wrote) within that many seconds is taken as it was, without asking
        the store; whatever ends or rotates it here forgets it at once."""
        found = self._records.get(sid)
        now = self._clock.monotonic()
        if found is not None and reuse_for > 0 and now - found[2] < reuse_for:
            return _copy(found[1])
        data = await self._shared.get(f"session:{sid}")
        if data is None:
            self._forget(sid)
            return None
        if found is not None and found[0] == data:
            self._records[sid] = (data, found[1], now)
            return _copy(found[1])
        session = Session.from_bytes(data)
        if session is None or session.sid != sid:
            self._forget(sid)
            return None
        remember(self._records, sid, (data, _copy(session), now), CACHED)
        return session

    async def load(self, cookie: str | None, *, reuse_for: float = 0.0) -> Session | None:
        """The live session a cookie names, touched for the idle timeout; else None.
        `reuse_for`: see _read (the forward-auth endpoint answers from what it read)."""
        sid = self.sid_from_cookie(cookie) if cookie else None
        if sid is None:
            return None
        session = await self._read(sid, reuse_for)
        if session is None:
            return None
        now = self._clock.now()
        if self._expired(session, now):
            await self.end(session)
            return None
        # Writing on every request would cost a store round trip each; a minute of slack
        # on a 30-minute idle timeout costs nothing.
        if now - session.last_seen > 60.0:
            session.last_seen = now
            await self.save(session)
        return session

    async def rotate(self, session: Session, **changes: Any) -> Session | None:
        """A new id for a session that steps up (no fixation); the old id stops working.
        None when the session was ended meanwhile (logout in another tab, an admin, a newer
        session taking its place): an ended session never comes back."""
        self._forget(session.sid)
        if await self._shared.take(f"session:{session.sid}") is None:
            return None
        fresh = replace(
            session,
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(24),
            last_seen=self._clock.now(),
            **changes,
        )
        if fresh.stage == FULL and not fresh.slot.startswith("session-slot:full:"):
            # Signed in now: a place among the user's signed-in sessions (the one it held
            # among the sign-ins is left to expire, or to the next sign-in to take).
            await self._take_slot(fresh)
        elif fresh.slot:  # the place in the user's ring follows the new id
            await self._shared.replace(fresh.slot, fresh.sid.encode(), self.rules.absolute_timeout)
        await self._insert(fresh)
        return fresh

    async def look_at(self, sid: str) -> Session | None:
        """The session as the shared store holds it now (None: ended), never touched: an open
        WebSocket looking at its session is not a request, so it does not hold the session
        past its idle timeout (gateway.web.socketwatch)."""
        return await self._read(sid)

    def ends_by_itself(self, session: Session) -> float:
        """When the session ends of its own: its idle or its absolute timeout, the earlier."""
        return min(
            session.last_seen + self.rules.idle_timeout,
            session.created + self.rules.absolute_timeout,
        )

    def who(self, session: Session, refused: str = "") -> Who:
        """Who a signed-in session's requests are (gateway.web.pipeline.identify), and its
        socket's: remembered by what the session is made of, at most WHOS_KEPT. A Who is
        frozen, so it is shared safely, and made for every signed-in request, where building
        one (a setattr per field, `verified_by` sorted) costs several times the look-up."""
        key = (
            session.user,
            session.verified,
            refused,
            session.chosen_interval,
            *session.verified_by.items(),
        )
        who = self._whos.get(key)
        if who is None:
            who = Who(
                Kind.SESSION,
                session.user,
                verified=session.verified,
                refused=refused,
                verified_by=tuple(sorted(session.verified_by.items())),
                chosen_interval=session.chosen_interval,
            )
            remember(self._whos, key, who, WHOS_KEPT)
        return who

    def revoked(self, session: Session) -> bool:
        """Ended by an administrator (`sessions revoke`, `users reset-2fa`), as this worker
        last read the revocations (every LOOK_EVERY seconds: gateway.web.revocations)."""
        return session.created < self.revocations.get(session.user, 0.0)

    def _expired(self, session: Session, now: float) -> bool:
        """Idle or absolute timeout passed, or revoked (an admin, `sessions revoke`)."""
        return (
            now - session.last_seen > self.rules.idle_timeout
            or now - session.created > self.rules.absolute_timeout
            or self.revoked(session)
        )

    async def sessions_of(self, user: str, limit: int = 20) -> list[Session]:
        """The user's signed-in sessions still open, newest first, at most `limit` (for the
        helpdesk console): read back from the newest places of their ring (_take_slot),
        looking at no more than LOOKED_AT places."""
        found = await self._in_ring(user, "full", self.rules.max_per_user, limit)
        return [session for session in found if session.stage == FULL]

    async def _in_ring(self, user: str, ring: str, cap: int, limit: int) -> list[Session]:
        """The user's live sessions from the newest places of one ring (_take_slot), newest
        first, at most `limit`, looking at no more than LOOKED_AT places."""
        counter = await self._shared.get(f"sessions-of:{ring}:{user}")
        if counter is None:
            return []
        newest, now = int(counter), self._clock.now()
        found: dict[str, Session] = {}
        for number in range(newest, max(0, newest - min(cap, LOOKED_AT)), -1):
            sid = await self._shared.get(f"session-slot:{ring}:{user}:{number % cap}")
            session = None if sid is None else await self._read(sid.decode())
            if session is None or session.user != user:
                continue
            if not self._expired(session, now) and session.sid not in found:
                found[session.sid] = session
                if len(found) >= limit:
                    break
        return list(found.values())

    async def follow_choice(self, user: str, chosen: float | None) -> int:
        """The user's open sessions, signed in or signing in, carry the interval they chose
        now (None: the policy's), so a stricter one holds at their next request; how many
        were changed."""
        changed = 0
        rings = (("full", self.rules.max_per_user), ("signing-in", SIGNING_IN_PER_USER))
        for ring, cap in rings:
            for session in await self._in_ring(user, ring, cap, LOOKED_AT):
                if session.chosen_interval != chosen:
                    session.chosen_interval = chosen
                    changed += await self.save(session)
        return changed

    async def end(self, session: Session) -> None:
        self._forget(session.sid)
        await self._shared.delete(f"session:{session.sid}")
        if session.held:
            await self._shared.delete(session.held)


def _copy(session: Session) -> Session:
    """A session of its own for a caller: the fields are values but for the containers.
    Made on every signed-in request: the fields copied as they are (no __init__, which
    `dataclasses.replace` would run over every field), then the containers."""
    fields = session.__dict__.copy()  # one dict made whole: a third cheaper than filled
    fields["pending"] = dict(session.pending)
    fields["verified_by"] = dict(session.verified_by)
    fields["due"] = list(session.due)
    copied = object.__new__(Session)
    copied.__dict__ = fields
    return copied
