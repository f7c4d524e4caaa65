"""Brute-force lockouts and the TOTP replay guard (gateway/signin/regulation.py), with a fake clock.

Callers count an attempt before they check it (`attempt`), then report a wrong answer
(`failed`) or a right one (`succeeded`); the helpers below do exactly that.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.config.signin import Limits
from gateway.signin.regulation import BUSY_RETRY, Regulator, address_key
from gateway.stores.memory import MemorySharedStore
from gateway.stores.redis import RedisSharedStore

# A daily ceiling out of the way: most tests here are about the windows and their lockouts.
LIMITS = Limits(
    user_failures=5,
    ip_failures=20,
    window=300.0,
    lockout=60.0,
    max_lockout=3600.0,
    daily_failures=10_000,
)
IP = "192.0.2.1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Interleaving:
    """The memory store, but every call first yields to the event loop, as a round trip to a
    networked store would: concurrent callers interleave between any two calls."""

    def __init__(self, inner: MemorySharedStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return await method(*args, **kwargs)

        return call


def regulator_for(
    clock: FakeClock, limits: Limits = LIMITS, *, interleaving: bool = False
) -> Regulator:
    store = MemorySharedStore(clock)
    return Regulator(Interleaving(store) if interleaving else store, clock, limits)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "interleaving", "redis"])
async def backend(clock: FakeClock, request: pytest.FixtureRequest) -> AsyncIterator[Regulator]:
    """A regulator over the memory store, the same with a yield before each call, or a real
    Redis (where concurrent callers really interleave)."""
    if request.param != "redis":
        yield regulator_for(clock, interleaving=request.param == "interleaving")
        return
    prefix = f"crm-gateway-test:{secrets.token_hex(6)}:"
    store = RedisSharedStore(request.getfixturevalue("redis_url"), prefix=prefix)
    yield Regulator(store, clock, LIMITS)
    await store.close()


@pytest.fixture
def regulator(clock: FakeClock) -> Regulator:
    return regulator_for(clock)


async def wrong(
    regulator: Regulator, times: int = 1, user: str = "alice", ip: str = IP, scope: str = "code"
) -> float:
    """`times` wrong answers, each counted first as the callers do; the last result (the
    lockout end when the attempt was refused or the answer locked, else 0)."""
    until = 0.0
    for _ in range(times):
        until = await regulator.attempt(user, ip, scope)
        if not until:
            until = await regulator.failed(user, ip, scope)
    return until


async def right(
    regulator: Regulator, user: str = "alice", ip: str = IP, scope: str = "code"
) -> float:
    """One right answer; the lockout end instead when the attempt was refused."""
    until = await regulator.attempt(user, ip, scope)
    if not until:
        await regulator.succeeded(user, ip, scope)
    return until


# -- per-user lockout --------------------------------------------------------------------------


async def test_nobody_is_locked_at_first(regulator: Regulator) -> None:
    assert await regulator.locked_until("alice", IP) == 0.0
    assert await regulator.attempt("alice", IP) == 0.0


async def test_wrong_answers_below_the_user_limit_do_not_lock(regulator: Regulator) -> None:
    for _ in range(LIMITS.user_failures - 1):
        assert await wrong(regulator) == 0.0

    assert await regulator.locked_until("alice", IP) == 0.0


async def test_the_wrong_answer_that_uses_the_last_try_locks_the_user(
    regulator: Regulator, clock: FakeClock
) -> None:
    until = await wrong(regulator, LIMITS.user_failures)

    assert until == clock.now() + LIMITS.lockout
    assert await regulator.locked_until("alice", IP) == until


async def test_an_attempt_is_counted_before_it_is_answered(
    regulator: Regulator, clock: FakeClock
) -> None:
    """Attempts that never report back (a crash, a dropped connection, a race) still count:
    the one after the limit is refused, and locks."""
    for _ in range(LIMITS.user_failures):
        assert await regulator.attempt("alice", IP) == 0.0

    until = await regulator.attempt("alice", IP)

    assert until == clock.now() + LIMITS.lockout
    assert await regulator.locked_until("alice", IP) == until


async def test_attempts_while_locked_are_refused_and_not_counted(
    regulator: Regulator, clock: FakeClock
) -> None:
    until = await wrong(regulator, LIMITS.user_failures)
    for _ in range(100):
        assert await regulator.attempt("alice", IP) == until

    clock.advance(LIMITS.lockout)

    assert await wrong(regulator, LIMITS.user_failures - 1) == 0.0


async def test_a_locked_user_is_locked_from_every_address(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures)

    assert await regulator.locked_until("alice", "198.51.100.7") == clock.now() + LIMITS.lockout
    assert await regulator.attempt("alice", "198.51.100.7") == clock.now() + LIMITS.lockout
    assert await regulator.locked_until("bob", "198.51.100.7") == 0.0


async def test_user_failures_from_many_addresses_add_up(
    regulator: Regulator, clock: FakeClock
) -> None:
    for n in range(LIMITS.user_failures):
        await wrong(regulator, ip=f"192.0.2.{n + 1}")

    assert await regulator.locked_until("alice", "203.0.113.9") == clock.now() + LIMITS.lockout


async def test_the_lockout_ends_after_its_time(regulator: Regulator, clock: FakeClock) -> None:
    await wrong(regulator, LIMITS.user_failures)

    clock.advance(LIMITS.lockout - 1)
    assert await regulator.locked_until("alice", IP) > 0
    clock.advance(1)
    assert await regulator.locked_until("alice", IP) == 0.0
    assert await regulator.attempt("alice", IP) == 0.0


async def test_failures_older_than_the_window_are_forgotten(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures - 1)
    clock.advance(LIMITS.window)

    assert await wrong(regulator, LIMITS.user_failures - 1) == 0.0
    assert await regulator.locked_until("alice", IP) == 0.0


async def test_the_count_starts_again_after_a_lockout(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures)
    clock.advance(LIMITS.lockout)

    assert await wrong(regulator, LIMITS.user_failures - 1) == 0.0


# -- concurrent attempts -----------------------------------------------------------------------


async def test_of_200_concurrent_attempts_at_most_the_user_limit_go_ahead(
    backend: Regulator,
) -> None:
    regulator = backend

    results = await asyncio.gather(*(regulator.attempt("alice", IP) for _ in range(200)))

    # At most the limit go ahead (none at all when every one raced the lock).
    assert results.count(0.0) <= LIMITS.user_failures
    assert await regulator.locked_until("alice", IP) > 0


async def test_200_concurrent_wrong_answers_check_at_most_the_user_limit(
    backend: Regulator,
) -> None:
    regulator = backend
    checked = 0

    async def guess() -> None:
        nonlocal checked
        if await regulator.attempt("alice", IP):
            return
        checked += 1
        await asyncio.sleep(0)  # the check itself takes a while
        await regulator.failed("alice", IP)

    await asyncio.gather(*(guess() for _ in range(200)))

    assert checked <= LIMITS.user_failures  # none at all when every one raced the lock
    assert await regulator.locked_until("alice", IP) > 0


# Over a store whose calls are round trips (Redis), concurrent lockers interleave: the lock
# must still be placed once and the level raised once (an atomic add decides who locks).
STORES = pytest.mark.parametrize("interleaving", [False, True], ids=["memory", "interleaving"])


@STORES
async def test_concurrent_attempts_past_the_limit_lock_once(
    clock: FakeClock, interleaving: bool
) -> None:
    """Two hundred refusals at once are one lockout, not a level each: the next lockout is
    only twice as long."""
    regulator = regulator_for(clock, interleaving=interleaving)
    results = await asyncio.gather(*(wrong(regulator) for _ in range(200)))

    assert set(results) - {0.0} == {clock.now() + LIMITS.lockout}
    clock.advance(LIMITS.lockout)
    assert await wrong(regulator, LIMITS.user_failures) == clock.now() + 2 * LIMITS.lockout


@STORES
async def test_concurrent_wrong_answers_at_the_limit_lock_once(
    clock: FakeClock, interleaving: bool
) -> None:
    regulator = regulator_for(clock, interleaving=interleaving)
    for _ in range(LIMITS.user_failures):
        assert await regulator.attempt("alice", IP) == 0.0

    results = await asyncio.gather(*(regulator.failed("alice", IP) for _ in range(50)))

    assert set(results) <= {0.0, clock.now() + LIMITS.lockout}
    assert clock.now() + LIMITS.lockout in results
    clock.advance(LIMITS.lockout)
    assert await wrong(regulator, LIMITS.user_failures) == clock.now() + 2 * LIMITS.lockout


# -- per-address lockout -----------------------------------------------------------------------


async def test_one_address_guessing_for_many_users_is_locked(
    regulator: Regulator, clock: FakeClock
) -> None:
    results = [
        await wrong(regulator, user=f"user{n}", ip="192.0.2.66") for n in range(LIMITS.ip_failures)
    ]

    assert results[:-1] == [0.0] * (LIMITS.ip_failures - 1)
    assert results[-1] == clock.now() + LIMITS.lockout
    assert await regulator.locked_until("someone-else", "192.0.2.66") == results[-1]


async def test_an_address_lockout_does_not_lock_its_users_elsewhere(regulator: Regulator) -> None:
    for n in range(LIMITS.ip_failures):
        await wrong(regulator, user=f"user{n}", ip="192.0.2.66")

    assert await regulator.locked_until("user1", "198.51.100.1") == 0.0


async def test_many_addresses_guessing_for_one_user_lock_the_user(
    regulator: Regulator, clock: FakeClock
) -> None:
    """A botnet spreading its guesses over addresses is stopped by the user's own count."""
    results = [await wrong(regulator, ip=f"198.51.100.{n}") for n in range(1, 50)]

    assert results.count(0.0) == LIMITS.user_failures - 1
    assert await regulator.locked_until("alice", "203.0.113.200") > 0


