"""Gateway sessions (gateway/signin/session.py) over the in-memory shared store and a fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.clock import FakeClock
from gateway.config.signin import Sessions
from gateway.crypto import KeyRing, new_key_line, parse_keys
from gateway.signin.session import DEVICE_MAX_AGE, FULL, PASSWORD, Session, SessionBook
from gateway.stores.memory import MemorySharedStore

RULES = Sessions(idle_timeout=30 * 60.0, absolute_timeout=2 * 3600.0)
OLD_LINE = new_key_line("old")
NEW_LINE = new_key_line("new")


def book_for(
    clock: FakeClock,
    shared: MemorySharedStore | None = None,
    ring: KeyRing | None = None,
    rules: Sessions = RULES,
) -> SessionBook:
    return SessionBook(
        shared if shared is not None else MemorySharedStore(clock),
        ring if ring is not None else parse_keys(OLD_LINE),
        clock,
        rules,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def shared(clock: FakeClock) -> MemorySharedStore:
    return MemorySharedStore(clock)


@pytest.fixture
def book(clock: FakeClock, shared: MemorySharedStore) -> SessionBook:
    return book_for(clock, shared)


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip(cookie: str, index: int) -> str:
    """Change the top bit of one base64url symbol. (Changing a low bit of the last symbol
    could decode to the same bytes: base64 leaves spare bits there.)"""
    swapped = ALPHABET[ALPHABET.index(cookie[index]) ^ 32]
    return cookie[:index] + swapped + cookie[index + 1 :]


# -- create, load, save -----------------------------------------------------------------------


async def test_created_session_loads_from_its_cookie(book: SessionBook, clock: FakeClock) -> None:
    session = await book.create("alice", PASSWORD, return_to="/deals")

    loaded = await book.load(book.cookie_value(session))

    assert loaded == session
    assert (loaded.user, loaded.stage, loaded.return_to) == ("alice", PASSWORD, "/deals")
    assert loaded.created == loaded.last_seen == clock.now()


async def test_session_ids_and_csrf_tokens_are_long_and_random(book: SessionBook) -> None:
    sessions = [await book.create("alice", PASSWORD) for _ in range(20)]

    assert len({s.sid for s in sessions}) == 20
    assert len({s.csrf for s in sessions}) == 20
    assert all(len(s.sid) == 43 for s in sessions)  # 32 bytes, URL-safe base64
    assert all(len(s.csrf) >= 32 for s in sessions)


async def test_saved_changes_are_seen_by_the_next_load(book: SessionBook) -> None:
    session = await book.create("alice", PASSWORD)
    session.stage = FULL
    session.return_to = "/reports"
    session.pending["secret"] = "c2VhbGVk"

    await book.save(session)
    loaded = await book.load(book.cookie_value(session))

    assert loaded is not None
    assert (loaded.stage, loaded.return_to, loaded.pending) == (
        FULL,
        "/reports",
        {"secret": "c2VhbGVk"},
    )


async def test_sessions_are_shared_by_every_book_over_the_same_store(
    clock: FakeClock, shared: MemorySharedStore
) -> None:
    worker_a, worker_b = book_for(clock, shared), book_for(clock, shared)
    session = await worker_a.create("alice", FULL)

    assert await worker_b.load(worker_a.cookie_value(session)) == session


async def test_a_change_made_by_another_worker_counts_at_the_next_request(
    clock: FakeClock, shared: MemorySharedStore
) -> None:
    """Each worker parses a record once and checks a cookie's signature once; the record is
    still read from the shared store on every request, so a step taken elsewhere counts."""
    worker_a, worker_b = book_for(clock, shared), book_for(clock, shared)
    session = await worker_a.create("alice", PASSWORD)
    cookie = worker_a.cookie_value(session)
    first = await worker_b.load(cookie)
    assert first is not None and first.stage == PASSWORD

    session.stage = FULL  # the factor passed on worker A
    await worker_a.save(session)
    after = await worker_b.load(cookie)
    assert after is not None and after.stage == FULL

    await worker_a.end(session)  # a logout on worker A
    assert await worker_b.load(cookie) is None


async def test_what_a_caller_changes_without_saving_is_not_seen_by_the_next_load(
    book: SessionBook,
) -> None:
    session = await book.create("alice", FULL)
    cookie = book.cookie_value(session)
    for _ in range(2):  # the record parsed, then the worker's copy of it (_copy)
        loaded = await book.load(cookie)
        assert loaded is not None
        loaded.pending["enrol"] = "not saved"
        loaded.crm_binding = "not saved"
        loaded.verified_by["totp"] = 1.0
        loaded.due.append("totp")

        again = await book.load(cookie)
        assert again is not None
        assert (again.pending, again.crm_binding, again.verified_by, again.due) == ({}, "", {}, [])


async def test_a_cookie_that_differs_from_a_checked_one_is_checked_again(
    book: SessionBook,
) -> None:
    session = await book.create("alice", FULL)
    cookie = book.cookie_value(session)
    assert await book.load(cookie) is not None
    sid, _, signature = cookie.rpartition(".")
    forged = f"{sid}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"

    assert await book.load(forged) is None


@pytest.mark.parametrize("cookie", [None, ""])
async def test_no_cookie_is_no_session(book: SessionBook, cookie: str | None) -> None:
    assert await book.load(cookie) is None


async def test_a_validly_signed_id_with_no_record_is_no_session(book: SessionBook) -> None:
    session = Session("x" * 43, "alice", FULL, 0.0, 0.0, "csrf")

    assert await book.load(book.cookie_value(session)) is None


async def test_a_record_stored_under_another_id_is_not_loaded(
    book: SessionBook, shared: MemorySharedStore
) -> None:
    victim = await book.create("alice", FULL)
    attacker = await book.create("mallory", PASSWORD)
    data = await shared.get(f"session:{victim.sid}")
    assert data is not None

    await shared.put(f"session:{attacker.sid}", data, 60.0)

    assert await book.load(book.cookie_value(attacker)) is None


async def test_a_corrupt_record_is_no_session(book: SessionBook, shared: MemorySharedStore) -> None:
    session = await book.create("alice", FULL)

    await shared.put(f"session:{session.sid}", b'{"sid": "not all fields"}', 60.0)

    assert await book.load(book.cookie_value(session)) is None


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"null", b'{"unknown": 1}', b"\xff"])
def test_session_from_bytes_refuses_what_is_not_a_session_record(data: bytes) -> None:
    assert Session.from_bytes(data) is None


def test_session_round_trips_through_bytes() -> None:
    # By name: a field dropped or added in Session must not shift the others into the wrong
    # field unnoticed (a removed `factor` once put "/x" in pending and a dict in crm_binding).
    session = Session(
        "s" * 43,
        "alice",
        FULL,
        1.0,
        2.0,
        "c",
        verified=3.0,
        verified_by={"totp": 3.0},
        held="held:1",
        return_to="/x",
        pending={"a": "b"},
    )

    assert Session.from_bytes(session.to_bytes()) == session


# -- idle and absolute timeouts ---------------------------------------------------------------


async def test_session_unused_for_longer_than_the_idle_timeout_is_gone(
    book: SessionBook, clock: FakeClock, shared: MemorySharedStore
) -> None:
    session = await book.create("alice", FULL)
    cookie = book.cookie_value(session)

    clock.advance(RULES.idle_timeout + 1)

    assert await book.load(cookie) is None
    assert await shared.get(f"session:{session.sid}") is None


async def test_session_used_just_inside_the_idle_timeout_survives(
    book: SessionBook, clock: FakeClock
) -> None:
    session = await book.create("alice", FULL)

    clock.advance(RULES.idle_timeout - 1)

    assert await book.load(book.cookie_value(session)) is not None


async def test_activity_resets_the_idle_timeout(book: SessionBook, clock: FakeClock) -> None:
    session = await book.create("alice", FULL)
    cookie = book.cookie_value(session)

    for _ in range(3):
        clock.advance(RULES.idle_timeout - 60)
        loaded = await book.load(cookie)
        assert loaded is not None
        assert loaded.last_seen == clock.now()


async def test_activity_within_a_minute_does_not_move_last_seen(
    book: SessionBook, clock: FakeClock
) -> None:
    session = await book.create("alice", FULL)
    cookie = book.cookie_value(session)

    clock.advance(30)
    assert (await book.load(cookie)) == session
    clock.advance(RULES.idle_timeout - 29)

    assert await book.load(cookie) is None


async def test_active_session_ends_at_the_absolute_timeout(
    book: SessionBook, clock: FakeClock
) -> None:
    session = await book.create("alice", FULL)
    cookie = book.cookie_value(session)
    elapsed = 0.0

    while elapsed + 600 < RULES.absolute_timeout:
        clock.advance(600)
        elapsed += 600
        assert await book.load(cookie) is not None, elapsed

    clock.advance(RULES.absolute_timeout - elapsed + 1)

    assert await book.load(cookie) is None


async def test_the_store_forgets_a_record_by_the_absolute_timeout(
    book: SessionBook, clock: FakeClock, shared: MemorySharedStore
) -> None:
    session = await book.create("alice", FULL)
    clock.advance(RULES.absolute_timeout - 10)
    await book.save(session)

    clock.advance(11)

    assert await shared.get(f"session:{session.sid}") is None


async def test_a_cookie_older_than_the_absolute_timeout_is_refused_by_its_signature(
    book: SessionBook, clock: FakeClock
) -> None:
    session = await book.create("alice", FULL)
    cookie = book.cookie_value(session)
    assert book.sid_from_cookie(cookie) == session.sid

    clock.advance(RULES.absolute_timeout + 1)

    assert book.sid_from_cookie(cookie) is None


async def test_a_cookie_signed_in_the_future_is_refused(shared: MemorySharedStore) -> None:
    now = FakeClock()
    ahead = FakeClock(now.now() + 3600)
    future = book_for(ahead, shared)
    session = await future.create("alice", FULL)

    assert book_for(now, shared).sid_from_cookie(future.cookie_value(session)) is None


async def test_a_revoked_session_takes_its_held_crm_cookies_with_it(
    book: SessionBook, clock: FakeClock, shared: MemorySharedStore
) -> None:
    await shared.put("held:abc", b"Set-Cookie: sid=1", RULES.hold_cookies)
    session = await book.create("alice", PASSWORD, held="held:abc")
    clock.advance(1)
    book.revocations["alice"] = clock.now()

    assert await book.load(book.cookie_value(session)) is None
    assert await shared.get("held:abc") is None


# -- revocation -------------------------------------------------------------------------------


async def test_sessions_started_before_a_revocation_are_void(
    book: SessionBook, clock: FakeClock, shared: MemorySharedStore
) -> None:
    session = await book.create("alice", FULL)
    clock.advance(10)

    book.revocations["alice"] = clock.now()

    assert await book.load(book.cookie_value(session)) is None
    assert await shared.get(f"session:{session.sid}") is None


async def test_sessions_started_after_a_revocation_are_valid(
    book: SessionBook, clock: FakeClock
) -> None:
    book.revocations["alice"] = clock.now()
    clock.advance(1)

    session = await book.create("alice", FULL)

    assert await book.load(book.cookie_value(session)) is not None


async def test_a_revocation_touches_only_its_user(book: SessionBook, clock: FakeClock) -> None:
    alice = await book.create("alice", FULL)
    bob = await book.create("bob", FULL)
    clock.advance(1)

    book.revocations["alice"] = clock.now()

    assert await book.load(book.cookie_value(alice)) is None
    assert await book.load(book.cookie_value(bob)) is not None


async def test_a_rotated_session_is_still_void_after_a_revocation(
    book: SessionBook, clock: FakeClock
) -> None:
    session = await book.create("alice", PASSWORD)
    clock.advance(5)
    fresh = await book.rotate(session, stage=FULL)
    assert fresh is not None

    book.revocations["alice"] = clock.now()

    assert await book.load(book.cookie_value(fresh)) is None


# -- rotation and ending ----------------------------------------------------------------------


async def test_rotation_gives_a_new_id_and_csrf_and_ends_the_old_id(
    book: SessionBook, clock: FakeClock
) -> None:
    session = await book.create("alice", PASSWORD, return_to="/deals")
    old_cookie = book.cookie_value(session)
    clock.advance(120)

    fresh = await book.rotate(session, stage=FULL, held="held:x", verified=clock.now())

    assert fresh is not None
    assert fresh.sid != session.sid
    assert fresh.csrf != session.csrf
    assert (fresh.stage, fresh.held, fresh.verified) == (FULL, "held:x", clock.now())
    assert (fresh.user, fresh.return_to, fresh.created) == ("alice", "/deals", session.created)
    assert fresh.last_seen == clock.now()
    assert await book.load(old_cookie) is None
    assert await book.load(book.cookie_value(fresh)) == fresh


async def test_rotation_does_not_extend_the_absolute_timeout(
    book: SessionBook, clock: FakeClock
) -> None:
    session = await book.create("alice", PASSWORD)
    cookie = book.cookie_value(session)
    while clock.now() - session.created < RULES.absolute_timeout - 60 - 20 * 60:
        clock.advance(20 * 60)  # in use: never idle for long
        assert await book.load(cookie) is not None
    clock.advance(RULES.absolute_timeout - 60 - (clock.now() - session.created))
    fresh = await book.rotate(session, stage=FULL)
    assert fresh is not None

    clock.advance(61)

    assert await book.load(book.cookie_value(fresh)) is None


async def test_a_session_ended_meanwhile_is_not_brought_back_by_a_rotation(
    book: SessionBook,
) -> None:
    session = await book.create("alice", PASSWORD)
    await book.end(session)  # logout in another tab, an admin, a newer session in its place

    assert await book.rotate(session, stage=FULL) is None
    assert await book.load(book.cookie_value(session)) is None


async def test_a_user_with_too_many_sessions_loses_the_oldest(
    clock: FakeClock, shared: MemorySharedStore
) -> None:
    book = book_for(clock, shared, rules=Sessions(max_per_user=3))
    first = [await book.create("alice", FULL) for _ in range(3)]
    first[1] = await book.rotate(first[1], verified=1.0) or first[1]  # a new id, same place
    others = [await book.create("bob", FULL) for _ in range(3)]

    newest = await book.create("alice", FULL)

    alive = [await book.load(book.cookie_value(s)) is not None for s in [*first, newest]]
    assert alive == [False, True, True, True]  # the oldest went, and only it
    assert all([await book.load(book.cookie_value(s)) for s in others])  # bob's are his own
    newer = [await book.create("alice", FULL) for _ in range(2)]
    alive = [await book.load(book.cookie_value(s)) is not None for s in [*first, newest, *newer]]
    assert alive == [False, False, False, True, True, True]
    assert len([k for k in shared._data if k.startswith("session:")]) == 6


async def test_sign_ins_stopped_at_the_password_never_end_a_signed_in_session(
    clock: FakeClock, shared: MemorySharedStore
) -> None:
    """Someone with only the password can start sign-ins without end: they take places of
    their own, never those of the user's signed-in sessions."""
    book = book_for(clock, shared, rules=Sessions(max_per_user=3))
    signed_in = await book.create("alice", PASSWORD)
    signed_in = await book.rotate(signed_in, stage=FULL) or signed_in
    for _ in range(50):
        await book.create("alice", PASSWORD)
    assert await book.load(book.cookie_value(signed_in)) is not None
    waiting = [k for k in shared._data if k.startswith("session:")]
    assert len(waiting) == 1 + 20  # the signed-in one and the last 20 sign-ins


