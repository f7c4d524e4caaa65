"""Brute-force and replay limits for codes and passwords, written once over a SharedStore.

Three counts, each in the shared store so that every worker and instance counts together:
- per subject (a user for codes, a user at an address for passwords): counted *before* the
  check, so a burst of concurrent guesses gets no more tries than a sequence; the
  (limit+1)-th attempt in a window is refused and locks; a right answer starts it again;
- per address: failures in the window plus attempts still in flight. A right answer gives
  its slot back, so an office behind one NAT address can sign in together, while a burst
  of concurrent guesses for many users from one address is still held to the limit;
  IPv6 clients are counted per /64 (one client has them all);
- per account across addresses, for passwords: failures from anywhere slow that account's
  password step down, doubling up to a hold (`account_hold`), except from a device or an
  address the user completed a sign-in from: someone guessing from 40 addresses stops, and
  the real user keeps signing in from where they always do.
Lockouts double with each one inside a day, up to `max_lockout`. Counts are kept per scope
("code", "password"), so typos at the login form do not lock an office out of its codes.
A TOTP code is accepted once per user and time step.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from gateway.clock import Clock
from gateway.config.signin import Limits
from gateway.stores import SharedStore

_LOCKOUT_MEMORY = 86400.0  # lockouts within a day make the next one longer
# An attempt that never reported back frees its slot within this, at least: a password at the
# CRM's login may wait there for its answer as long as the upstream timeouts allow (the app
# gives them: in_flight_ttl), and its slot must hold as long.
_IN_FLIGHT_TTL = 30.0
BUSY_RETRY = 2.0  # seconds an attempt refused for too many in flight is told to wait
_KNOWN_PLACE = 90 * 86400.0  # a completed sign-in makes an address known for this long
_PASSWORD = "password"  # noqa: S105 - the scope of password attempts, not a secret


def address_key(ip: str) -> str:
    """The address as counted: IPv6 by its /64 (a client is given a whole /64 and may use any
    address in it), IPv4 and anything unparsable as written."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address), 64), strict=False))