async def test_an_office_behind_one_address_signing_in_many_users_never_locks_itself(
    regulator: Regulator,
) -> None:
    """Each right answer gives the address back the attempt it used."""
    for n in range(10 * LIMITS.ip_failures):
        assert await right(regulator, user=f"user{n}", ip="192.0.2.80") == 0.0

    assert await regulator.locked_until("newcomer", "192.0.2.80") == 0.0
    # The address still has (almost) all of its tries for wrong answers.
    assert await wrong(regulator, LIMITS.user_failures - 1, "newcomer", "192.0.2.80") == 0.0


async def test_a_right_answer_gives_the_address_back_only_its_own_attempt(
    clock: FakeClock,
) -> None:
    """One known account must not reset an address that is guessing for others."""
    regulator = regulator_for(clock, Limits(user_failures=1000, ip_failures=5))
    await wrong(regulator, 4, user="victim", ip="192.0.2.66")

    await right(regulator, user="mallory", ip="192.0.2.66")
    await right(regulator, user="mallory", ip="192.0.2.66")

    assert await wrong(regulator, user="victim", ip="192.0.2.66") > 0


async def test_right_answers_bank_no_spare_tries_for_an_address(clock: FakeClock) -> None:
    """A right answer gives back the attempt it used, no more: signing in twenty times first
    does not buy an address extra guesses afterwards."""
    regulator = regulator_for(clock, Limits(user_failures=1000, ip_failures=5))
    for _ in range(20):
        await right(regulator, user="mallory", ip="192.0.2.66")

    assert await wrong(regulator, 4, user="victim", ip="192.0.2.66") == 0.0
    assert await wrong(regulator, user="victim", ip="192.0.2.66") > 0


