"""Brute-force and replay limits for codes and passwords, written once over a SharedStore.

Every attempt is counted *before* it is checked, with one atomic increment per subject (user)
and per client address, so a burst of concurrent guesses gets no more tries than a sequence:
the (limit+1)-th attempt in a window is refused and locks. A right answer gives its attempt
back. Lockouts double with each one inside a day, up to `max_lockout`. Counts are kept per
scope ("code", "password"), so typos at the login form do not lock an office out of its codes.
A TOTP code is accepted once per user and time step.
"""

from __future__ import annotations

from gateway.clock import Clock
from gateway.signin_config import Limits
from gateway.stores import SharedStore

_LOCKOUT_MEMORY = 86400.0  # lockouts within a day make the next one longer


class Regulator:
    def __init__(self, shared: SharedStore, clock: Clock, limits: Limits) -> None:
        self._shared = shared
        self._clock = clock
        self.limits = limits

    def _subjects(self, user: str, ip: str, scope: str) -> tuple[tuple[str, int], ...]:
        return (
            (f"{scope}:user:{user}", self.limits.user_failures),
            (f"{scope}:ip:{ip}", self.limits.ip_failures),
        )

    async def locked_until(self, user: str, ip: str, scope: str = "code") -> float:
        """Wall-clock time the user or address may try again; 0 when not locked."""
        until = 0.0
        for who, _ in self._subjects(user, ip, scope):
            found = await self._shared.get(f"lock:{who}")
            if found is not None:
                until = max(until, float(found))
        return until if until > self._clock.now() else 0.0

    async def attempt(self, user: str, ip: str, scope: str = "code") -> float:
        """Count one attempt before it is checked: 0 when it may go ahead, else the time the
        lockout ends (already locked, or this attempt is one too many)."""
        until = await self.locked_until(user, ip, scope)
        if until:
            return until
        for who, limit in self._subjects(user, ip, scope):
            count = await self._shared.incr(f"fail:{who}", self.limits.window)
            if count > limit:
                until = max(until, await self._lock(who))
        if until:
            return until
        # Counted, and under the limit: but a lock placed meanwhile clears the count (so it
        # starts again after the lockout), and this count may be one of the new ones. Looked
        # for after counting, an attempt that raced a lock is refused, never let through.
        return await self.locked_until(user, ip, scope)

    async def failed(self, user: str, ip: str, scope: str = "code") -> float:
        """The attempt was wrong (already counted): lock when it used the last try, or when
        the user's failures of the day reach `daily_failures`."""
        until = 0.0
        for who, limit in self._subjects(user, ip, scope):
            found = await self._shared.get(f"fail:{who}")
            if found is not None and int(found) >= limit:
                until = max(until, await self._lock(who))
        streak = await self._shared.incr(f"fail-day:{scope}:user:{user}", _LOCKOUT_MEMORY)
        if streak >= self.limits.daily_failures:
            until = max(
                until, await self._lock_for(f"{scope}:user:{user}", self.limits.max_lockout)
            )
        return until

    async def succeeded(self, user: str, ip: str, scope: str = "code") -> None:
        """A right answer: the user's count starts again, and the address gets its attempt
        back (not the whole count: one known account must not reset an address that is
        guessing for others, and an office behind one address must not lock itself out by
        signing in). A count that is gone (expired, or cleared by a lockout) stays gone."""
        await self._shared.delete(f"fail:{scope}:user:{user}")
        await self._shared.delete(f"fail-day:{scope}:user:{user}")
        key = f"fail:{scope}:ip:{ip}"
        found = await self._shared.get(key)
        if found is not None and int(found) > 0:
            await self._shared.incr(key, self.limits.window, -1)

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
        for scope in ("code", "password"):
            for kind in ("lock", "fail", "lockouts", "fail-day"):
                await self._shared.delete(f"{kind}:{scope}:user:{user}")

    async def first_use(self, user: str, step: int, ttl: float) -> bool:
        """True the first time a (user, TOTP step) is seen; False for a replay."""
        return await self._shared.add(f"totp-used:{user}:{step}", b"1", ttl)