async def test_ending_a_session_voids_its_cookie_and_held_cookies(
    book: SessionBook, shared: MemorySharedStore
) -> None:
    await shared.put("held:xyz", b"Set-Cookie: sid=1", 300.0)
    session = await book.create("alice", FULL, held="held:xyz")

    await book.end(session)

    assert await book.load(book.cookie_value(session)) is None
    assert await shared.get("held:xyz") is None


# -- cookie signatures -------------------------------------------------------------------------


async def test_a_tampered_cookie_is_refused_wherever_the_byte_is(book: SessionBook) -> None:
    session = await book.create("alice", FULL)
    cookie = book.cookie_value(session)

    for index in range(len(cookie)):
        if cookie[index] == ".":
            continue
        assert await book.load(flip(cookie, index)) is None, index


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:-1],
        lambda c: c[: c.rindex(".")],
        lambda c: c[: c.rindex(".") + 1],
        lambda c: c + "A",
        lambda c: c.replace(".", "", 1),
        lambda c: "." + c,
        lambda c: c.upper(),
        lambda c: c + "." + c,
        lambda c: "é" + c,
        lambda c: "garbage",
        lambda c: "a.b.c",
        lambda c: "x" * 5000,
    ],
)
async def test_a_mangled_cookie_is_refused(book: SessionBook, mangle: Callable[[str], str]) -> None:
    session = await book.create("alice", FULL)

    mangled = mangle(book.cookie_value(session))

    assert book.sid_from_cookie(mangled) is None
    assert await book.load(mangled) is None


