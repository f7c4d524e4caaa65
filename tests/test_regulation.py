"""Brute-force lockouts and the TOTP replay guard (gateway/regulation.py), with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import FakeClock
from gateway.regulation import Regulator
from gateway.signin_config import Limits
from gateway.stores.memory import MemorySharedStore

LIMITS = Limits(user_failures=5, ip_failures=20, window=300.0, lockout=60.0, max_lockout=3600.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def regulator_for(clock: FakeClock, limits: Limits = LIMITS) -> Regulator:
    return Regulator(MemorySharedStore(clock), clock, limits)


@pytest.fixture
def regulator(clock: FakeClock) -> Regulator:
    return regulator_for(clock)


async def fail(
    regulator: Regulator, times: int, user: str = "alice", ip: str = "192.0.2.1"
) -> float:
    until = 0.0
    for _ in range(times):
        until = await regulator.failed(user, ip)
    return until


# -- per-user lockout --------------------------------------------------------------------------


async def test_nobody_is_locked_at_first(regulator: Regulator) -> None:
    assert await regulator.locked_until("alice", "192.0.2.1") == 0.0


async def test_failures_below_the_user_limit_do_not_lock(regulator: Regulator) -> None:
    for _ in range(LIMITS.user_failures - 1):
        assert await regulator.failed("alice", "192.0.2.1") == 0.0

    assert await regulator.locked_until("alice", "192.0.2.1") == 0.0


async def test_reaching_the_user_limit_locks_the_user_for_the_lockout(
    regulator: Regulator, clock: FakeClock
) -> None:
    until = await fail(regulator, LIMITS.user_failures)

    assert until == clock.now() + LIMITS.lockout
    assert await regulator.locked_until("alice", "192.0.2.1") == until


async def test_a_locked_user_is_locked_from_every_address(
    regulator: Regulator, clock: FakeClock
) -> None:
    await fail(regulator, LIMITS.user_failures)

    assert await regulator.locked_until("alice", "198.51.100.7") == clock.now() + LIMITS.lockout
    assert await regulator.locked_until("bob", "198.51.100.7") == 0.0


async def test_user_failures_from_many_addresses_add_up(
    regulator: Regulator, clock: FakeClock
) -> None:
    for n in range(LIMITS.user_failures):
        await regulator.failed("alice", f"192.0.2.{n + 1}")

    assert await regulator.locked_until("alice", "203.0.113.9") == clock.now() + LIMITS.lockout


async def test_the_lockout_ends_after_its_time(regulator: Regulator, clock: FakeClock) -> None:
    await fail(regulator, LIMITS.user_failures)

    clock.advance(LIMITS.lockout - 1)
    assert await regulator.locked_until("alice", "192.0.2.1") > 0
    clock.advance(1)
    assert await regulator.locked_until("alice", "192.0.2.1") == 0.0


async def test_failures_older_than_the_window_are_forgotten(
    regulator: Regulator, clock: FakeClock
) -> None:
    await fail(regulator, LIMITS.user_failures - 1)
    clock.advance(LIMITS.window)

    assert await fail(regulator, LIMITS.user_failures - 1) == 0.0
    assert await regulator.locked_until("alice", "192.0.2.1") == 0.0


async def test_the_count_starts_again_after_a_lockout(
    regulator: Regulator, clock: FakeClock
) -> None:
    await fail(regulator, LIMITS.user_failures)
    clock.advance(LIMITS.lockout)

    assert await fail(regulator, LIMITS.user_failures - 1) == 0.0


async def test_fifty_concurrent_wrong_codes_all_count(clock: FakeClock) -> None:
    regulator = regulator_for(clock, Limits(user_failures=50, ip_failures=10_000))

    results = await asyncio.gather(*(regulator.failed("alice", "192.0.2.1") for _ in range(50)))

    assert sum(1 for until in results if until) == 1
    assert await regulator.locked_until("alice", "192.0.2.1") > 0


# -- per-address lockout -----------------------------------------------------------------------


async def test_one_address_guessing_for_many_users_is_locked(
    regulator: Regulator, clock: FakeClock
) -> None:
    results = [await regulator.failed(f"user{n}", "192.0.2.66") for n in range(LIMITS.ip_failures)]

    assert results[:-1] == [0.0] * (LIMITS.ip_failures - 1)
    assert results[-1] == clock.now() + LIMITS.lockout
    assert await regulator.locked_until("someone-else", "192.0.2.66") == results[-1]


async def test_an_address_lockout_does_not_lock_its_users_elsewhere(regulator: Regulator) -> None:
    for n in range(LIMITS.ip_failures):
        await regulator.failed(f"user{n}", "192.0.2.66")

    assert await regulator.locked_until("user1", "198.51.100.1") == 0.0


# -- doubling lockouts -------------------------------------------------------------------------


async def test_each_lockout_within_a_day_doubles_up_to_the_maximum(
    regulator: Regulator, clock: FakeClock
) -> None:
    lengths = []
    for _ in range(9):
        until = await fail(regulator, LIMITS.user_failures)
        lengths.append(until - clock.now())
        clock.advance(until - clock.now())

    assert lengths == [60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0, 3600.0]


async def test_lockouts_are_forgotten_after_a_day(regulator: Regulator, clock: FakeClock) -> None:
    await fail(regulator, LIMITS.user_failures)
    clock.advance(LIMITS.lockout)
    await fail(regulator, LIMITS.user_failures)
    clock.advance(86400.0)

    until = await fail(regulator, LIMITS.user_failures)

    assert until == clock.now() + LIMITS.lockout


async def test_lockouts_far_past_the_maximum_stay_at_the_maximum(clock: FakeClock) -> None:
    # One-second lockouts let a level grow past 1024 in a day: 2**1024 has no float.
    limits = Limits(user_failures=1, ip_failures=10_000, lockout=1.0, max_lockout=1.0)
    regulator = regulator_for(clock, limits)

    for _ in range(1100):
        until = await regulator.failed("alice", "192.0.2.1")
        assert until == clock.now() + 1.0
        clock.advance(1.0)


# -- success and unlock ------------------------------------------------------------------------


async def test_a_right_code_clears_the_users_failure_count(
    regulator: Regulator, clock: FakeClock
) -> None:
    await fail(regulator, LIMITS.user_failures - 1)

    await regulator.succeeded("alice")

    assert await fail(regulator, LIMITS.user_failures - 1) == 0.0
    assert await regulator.failed("alice", "192.0.2.1") == clock.now() + LIMITS.lockout


async def test_a_right_code_does_not_clear_the_address_count(clock: FakeClock) -> None:
    regulator = regulator_for(clock, Limits(user_failures=1000, ip_failures=5))
    await fail(regulator, 4, user="victim", ip="192.0.2.66")

    await regulator.succeeded("mallory")
    await regulator.succeeded("victim")

    assert await regulator.failed("victim", "192.0.2.66") > 0


async def test_a_right_code_does_not_end_a_lockout_or_its_doubling(
    regulator: Regulator, clock: FakeClock
) -> None:
    await fail(regulator, LIMITS.user_failures)

    await regulator.succeeded("alice")
    assert await regulator.locked_until("alice", "192.0.2.1") > 0

    clock.advance(LIMITS.lockout)
    assert await fail(regulator, LIMITS.user_failures) == clock.now() + 2 * LIMITS.lockout


async def test_unlock_ends_a_user_lockout_and_resets_its_doubling(
    regulator: Regulator, clock: FakeClock
) -> None:
    await fail(regulator, LIMITS.user_failures)
    clock.advance(LIMITS.lockout)
    await fail(regulator, LIMITS.user_failures)
    await fail(regulator, 2)  # counted while locked (callers check first; the count still runs)

    await regulator.unlock("alice")

    assert await regulator.locked_until("alice", "192.0.2.1") == 0.0
    assert await fail(regulator, LIMITS.user_failures - 1) == 0.0
    assert await regulator.failed("alice", "192.0.2.1") == clock.now() + LIMITS.lockout


async def test_unlock_of_a_user_leaves_a_locked_address_locked(
    regulator: Regulator, clock: FakeClock
) -> None:
    for n in range(LIMITS.ip_failures):
        await regulator.failed(f"user{n}", "192.0.2.66")

    await regulator.unlock("user1")

    assert await regulator.locked_until("user1", "192.0.2.66") > 0
    assert await regulator.locked_until("user1", "198.51.100.1") == 0.0


async def test_unlock_touches_only_its_user(regulator: Regulator) -> None:
    await fail(regulator, LIMITS.user_failures, user="alice")
    await fail(regulator, LIMITS.user_failures, user="bob", ip="198.51.100.2")

    await regulator.unlock("alice")

    assert await regulator.locked_until("bob", "203.0.113.1") > 0


# -- replay guard ------------------------------------------------------------------------------


async def test_replayed_code_is_rejected(regulator: Regulator) -> None:
    assert await regulator.first_use("alice", 60_000_000, 120.0) is True
    assert await regulator.first_use("alice", 60_000_000, 120.0) is False


async def test_another_step_or_another_user_is_a_first_use(regulator: Regulator) -> None:
    await regulator.first_use("alice", 60_000_000, 120.0)

    assert await regulator.first_use("alice", 60_000_001, 120.0) is True
    assert await regulator.first_use("bob", 60_000_000, 120.0) is True


async def test_a_used_step_is_remembered_for_its_whole_ttl(
    regulator: Regulator, clock: FakeClock
) -> None:
    await regulator.first_use("alice", 60_000_000, 120.0)

    clock.advance(119.0)
    assert await regulator.first_use("alice", 60_000_000, 120.0) is False
    clock.advance(1.0)
    assert await regulator.first_use("alice", 60_000_000, 120.0) is True


async def test_of_twenty_parallel_uses_of_one_code_exactly_one_wins(regulator: Regulator) -> None:
    results = await asyncio.gather(
        *(regulator.first_use("alice", 60_000_000, 120.0) for _ in range(20))
    )

    assert results.count(True) == 1


async def test_the_replay_guard_survives_a_right_code_and_an_unlock(regulator: Regulator) -> None:
    await regulator.first_use("alice", 60_000_000, 120.0)

    await regulator.succeeded("alice")
    await regulator.unlock("alice")

    assert await regulator.first_use("alice", 60_000_000, 120.0) is False
