"""In-process shared store: the single-instance default (`state.shared: {type: memory}`).
Not shared between processes, so config validation refuses it with several workers once
sign-in is on. An InProcessStore: its entries can wait out a restart. `SHARED` is its
registry entry."""

from __future__ import annotations

import heapq

from gateway.clock import Clock
from gateway.config.model import StoreConfig
from gateway.stores.kinds import SharedKind

_SWEEP_EVERY = 256  # writes between sweeps of expired keys: memory stays bounded


class MemorySharedStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._data: dict[str, tuple[float, bytes]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._writes = 0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._expiry.clear()

    def _live(self, key: str) -> bytes | None:
        found = self._data.get(key)
        if found is None:
            return None
        if found[0] <= self._clock.monotonic():
            del self._data[key]
            return None
        return found[1]

    def _store(self, key: str, value: bytes, ttl: float) -> None:
        deadline = self._clock.monotonic() + max(ttl, 0.0)
        self._data[key] = (deadline, value)
        heapq.heappush(self._expiry, (deadline, key))
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock.monotonic()
        while self._expiry and self._expiry[0][0] <= now:
            _, key = heapq.heappop(self._expiry)
            found = self._data.get(key)
            if found is not None and found[0] <= now:
                del self._data[key]
        if len(self._expiry) > 4 * len(self._data) + 1024:
            self._expiry = [(d, k) for k, (d, _) in self._data.items()]
            heapq.heapify(self._expiry)

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._store(key, value, ttl)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        self._store(key, value, ttl)
        return True

    async def replace(self, key: str, value: bytes, ttl: float) -> bool:
        if self._live(key) is None:
            return False
        self._store(key, value, ttl)
        return True

    async def take(self, key: str) -> bytes | None:
        value = self._live(key)
        self._data.pop(key, None)
        return value

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def incr(self, key: str, ttl: float, amount: int = 1, *, renew: bool = False) -> int:
        found = self._live(key)
        if found is None:
            self._store(key, str(amount).encode(), ttl)
            return amount
        count = int(found) + amount
        if renew:
            self._store(key, str(count).encode(), ttl)
        else:
            self._data[key] = (self._data[key][0], str(count).encode())
        return count

    def __len__(self) -> int:
        return len(self._data)

    def export(self) -> list[tuple[str, float, bytes]]:
        """(key, seconds left, value) of every live entry: what a restart must keep."""
        now = self._clock.monotonic()
        return [(k, d - now, v) for k, (d, v) in self._data.items() if d > now]

    def restore(self, entries: list[tuple[str, float, bytes]], elapsed: float) -> None:
        """Entries from `export`, `elapsed` seconds later: what has run out stays out."""
        for key, left, value in entries:
            if left - elapsed > 0:
                self._store(key, value, left - elapsed)


async def _open_shared(settings: StoreConfig, clock: Clock) -> MemorySharedStore:
    return MemorySharedStore(clock)


SHARED = SharedKind(open=_open_shared)