async def test_a_cookie_signed_with_another_key_ring_is_refused(
    clock: FakeClock, shared: MemorySharedStore
) -> None:
    ours = book_for(clock, shared, parse_keys(OLD_LINE))
    theirs = book_for(clock, shared, parse_keys(new_key_line("old")))  # same id, other key
    session = await theirs.create("alice", FULL)

    assert await ours.load(theirs.cookie_value(session)) is None


async def test_a_cookie_signed_under_the_old_key_loads_after_rotation(
    clock: FakeClock, shared: MemorySharedStore
) -> None:
    before = book_for(clock, shared, parse_keys(OLD_LINE))
    session = await before.create("alice", FULL)
    cookie = before.cookie_value(session)

    after = book_for(clock, shared, parse_keys(f"{NEW_LINE}\n{OLD_LINE}"))

    assert await after.load(cookie) == session


async def test_after_rotation_new_cookies_are_signed_with_the_new_key(
    clock: FakeClock, shared: MemorySharedStore
) -> None:
    after = book_for(clock, shared, parse_keys(f"{NEW_LINE}\n{OLD_LINE}"))
    session = await after.create("alice", FULL)
    cookie = after.cookie_value(session)

    only_new = book_for(clock, shared, parse_keys(NEW_LINE))
    only_old = book_for(clock, shared, parse_keys(OLD_LINE))

    assert await only_new.load(cookie) == session
    assert await only_old.load(cookie) is None


