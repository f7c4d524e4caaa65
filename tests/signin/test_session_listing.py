"""A user's open sessions listed for the helpdesk console (SessionBook.sessions_of): the
signed-in ones still live, newest first, none of another user's, none ended or revoked."""

from __future__ import annotations

from gateway.clock import FakeClock
from gateway.config.signin import Sessions
from gateway.crypto import new_key_line, parse_keys
from gateway.signin.session import FULL, PASSWORD, SessionBook
from gateway.stores.memory import MemorySharedStore

RULES = Sessions(idle_timeout=30 * 60.0, absolute_timeout=2 * 3600.0, max_per_user=3)


def book_for(clock: FakeClock) -> SessionBook:
    return SessionBook(MemorySharedStore(clock), parse_keys(new_key_line("k")), clock, RULES)


async def test_open_sessions_newest_first_without_others_or_ended_ones() -> None:
    clock = FakeClock()
    book = book_for(clock)
    first = await book.create("alice", FULL)
    clock.advance(60)
    second = await book.create("alice", FULL)
    clock.advance(60)
    await book.create("alice", PASSWORD)  # not signed in yet
    await book.create("bob", FULL)
    ended = await book.create("alice", FULL)
    await book.end(ended)
    assert [s.sid for s in await book.sessions_of("alice")] == [second.sid, first.sid]
    assert await book.sessions_of("carol") == []

    rotated = await book.rotate(first, verified=clock.now())  # a step-up: a new id, its place
    assert rotated is not None
    assert [s.sid for s in await book.sessions_of("alice")] == [second.sid, rotated.sid]
    assert [s.sid for s in await book.sessions_of("alice", limit=1)] == [second.sid]

    clock.advance(31 * 60)  # idle past the timeout: none is open any more
    assert await book.sessions_of("alice") == []


async def test_revoked_sessions_are_not_listed() -> None:
    clock = FakeClock()
    book = book_for(clock)
    await book.create("alice", FULL)
    clock.advance(1)
    book.revocations["alice"] = clock.now()
    assert await book.sessions_of("alice") == []
    clock.advance(1)
    fresh = await book.create("alice", FULL)
    assert [s.sid for s in await book.sessions_of("alice")] == [fresh.sid]


async def test_the_ring_keeps_at_most_its_cap() -> None:
    clock = FakeClock()
    book = book_for(clock)
    made = [await book.create("alice", FULL) for _ in range(5)]
    assert [s.sid for s in await book.sessions_of("alice")] == [s.sid for s in made[:1:-1]]
