"""The in-process shared store (gateway/stores/memory.py): TTLs on a fake clock, add/take/incr
semantics, and memory that stays bounded when keys expire unread."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import FakeClock
from gateway.stores.memory import MemorySharedStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemorySharedStore:
    return MemorySharedStore(clock)


async def test_a_value_put_is_got_back(store: MemorySharedStore) -> None:
    await store.put("k", b"v", 10.0)

    assert await store.get("k") == b"v"
    assert await store.get("other") is None


async def test_put_replaces_the_value_and_its_ttl(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    await store.put("k", b"old", 5.0)
    await store.put("k", b"new", 60.0)
    clock.advance(30.0)

    assert await store.get("k") == b"new"


async def test_a_value_lives_until_its_ttl_and_not_a_moment_longer(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    await store.put("k", b"v", 10.0)

    clock.advance(9.999)
    assert await store.get("k") == b"v"
    clock.advance(0.001)
    assert await store.get("k") is None


@pytest.mark.parametrize("ttl", [0.0, -5.0])
async def test_a_zero_or_negative_ttl_stores_nothing_readable(
    store: MemorySharedStore, ttl: float
) -> None:
    await store.put("k", b"v", ttl)

    assert await store.get("k") is None


class SteppingClock:
    """A Clock whose wall time can jump (an NTP step) while monotonic time runs on."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 0.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
async def test_expiry_follows_the_monotonic_clock_not_the_wall_clock(step: float) -> None:
    clock = SteppingClock()
    store = MemorySharedStore(clock)
    await store.put("k", b"v", 10.0)

    clock.wall += step
    assert await store.get("k") == b"v"
    clock.mono += 10.0

    assert await store.get("k") is None


async def test_delete_removes_a_key_and_ignores_a_missing_one(store: MemorySharedStore) -> None:
    await store.put("k", b"v", 10.0)

    await store.delete("k")
    await store.delete("never")

    assert await store.get("k") is None


# -- add --------------------------------------------------------------------------------------


async def test_add_stores_only_when_the_key_is_absent(store: MemorySharedStore) -> None:
    assert await store.add("k", b"first", 10.0) is True
    assert await store.add("k", b"second", 10.0) is False

    assert await store.get("k") == b"first"


async def test_add_succeeds_again_once_the_key_expired(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    await store.add("k", b"first", 10.0)
    clock.advance(10.0)

    assert await store.add("k", b"second", 10.0) is True
    assert await store.get("k") == b"second"


async def test_of_many_concurrent_adds_exactly_one_wins(store: MemorySharedStore) -> None:
    results = await asyncio.gather(*(store.add("k", str(n).encode(), 10.0) for n in range(20)))

    assert results.count(True) == 1


# -- take -------------------------------------------------------------------------------------


async def test_take_returns_the_value_once(store: MemorySharedStore) -> None:
    await store.put("k", b"v", 10.0)

    assert await store.take("k") == b"v"
    assert await store.take("k") is None
    assert await store.get("k") is None


async def test_take_of_an_expired_key_returns_nothing(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    await store.put("k", b"v", 10.0)
    clock.advance(11.0)

    assert await store.take("k") is None


async def test_of_many_concurrent_takers_exactly_one_gets_the_value(
    store: MemorySharedStore,
) -> None:
    await store.put("k", b"v", 10.0)

    results = await asyncio.gather(*(store.take("k") for _ in range(20)))

    assert results.count(b"v") == 1
    assert results.count(None) == 19


# -- incr -------------------------------------------------------------------------------------


async def test_incr_counts_from_one(store: MemorySharedStore) -> None:
    assert [await store.incr("n", 60.0) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert await store.get("n") == b"5"


async def test_incr_keeps_the_ttl_of_the_first_increment(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    await store.incr("n", 60.0)
    clock.advance(50.0)
    assert await store.incr("n", 60.0) == 2  # does not push the window out

    clock.advance(10.0)

    assert await store.get("n") is None
    assert await store.incr("n", 60.0) == 1


async def test_concurrent_increments_are_all_counted(store: MemorySharedStore) -> None:
    results = await asyncio.gather(*(store.incr("n", 60.0) for _ in range(50)))

    assert sorted(results) == list(range(1, 51))


async def test_counters_are_independent(store: MemorySharedStore) -> None:
    await store.incr("a", 60.0)
    await store.incr("a", 60.0)

    assert await store.incr("b", 60.0) == 1


# -- memory bounds ----------------------------------------------------------------------------


async def test_expired_keys_nobody_reads_are_swept(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    for n in range(10_000):
        await store.put(f"once:{n}", b"x", 1.0)
    clock.advance(2.0)

    for n in range(300):  # enough writes to trigger a sweep
        await store.put(f"live:{n}", b"x", 60.0)

    assert len(store) == 300


async def test_the_expiry_index_stays_bounded_when_keys_are_rewritten(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    # The same few keys written again and again with long TTLs: each write adds an index
    # entry that never expires on its own.
    for _ in range(20_000):
        for key in ("a", "b", "c"):
            await store.put(key, b"x", 3600.0)

    assert len(store) == 3
    # The index is private, but it is what would grow: one entry per write.
    assert len(store._expiry) <= 4 * len(store) + 1024 + 256


async def test_the_expiry_index_stays_bounded_when_keys_are_deleted(
    store: MemorySharedStore,
) -> None:
    for n in range(20_000):
        await store.put(f"k{n}", b"x", 3600.0)
        await store.delete(f"k{n}")

    assert len(store) == 0
    assert len(store._expiry) <= 1024 + 256


async def test_a_key_rewritten_with_a_longer_ttl_survives_the_sweep_of_its_old_entry(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    await store.put("k", b"old", 1.0)
    await store.put("k", b"new", 600.0)
    clock.advance(2.0)

    for n in range(300):
        await store.put(f"filler:{n}", b"x", 600.0)

    assert await store.get("k") == b"new"


async def test_close_forgets_everything(store: MemorySharedStore) -> None:
    await store.put("k", b"v", 10.0)

    await store.close()

    assert len(store) == 0
    assert await store.get("k") is None


async def test_a_renewed_counter_lives_its_ttl_from_the_last_increment(
    store: MemorySharedStore, clock: FakeClock
) -> None:
    await store.incr("n", 60.0)
    clock.advance(50.0)
    assert await store.incr("n", 60.0, renew=True) == 2  # lives 60 s from now
    clock.advance(50.0)
    assert await store.incr("n", 60.0) == 3
    clock.advance(10.0)
    assert await store.get("n") is None