async def test_a_cookie_signed_under_a_retired_key_is_refused(
    clock: FakeClock, shared: MemorySharedStore
) -> None:
    before = book_for(clock, shared, parse_keys(OLD_LINE))
    session = await before.create("alice", FULL)

    retired = book_for(clock, shared, parse_keys(NEW_LINE))

    assert await retired.load(before.cookie_value(session)) is None


# -- device cookies ---------------------------------------------------------------------------


def test_device_cookie_names_its_device_for_its_own_user(book: SessionBook) -> None:
    cookie = book.device_cookie("dev-1", "alice")

    assert book.device_from_cookie(cookie, "alice") == "dev-1"


def test_device_cookie_is_refused_for_another_user(book: SessionBook) -> None:
    cookie = book.device_cookie("dev-1", "alice")

    assert book.device_from_cookie(cookie, "bob") is None
    assert book.device_from_cookie(cookie, "Alice") is None


def test_tampered_device_cookie_is_refused(book: SessionBook) -> None:
    cookie = book.device_cookie("dev-1", "alice")

    for index in range(len(cookie)):
        if cookie[index] != ".":
            assert book.device_from_cookie(flip(cookie, index), "alice") is None, index


def test_device_cookie_expires_after_400_days(book: SessionBook, clock: FakeClock) -> None:
    cookie = book.device_cookie("dev-1", "alice")

    clock.advance(DEVICE_MAX_AGE - 1)
    assert book.device_from_cookie(cookie, "alice") == "dev-1"
    clock.advance(2)
    assert book.device_from_cookie(cookie, "alice") is None


