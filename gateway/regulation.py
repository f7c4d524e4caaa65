"""Brute-force and replay limits for second-factor codes, written once over a SharedStore.

Failures are counted per user and per client address across sessions (and, with a shared
backend, across instances). Reaching a limit locks that user or address for a time that
doubles with each lockout inside a day. A TOTP code is accepted once per user and time step.
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

    async def locked_until(self, user: str, ip: str) -> float:
        """Wall-clock time the user or address may try again; 0 when not locked."""
        until = 0.0
        for key in (f"lock:user:{user}", f"lock:ip:{ip}"):
            found = await self._shared.get(key)
            if found is not None:
                until = max(until, float(found))
        return until if until > self._clock.now() else 0.0

    async def failed(self, user: str, ip: str) -> float:
        """Count a wrong code; the lockout end when this failure reached a limit, else 0."""
        until = 0.0
        checks = (
            (f"user:{user}", self.limits.user_failures),
            (f"ip:{ip}", self.limits.ip_failures),
        )
        for who, limit in checks:
            count = await self._shared.incr(f"fail:{who}", self.limits.window)
            if count >= limit:
                until = max(until, await self._lock(who))
        return until

    async def _lock(self, who: str) -> float:
        level = await self._shared.incr(f"lockouts:{who}", _LOCKOUT_MEMORY)
        # Capped exponent: with short lockouts a level can pass 1024 in a day (no float for it).
        doubling = float(2 ** min(level - 1, 64))
        seconds = min(self.limits.lockout * doubling, self.limits.max_lockout)
        until = self._clock.now() + seconds
        await self._shared.put(f"lock:{who}", repr(until).encode(), seconds)
        await self._shared.delete(f"fail:{who}")
        return until

    async def succeeded(self, user: str) -> None:
        """A right code clears the user's failure count (not the address's, nor past lockouts:
        one known user must not be able to reset an address that is guessing for others)."""
        await self._shared.delete(f"fail:user:{user}")

    async def unlock(self, user: str) -> None:
        for key in (f"lock:user:{user}", f"fail:user:{user}", f"lockouts:user:{user}"):
            await self._shared.delete(key)

    async def first_use(self, user: str, step: int, ttl: float) -> bool:
        """True the first time a (user, TOTP step) is seen; False for a replay."""
        return await self._shared.add(f"totp-used:{user}:{step}", b"1", ttl)
