"""What is kept per worker for a signed-in request's session answers as if made afresh:
the Who of a session (SessionBook.who) follows every change of the record."""

from __future__ import annotations

import dataclasses

from gateway.clock import FakeClock
from gateway.signin.decision import Kind, Who
from gateway.signin.session import Session
from tests.signin.test_session_listing import book_for

BOOK = book_for(FakeClock())


def who_in(session: Session, refused: str = "") -> Who:
    """A book's Who of `session`, from one book for the whole module (as a worker's)."""
    return BOOK.who(session, refused)


def _session(**changes: object) -> Session:
    session = Session(
        sid="s1",
        user="bob",
        stage="done",
        created=1000.0,
        last_seen=1000.0,
        csrf="c",
        verified=1100.0,
        verified_by={"totp": 1100.0, "sms": 1050.0},
    )
    return dataclasses.replace(session, **changes)  # type: ignore[arg-type]


def _made_afresh(session: Session, refused: str = "") -> Who:
    return Who(
        Kind.SESSION,
        session.user,
        verified=session.verified,
        refused=refused,
        verified_by=tuple(sorted(session.verified_by.items())),
        chosen_interval=session.chosen_interval,
    )


def test_who_of_a_session_is_the_same_answer_each_time() -> None:
    session = _session()
    assert who_in(session) == _made_afresh(session)
    assert who_in(session) == who_in(_session()) == _made_afresh(session)
    assert who_in(session).verified_by == (("sms", 1050.0), ("totp", 1100.0))


def test_who_of_a_session_follows_every_change_of_its_record() -> None:
    base = _session()
    changed = [
        _session(user="alice"),
        _session(verified=1200.0),
        _session(verified_by={"totp": 1200.0, "sms": 1050.0}),
        _session(verified_by={"totp": 1100.0}),
        _session(verified_by={}),
        _session(chosen_interval=600.0),
    ]
    for session in changed:
        assert who_in(session) == _made_afresh(session) != who_in(base)
    assert who_in(base, "two_credentials") == _made_afresh(base, "two_credentials")
    assert who_in(base, "two_credentials").refused == "two_credentials"
    assert who_in(base).refused == ""


def test_a_changed_session_object_is_read_again() -> None:
    session = _session()
    first = who_in(session)
    session.verified_by["webauthn"] = 1300.0
    session.verified = 1300.0
    assert who_in(session) == _made_afresh(session) != first
    assert ("webauthn", 1300.0) in who_in(session).verified_by


def test_order_of_factors_in_the_record_does_not_matter() -> None:
    one = _session(verified_by={"a": 1.0, "b": 2.0})
    other = _session(verified_by={"b": 2.0, "a": 1.0})
    assert who_in(one) == who_in(other) == _made_afresh(one)


def test_every_book_keeps_its_own() -> None:
    """The memo is a book's (a worker's), not the module's: another book makes its own."""
    session = _session()
    other = book_for(FakeClock())
    assert other.who(session) == who_in(session) and other.who(session) is not who_in(session)