async def test_device_cookie_is_not_a_session_cookie(book: SessionBook) -> None:
    session = await book.create("alice", FULL)

    as_device = book.device_cookie(session.sid, "alice")

    assert book.sid_from_cookie(as_device) is None
    assert await book.load(as_device) is None


async def test_session_cookie_is_not_a_device_cookie(book: SessionBook) -> None:
    session = await book.create("alice", FULL)

    assert book.device_from_cookie(book.cookie_value(session), "alice") is None


def test_device_cookie_from_another_key_ring_is_refused(clock: FakeClock) -> None:
    theirs = book_for(clock, ring=parse_keys(new_key_line("old")))

    ours = book_for(clock)

    assert ours.device_from_cookie(theirs.device_cookie("dev-1", "alice"), "alice") is None


def test_device_cookie_under_the_old_key_is_read_after_rotation(clock: FakeClock) -> None:
    cookie = book_for(clock, ring=parse_keys(OLD_LINE)).device_cookie("dev-1", "alice")

    rotated = book_for(clock, ring=parse_keys(f"{NEW_LINE}\n{OLD_LINE}"))

    assert rotated.device_from_cookie(cookie, "alice") == "dev-1"


def test_a_record_from_another_version_still_loads() -> None:
    """A field added or dropped between versions does not sign anyone out."""
    old = b'{"sid": "s", "user": "u", "stage": "full", "created": 1.0, "last_seen": 1.0,'
    old += b' "csrf": "c", "factor": "totp"}'
    loaded = Session.from_bytes(old)
    assert loaded is not None
    assert (loaded.user, loaded.stage) == ("u", "full")