# -- scopes ------------------------------------------------------------------------------------


async def test_password_failures_do_not_lock_codes(regulator: Regulator) -> None:
    assert await wrong(regulator, LIMITS.user_failures, scope="password") > 0

    assert await regulator.locked_until("alice", IP, "password") > 0
    assert await regulator.locked_until("alice", IP, "code") == 0.0
    assert await wrong(regulator, LIMITS.user_failures - 1, scope="code") == 0.0


async def test_code_failures_do_not_lock_passwords(regulator: Regulator) -> None:
    assert await wrong(regulator, LIMITS.user_failures, scope="code") > 0

    assert await regulator.locked_until("alice", IP, "code") > 0
    assert await regulator.locked_until("alice", IP, "password") == 0.0
    assert await right(regulator, scope="password") == 0.0


async def test_an_address_locked_for_passwords_may_still_answer_codes(
    regulator: Regulator,
) -> None:
    """Typos at the login form do not lock an office out of its codes."""
    for n in range(LIMITS.ip_failures):
        await wrong(regulator, user=f"user{n}", ip="192.0.2.66", scope="password")

    assert await regulator.locked_until("someone", "192.0.2.66", "password") > 0
    assert await regulator.attempt("someone", "192.0.2.66", "code") == 0.0


async def test_a_right_password_does_not_clear_the_code_count(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures - 1)

    await right(regulator, scope="password")

    assert await wrong(regulator) == clock.now() + LIMITS.lockout


