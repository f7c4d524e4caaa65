"""One contract, every shared-store backend: the in-process store and a real Redis. What the
sessions and the regulation above rely on holds for each."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from gateway.clock import FakeClock
from gateway.errors import StoreUnavailable
from gateway.stores import SharedStore
from gateway.stores.memory import MemorySharedStore
from gateway.stores.redis import RedisSharedStore


@dataclass
class Backend:
    store: SharedStore
    expire: Callable[[str], Awaitable[None]]  # make a key's time run out


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemorySharedStore(clock)

        async def advance(_key: str) -> None:
            clock.advance(3600)

        yield Backend(memory, advance)
        await memory.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"crm-gateway-test:{secrets.token_hex(6)}:"
    store = RedisSharedStore(url, prefix=prefix)
    raw = store._client  # the test reaches past the store only to end a key's time

    async def expire(key: str) -> None:
        await raw.pexpire(prefix + key, 1)
        await asyncio.sleep(0.01)  # Redis expires a key 1 ms after; not a timing assertion

    yield Backend(store, expire)
    keys = [k async for k in raw.scan_iter(match=prefix + "*")]
    if keys:
        await raw.delete(*keys)
    await store.close()


async def test_put_then_get_returns_the_bytes(backend: Backend) -> None:
    await backend.store.put("a", b"\x00value\xff", 60)
    assert await backend.store.get("a") == b"\x00value\xff"
    assert await backend.store.get("missing") is None


async def test_a_value_is_gone_when_its_time_is_up(backend: Backend) -> None:
    await backend.store.put("a", b"1", 60)
    await backend.expire("a")
    assert await backend.store.get("a") is None


async def test_add_stores_only_when_absent(backend: Backend) -> None:
    assert await backend.store.add("k", b"first", 60)
    assert not await backend.store.add("k", b"second", 60)
    assert await backend.store.get("k") == b"first"
    await backend.expire("k")
    assert await backend.store.add("k", b"third", 60)


async def test_replace_stores_only_when_present(backend: Backend) -> None:
    assert not await backend.store.replace("k", b"x", 60)
    assert await backend.store.get("k") is None
    await backend.store.put("k", b"x", 60)
    assert await backend.store.replace("k", b"y", 60)
    assert await backend.store.get("k") == b"y"
    await backend.store.delete("k")
    assert not await backend.store.replace("k", b"z", 60)


async def test_take_returns_the_value_once(backend: Backend) -> None:
    await backend.store.put("held", b"cookies", 60)
    results = await asyncio.gather(*(backend.store.take("held") for _ in range(20)))
    assert [r for r in results if r is not None] == [b"cookies"]
    assert await backend.store.get("held") is None


async def test_add_is_won_by_exactly_one_of_many(backend: Backend) -> None:
    results = await asyncio.gather(*(backend.store.add("step", b"1", 60) for _ in range(30)))
    assert results.count(True) == 1


async def test_incr_counts_atomically_and_keeps_its_first_deadline(backend: Backend) -> None:
    counts = await asyncio.gather(*(backend.store.incr("n", 60) for _ in range(50)))
    assert sorted(counts) == list(range(1, 51))
    assert await backend.store.incr("n", 60, -1) == 49
    await backend.expire("n")
    assert await backend.store.incr("n", 60) == 1


async def test_a_renewing_incr_counts_atomically_and_still_runs_out(backend: Backend) -> None:
    counts = await asyncio.gather(*(backend.store.incr("n", 60, renew=True) for _ in range(20)))
    assert sorted(counts) == list(range(1, 21))
    assert await backend.store.incr("n", 3600, renew=True) == 21
    await backend.expire("n")
    assert await backend.store.incr("n", 60, renew=True) == 1


async def test_delete_removes_one_key_and_a_missing_key_is_no_error(backend: Backend) -> None:
    await backend.store.put("a", b"1", 60)
    await backend.store.put("b", b"2", 60)
    await backend.store.delete("never-there")
    await backend.store.delete("a")
    assert await backend.store.get("a") is None
    assert await backend.store.get("b") == b"2"


async def test_an_unreachable_redis_is_store_unavailable() -> None:
    store = RedisSharedStore("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("x")
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.close()