class Regulator:
    def __init__(
        self, shared: SharedStore, clock: Clock, limits: Limits, in_flight_ttl: float = 0.0
    ) -> None:
        self._in_flight = max(_IN_FLIGHT_TTL, in_flight_ttl)
        self._shared = shared
        self._clock = clock
        self.limits = limits

    def _user_key(self, user: str, scope: str) -> str:
        return f"{scope}:user:{user}"

    def _ip_key(self, ip: str, scope: str) -> str:
        return f"{scope}:ip:{address_key(ip)}"

    async def locked_until(self, user: str, ip: str, scope: str = "code") -> float:
        """Wall-clock time the user or address may try again; 0 when not locked."""
        until = 0.0
        for who in (self._user_key(user, scope), self._ip_key(ip, scope)):
            found = await self._shared.get(f"lock:{who}")
            if found is not None:
                until = max(until, float(found))
        return until if until > self._clock.now() else 0.0

    async def attempt(self, user: str, ip: str, scope: str = "code") -> float:
        """Count one attempt before it is checked: 0 when it may go ahead (then `failed` or
        `succeeded` reports back), else the time the caller may try again."""
        until = await self.locked_until(user, ip, scope)
        if until:
            return until
        user_key = self._user_key(user, scope)
        if await self._shared.incr(f"fail:{user_key}", self.limits.window) > (
            self.limits.user_failures
        ):
            return await self._lock(user_key)
        ip_key = self._ip_key(ip, scope)
        found = await self._shared.get(f"fail:{ip_key}")
        failures = int(found) if found is not None else 0
        if failures >= self.limits.ip_failures:
            # Failures reported after the address's last lockout began (by attempts in flight
            # then) reach the limit again: the next lockout, not a loop of refusals.
            await self._decrement(f"fail:{user_key}", self.limits.window)
            return await self._lock(ip_key)
        in_flight = await self._shared.incr(f"busy:{ip_key}", self._in_flight)
        if in_flight + failures > self.limits.ip_failures:
            # Too many at once from this address: not checked, not a failure, no lockout.
            await self._give_back(user_key, ip_key)
            return self._clock.now() + BUSY_RETRY
        # Counted, and under the limit: but a lock placed meanwhile clears the count (so it
        # starts again after the lockout), and this count may be one of the new ones. Looked
        # for after counting, an attempt that raced a lock is refused, never let through.
        until = await self.locked_until(user, ip, scope)
        if until:
            await self._give_back(user_key, ip_key)
        return until

    async def _give_back(self, user_key: str, ip_key: str) -> None:
        """An attempt that was counted but never checked."""
        await self._decrement(f"fail:{user_key}", self.limits.window)
        await self._decrement(f"busy:{ip_key}", self._in_flight)

    async def _decrement(self, key: str, ttl: float) -> None:
        # A count that is gone (expired, or cleared by a lockout) stays gone, as 0: never -1,
        # which would be one more try. Not looked at first: a lockout clearing the count
        # between a look and the decrement (another worker's) left -1 behind. Taken back up
        # with another increment, so one made meanwhile (0 then) is kept (1 after).
        if await self._shared.incr(key, ttl, -1) < 0:
            await self._shared.incr(key, ttl, 1)

    async def failed(self, user: str, ip: str, scope: str = "code") -> float:
        """The attempt was wrong: lock when it used the last try, when the address reached its
        limit of failures, or when the user's failures of the day reach `daily_failures`."""
        until = 0.0
        user_key, ip_key = self._user_key(user, scope), self._ip_key(ip, scope)
        found = await self._shared.get(f"fail:{user_key}")
        if found is not None and int(found) >= self.limits.user_failures:
            until = await self._lock(user_key)
        # The failure is counted before its slot is given back: an attempt arriving between
        # the two steps (another worker's, over Redis) would find it in neither and go ahead.
        failures = await self._shared.incr(f"fail:{ip_key}", self.limits.window)
        await self._decrement(f"busy:{ip_key}", self._in_flight)
        if failures >= self.limits.ip_failures:
            until = max(until, await self._lock(ip_key))
        streak = await self._shared.incr(f"fail-day:{user_key}", _LOCKOUT_MEMORY)
        if streak >= self.limits.daily_failures:
            until = max(until, await self._lock_for(user_key, self.limits.max_lockout))
        return until

    async def succeeded(self, user: str, ip: str, scope: str = "code") -> None:
        """A right answer: the user's count starts again and the address gets its slot back
        (its failures stay: one known account must not reset an address that is guessing for
        others)."""
        user_key = self._user_key(user, scope)
        await self._shared.delete(f"fail:{user_key}")
        await self._shared.delete(f"fail-day:{user_key}")
        await self._decrement(f"busy:{self._ip_key(ip, scope)}", self._in_flight)

    # -- passwords -------------------------------------------------------------------------

    def _password_subject(self, user: str, ip: str) -> str:
        # Per user *and* address: nobody can lock a colleague out by naming them elsewhere.
        return f"{user}@{address_key(ip)}"

    async def password_attempt(
        self, user: str, ip: str, known_device: Callable[[], Awaitable[bool]]
    ) -> float:
        """`attempt` for a password, plus the account's own slow-down: while it lasts, only a
        device the user signed in with (`known_device`, asked only then) or an address they
        completed a sign-in from may try. Attempts in flight count toward the slow-down as
        failures do, so guesses sent together from many addresses are held like a
        sequence."""
        subject = self._password_subject(user, ip)
        until = await self.attempt(subject, ip, _PASSWORD)
        if until:
            return until
        account = f"{_PASSWORD}:account:{user}"
        in_flight = await self._shared.incr(f"busy:{account}", self._in_flight)
        paused = await self.account_paused_until(user)
        if not paused:
            found = await self._shared.get(f"fail:{account}")
            failures = int(found) if found is not None else 0
            # Up to the slow-down, as many at once as failures are left; past it (a pause
            # that ended), one at a time.
            if in_flight <= max(1, self.limits.account_slowdown - failures):
                return 0.0
        if await self._known_place(user, ip) or await known_device():
            return 0.0
        await self.password_abandoned(user, ip)
        return paused or self._clock.now() + BUSY_RETRY

    async def password_failed(self, user: str, ip: str) -> float:
        """A wrong password: the subject's and address's counts, and the account's. From
        `account_slowdown` failures in `account_window` on, each failure pauses the account's
        password step (for unknown places) for twice as long as the one before, up to
        `account_hold`."""
        until = await self.failed(self._password_subject(user, ip), ip, _PASSWORD)
        limits = self.limits
        account = f"{_PASSWORD}:account:{user}"
        count = await self._shared.incr(f"fail:{account}", limits.account_window)
        if count >= limits.account_slowdown:
            doubling = float(2 ** min(count - limits.account_slowdown, 32))
            await self._lock_for(account, min(doubling, limits.account_hold))
        # The slot goes back last, as in `failed`: an attempt arriving before the failure or
        # the pause it placed were in (another worker's) would find neither and go ahead.
        await self._decrement(f"busy:{account}", self._in_flight)
        return until

    async def password_abandoned(self, user: str, ip: str) -> None:
        """A password attempt that never came to a verdict (the client left, the CRM did not
        answer): its slots at the address and the account, and its count, go back, so an
        office's address is not kept busy by abandoned sign-ins."""
        subject = self._password_subject(user, ip)
        await self._give_back(self._user_key(subject, _PASSWORD), self._ip_key(ip, _PASSWORD))
        await self._decrement(f"busy:{_PASSWORD}:account:{user}", self._in_flight)

    async def password_succeeded(self, user: str, ip: str) -> None:
        # The account's count stays: the real user's right password does not wipe out what
        # someone else is guessing from elsewhere.
        await self.succeeded(self._password_subject(user, ip), ip, _PASSWORD)
        await self._decrement(f"busy:{_PASSWORD}:account:{user}", self._in_flight)

    async def account_paused_until(self, user: str) -> float:
        found = await self._shared.get(f"lock:{_PASSWORD}:account:{user}")
        until = float(found) if found is not None else 0.0
        return until if until > self._clock.now() else 0.0

    async def remember_place(self, user: str, ip: str) -> None:
        """The user completed a sign-in from here: a usual place, exempt from the account's
        slow-down for `_KNOWN_PLACE`."""
        await self._shared.put(f"known:{user}:{address_key(ip)}", b"1", _KNOWN_PLACE)

    async def _known_place(self, user: str, ip: str) -> bool:
        return await self._shared.get(f"known:{user}:{address_key(ip)}") is not None

    # -- locks -----------------------------------------------------------------------------

    async def _lock(self, who: str) -> float:
        """Lock `who` once, however many attempts arrive together: the lock is an atomic
        add, and only the attempt that placed it raises the level for the next one."""
        found = await self._shared.get(f"lockouts:{who}")
        level = (int(found) if found is not None else 0) + 1
        # Capped exponent: with short lockouts a level can pass 1024 in a day (no float for it).
        doubling = float(2 ** min(level - 1, 64))
        seconds = min(self.limits.lockout * doubling, self.limits.max_lockout)
        until = self._clock.now() + seconds
        if await self._shared.add(f"lock:{who}", repr(until).encode(), seconds):
            await self._shared.incr(f"lockouts:{who}", _LOCKOUT_MEMORY)
            await self._shared.delete(f"fail:{who}")
            return until
        existing = await self._shared.get(f"lock:{who}")
        return float(existing) if existing is not None else until

    async def _lock_for(self, who: str, seconds: float) -> float:
        until = self._clock.now() + seconds
        existing = await self._shared.get(f"lock:{who}")
        if existing is not None and float(existing) >= until:
            return float(existing)
        await self._shared.put(f"lock:{who}", repr(until).encode(), seconds)
        return until

    async def unlock(self, user: str) -> None:
        for scope in ("code", _PASSWORD):
            for kind in ("lock", "fail", "lockouts", "fail-day"):
                await self._shared.delete(f"{kind}:{scope}:user:{user}")
        for kind in ("lock", "fail"):
            await self._shared.delete(f"{kind}:{_PASSWORD}:account:{user}")

    async def first_use(self, user: str, step: int, ttl: float) -> bool:
        """True the first time a (user, TOTP step) is seen; False for a replay."""
        return await self._shared.add(f"totp-used:{user}:{step}", b"1", ttl)