async def test_the_scopes_double_their_lockouts_separately(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures, scope="password")
    clock.advance(LIMITS.lockout)
    await wrong(regulator, LIMITS.user_failures, scope="password")

    assert await wrong(regulator, LIMITS.user_failures) == clock.now() + LIMITS.lockout


# -- doubling lockouts -------------------------------------------------------------------------


async def test_each_lockout_within_a_day_doubles_up_to_the_maximum(
    regulator: Regulator, clock: FakeClock
) -> None:
    lengths = []
    for _ in range(9):
        until = await wrong(regulator, LIMITS.user_failures)
        lengths.append(until - clock.now())
        clock.advance(until - clock.now())

    assert lengths == [60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0, 3600.0]


async def test_lockouts_are_forgotten_after_a_day(regulator: Regulator, clock: FakeClock) -> None:
    await wrong(regulator, LIMITS.user_failures)
    clock.advance(LIMITS.lockout)
    await wrong(regulator, LIMITS.user_failures)
    clock.advance(86400.0)

    until = await wrong(regulator, LIMITS.user_failures)

    assert until == clock.now() + LIMITS.lockout


async def test_lockouts_far_past_the_maximum_stay_at_the_maximum(clock: FakeClock) -> None:
    # One-second lockouts let a level grow past 1024 in a day: 2**1024 has no float.
    limits = Limits(user_failures=1, ip_failures=10_000, lockout=1.0, max_lockout=1.0)
    regulator = regulator_for(clock, limits)

    for _ in range(1100):
        until = await wrong(regulator)
        assert until == clock.now() + 1.0
        clock.advance(1.0)


# -- success and unlock ------------------------------------------------------------------------


async def test_a_right_answer_clears_the_users_failure_count(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures - 1)

    assert await right(regulator) == 0.0

    assert await wrong(regulator, LIMITS.user_failures - 1) == 0.0
    assert await wrong(regulator) == clock.now() + LIMITS.lockout


async def test_a_right_answer_does_not_end_a_lockout_or_its_doubling(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures)

    await regulator.succeeded("alice", IP)
    assert await regulator.locked_until("alice", IP) > 0
    assert await right(regulator) > 0  # refused while locked, right or not

    clock.advance(LIMITS.lockout)
    assert await wrong(regulator, LIMITS.user_failures) == clock.now() + 2 * LIMITS.lockout


async def test_unlock_ends_a_user_lockout_and_resets_its_doubling(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures)
    clock.advance(LIMITS.lockout)
    await wrong(regulator, LIMITS.user_failures)

    await regulator.unlock("alice")

    assert await regulator.locked_until("alice", IP) == 0.0
    assert await wrong(regulator, LIMITS.user_failures - 1) == 0.0
    assert await wrong(regulator) == clock.now() + LIMITS.lockout


