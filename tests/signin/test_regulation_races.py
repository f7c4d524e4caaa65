"""gateway.signin.regulation when another worker's write lands between two of this worker's: a
count cleared (a lockout, an expiry) just before this worker takes one back from it stays gone
(0), never -1, which would be one more try (stop 28, helper-63)."""

from __future__ import annotations

import pytest

from gateway.clock import FakeClock
from gateway.signin.regulation import Regulator, address_key
from gateway.stores.memory import MemorySharedStore
from tests.signin.test_regulation import LIMITS


class ClearedFirst(MemorySharedStore):
    """The memory store where every count a worker takes back was cleared just before by
    another worker (its lockout deletes the counts; or the count expired)."""

    async def incr(self, key: str, ttl: float, amount: int = 1, *, renew: bool = False) -> int:
        if amount < 0:
            await self.delete(key)
        return await super().incr(key, ttl, amount, renew=renew)


@pytest.mark.parametrize("answer", ["failed", "succeeded"])
async def test_a_count_cleared_before_it_is_taken_back_stays_gone(answer: str) -> None:
    clock = FakeClock()
    store = ClearedFirst(clock)
    regulator = Regulator(store, clock, LIMITS)
    assert await regulator.attempt("ann", "192.0.2.7") == 0
    report = regulator.failed if answer == "failed" else regulator.succeeded
    await report("ann", "192.0.2.7")
    busy = await store.get(f"busy:code:ip:{address_key('192.0.2.7')}")
    assert busy is None or int(busy) == 0, busy