async def test_unlock_ends_password_and_code_lockouts_alike(
    regulator: Regulator, clock: FakeClock
) -> None:
    await wrong(regulator, LIMITS.user_failures, scope="code")
    await wrong(regulator, LIMITS.user_failures, scope="password")
    clock.advance(LIMITS.lockout)
    await wrong(regulator, LIMITS.user_failures, scope="password")

    await regulator.unlock("alice")

    assert await regulator.locked_until("alice", IP, "code") == 0.0
    assert await regulator.locked_until("alice", IP, "password") == 0.0
    until = await wrong(regulator, LIMITS.user_failures, scope="password")
    assert until == clock.now() + LIMITS.lockout


async def test_unlock_of_a_user_leaves_a_locked_address_locked(regulator: Regulator) -> None:
    for n in range(LIMITS.ip_failures):
        await wrong(regulator, user=f"user{n}", ip="192.0.2.66")

    await regulator.unlock("user1")

    assert await regulator.locked_until("user1", "192.0.2.66") > 0
    assert await regulator.locked_until("user1", "198.51.100.1") == 0.0


async def test_unlock_touches_only_its_user(regulator: Regulator) -> None:
    await wrong(regulator, LIMITS.user_failures, user="alice")
    await wrong(regulator, LIMITS.user_failures, user="bob", ip="198.51.100.2")

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

    await right(regulator)
    await regulator.unlock("alice")

    assert await regulator.first_use("alice", 60_000_000, 120.0) is False


async def test_a_patient_guesser_under_every_window_is_locked_by_the_daily_ceiling(
    clock: FakeClock,
) -> None:
    """Four wrong answers every five minutes never reach a window's limit; thirty in a day
    lock the user for the longest lockout."""
    limits = Limits(user_failures=5, ip_failures=20, window=300.0, daily_failures=30)
    regulator = Regulator(MemorySharedStore(clock), clock, limits)
    wrong = 0
    for _ in range(100):
        for _ in range(4):
            if await regulator.attempt("alice", IP):
                break
            await regulator.failed("alice", IP)
            wrong += 1
        if await regulator.locked_until("alice", IP):
            break
        clock.advance(301)
    assert wrong == 30
    assert await regulator.locked_until("alice", IP) == clock.now() + limits.max_lockout


async def test_a_right_answer_ends_the_daily_streak(clock: FakeClock) -> None:
    limits = Limits(user_failures=5, ip_failures=20, window=300.0, daily_failures=30)
    regulator = Regulator(MemorySharedStore(clock), clock, limits)
    for _ in range(7):
        for _ in range(4):
            await regulator.attempt("alice", IP)
            await regulator.failed("alice", IP)
        clock.advance(301)
    await regulator.attempt("alice", IP)
    await regulator.succeeded("alice", IP)
    for _ in range(4):
        await regulator.attempt("alice", IP)
        await regulator.failed("alice", IP)
    assert await regulator.locked_until("alice", IP) == 0


# -- addresses: failures count, attempts in flight only hold back -------------------------------


@pytest.mark.parametrize(
    ("ip", "counted_as"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1%eth0", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_ipv6_addresses_are_counted_by_their_64(ip: str, counted_as: str) -> None:
    assert address_key(ip) == counted_as


async def test_attempts_in_flight_past_the_limit_wait_but_lock_nothing(
    regulator: Regulator, clock: FakeClock
) -> None:
    started = [await regulator.attempt(f"user{n}", IP) for n in range(LIMITS.ip_failures)]
    assert started == [0.0] * LIMITS.ip_failures
    assert await regulator.attempt("late", IP) == clock.now() + BUSY_RETRY
    for n in range(LIMITS.ip_failures):
        await regulator.succeeded(f"user{n}", IP)
    assert await regulator.attempt("late", IP) == 0.0  # the slots came back; no lockout
    assert await regulator.locked_until("late", IP) == 0.0


async def test_successes_never_count_toward_the_address_limit(regulator: Regulator) -> None:
    for n in range(5 * LIMITS.ip_failures):
        assert await right(regulator, user=f"user{n}") == 0.0
    # Only the failures do: one short of the limit, then the limit locks.
    assert await wrong(regulator, user="x", ip=IP) == 0.0
