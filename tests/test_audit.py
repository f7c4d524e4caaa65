"""The audit trail (gateway/audit.py) and its store (SQLite): what is written where, what is
kept while the store is down, what search finds, and what an event may never carry."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.audit import MAX_PENDING, AuditTrail, event_json, utc_text
from gateway.clock import FakeClock
from gateway.model import AuditEvent
from gateway.stores.protocols import AuditQuery
from gateway.stores.sqlite import SqliteDurableStore

T0 = 1_800_000_000.0


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_an_event_goes_to_the_file_at_once_and_to_the_store_on_flush(
    store: SqliteDurableStore, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    out = tmp_path / "audit.jsonl"
    trail = AuditTrail(store, clock, output=str(out))
    trail.record(
        "challenge.failed",
        "failed",
        user="alice",
        ip="192.0.2.7",
        user_agent="Firefox",
        path="/_gateway/challenge",
        method="POST",
        request_id="r1",
        reason="wrong_code",
        factor="totp",
    )
    [line] = _lines(out)
    assert line == {
        "time": "2027-01-15T08:00:00.000Z",
        "event": "challenge.failed",
        "outcome": "failed",
        "user": "alice",
        "ip": "192.0.2.7",
        "user_agent": "Firefox",
        "path": "/_gateway/challenge",
        "method": "POST",
        "request_id": "r1",
        "reason": "wrong_code",
        "details": {"factor": "totp"},
    }
    assert await store.audit_events(AuditQuery()) == []  # batched: not yet
    await trail.close()
    [(event_id, event)] = await store.audit_events(AuditQuery())
    assert event_json(event) == line
    assert event_id >= 1
    assert (out.stat().st_mode & 0o777) == 0o640


async def test_the_background_task_flushes_within_a_second(store: SqliteDurableStore) -> None:
    trail = AuditTrail(store, FakeClock(T0), output="")
    task = asyncio.create_task(trail.run())
    try:
        trail.record("policy.reloaded", "ok", reason="SIGHUP")
        for _ in range(40):
            if await store.audit_events(AuditQuery()):
                break
            await asyncio.sleep(0.05)
        [(_, event)] = await store.audit_events(AuditQuery())
        assert (event.name, event.reason) == ("policy.reloaded", "SIGHUP")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_events_wait_in_memory_while_the_store_is_down(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = SqliteDurableStore(str(path))
    await store.open()
    trail = AuditTrail(store, FakeClock(T0), output="")
    trail.record("ip.denied", "denied", ip="198.51.100.1", reason="ip_not_allowed")
    await store.close()  # the store goes away: StoreUnavailable on every call
    await trail.flush()  # kept, not lost, not raised
    reopened = SqliteDurableStore(str(path))
    await reopened.open()
    trail._durable = reopened  # the same trail, its store back (as after a restart of it)
    await trail.close()
    [(_, event)] = await reopened.audit_events(AuditQuery())
    assert event.ip == "198.51.100.1"
    await reopened.close()


async def test_the_oldest_events_go_first_when_the_store_stays_down(tmp_path: Path) -> None:
    store = SqliteDurableStore(str(tmp_path / "gateway.db"))
    await store.open()
    await store.close()
    trail = AuditTrail(store, FakeClock(T0), output="")
    for n in range(MAX_PENDING + 3):
        trail.record("ip.denied", "denied", reason=str(n))
    assert len(trail._pending) == MAX_PENDING
    assert trail._pending[0].reason == "3"


def test_an_event_refuses_details_that_could_carry_a_secret() -> None:
    for key in ("code", "password", "otp_code", "session_cookie", "api_token", "secret"):
        with pytest.raises(ValueError, match="could carry a secret"):
            AuditEvent(T0, "x.y", "ok", details=((key, "v"),))
    trail = AuditTrail(None, FakeClock(T0), output="")
    with pytest.raises(ValueError, match="could carry a secret"):
        trail.record("code.sent", "ok", code="123456")


def test_a_listener_that_fails_does_not_stop_the_trail(tmp_path: Path) -> None:
    seen: list[str] = []

    def broken(event: AuditEvent) -> None:
        raise RuntimeError("alert rule bug")

    trail = AuditTrail(None, FakeClock(T0), output=str(tmp_path / "a.jsonl"))
    trail.listeners += [broken, lambda e: seen.append(e.name)]
    trail.record("signin.crm_ok", "ok", user="alice")
    assert seen == ["signin.crm_ok"]
    assert _lines(tmp_path / "a.jsonl")[0]["event"] == "signin.crm_ok"


def test_an_unwritable_file_does_not_stop_the_trail(tmp_path: Path) -> None:
    seen: list[str] = []
    trail = AuditTrail(None, FakeClock(T0), output=str(tmp_path / "missing" / "a.jsonl"))
    trail.listeners.append(lambda e: seen.append(e.name))
    trail.record("signin.crm_ok", "ok")
    trail.record("signin.crm_ok", "ok")
    assert seen == ["signin.crm_ok", "signin.crm_ok"]


def test_lines_from_several_writers_never_interleave(tmp_path: Path) -> None:
    """Workers and the CLI append to one file: every line whole (O_APPEND, one write each)."""
    out = tmp_path / "audit.jsonl"
    pids = []
    for worker in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            trail = AuditTrail(None, FakeClock(T0), output=str(out))
            for n in range(300):
                trail.record("ip.denied", "denied", user_agent="x" * 2000, reason=f"{worker}-{n}")
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    lines = _lines(out)
    assert len(lines) == 900
    assert {line["reason"] for line in lines} == {f"{w}-{n}" for w in range(3) for n in range(300)}


async def _fill(store: SqliteDurableStore) -> None:
    clock = FakeClock(T0)
    trail = AuditTrail(store, clock, output="")
    rows = [
        ("signin.crm_ok", "ok", "alice", "192.0.2.1", "r1"),
        ("challenge.failed", "failed", "alice", "192.0.2.1", "r2"),
        ("challenge.passed", "ok", "alice", "192.0.2.1", "r3"),
        ("ip.denied", "denied", "", "203.0.113.9", "r4"),
        ("code_x.sent", "ok", "bob", "192.0.2.2", "r5"),
        ("codeyx.sent", "ok", "bob", "192.0.2.2", "r6"),
        ("challenge.failed", "failed", "bob", "192.0.2.2", "r7"),
    ]
    for name, outcome, user, ip, rid in rows:
        trail.record(name, outcome, user=user, ip=ip, request_id=rid)
        clock.advance(3600)
    await trail.close()


async def test_search_by_each_criterion(store: SqliteDurableStore) -> None:
    await _fill(store)

    async def rids(**criteria: object) -> list[str]:
        return [e.request_id for _, e in await store.audit_events(AuditQuery(**criteria))]  # type: ignore[arg-type]

    assert await rids() == ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]
    assert await rids(user="bob") == ["r5", "r6", "r7"]
    assert await rids(names=("challenge.*",)) == ["r2", "r3", "r7"]
    assert await rids(names=("challenge.failed", "ip.denied")) == ["r2", "r4", "r7"]
    # A prefix is a prefix: `_` and `%` in it match themselves only.
    assert await rids(names=("code_x*",)) == ["r5"]
    assert await rids(names=("%",)) == []
    assert await rids(ip="203.0.113.9") == ["r4"]
    assert await rids(outcome="failed") == ["r2", "r7"]
    assert await rids(request_id="r3") == ["r3"]
    assert await rids(since=T0 + 2 * 3600, until=T0 + 4 * 3600) == ["r3", "r4"]
    assert await rids(limit=2, newest_first=True) == ["r7", "r6"]
    first = await store.audit_events(AuditQuery(limit=3))
    assert await rids(after_id=first[-1][0]) == ["r4", "r5", "r6", "r7"]
    assert await rids(user="alice", names=("challenge.*",), outcome="ok") == ["r3"]


async def test_the_background_task_prunes_at_its_first_look_then_hourly(
    store: SqliteDurableStore,
) -> None:
    """Whatever the monotonic clock reads at the start (it counts from the machine's boot):
    old events go at the first look, then no more often than PRUNE_EVERY."""
    await _fill(store)  # seven events, an hour apart from T0
    clock = FakeClock(T0 + 8 * 3600)  # monotonic 0: a machine just booted
    trail = AuditTrail(store, clock, output="", keep=5 * 3600)  # before T0 + 3 h: old

    async def stored(count: int) -> None:
        for _ in range(100):  # each look comes within FLUSH_EVERY
            if len(await store.audit_events(AuditQuery())) == count:
                return
            await asyncio.sleep(0.02)
        assert len(await store.audit_events(AuditQuery())) == count

    task = asyncio.create_task(trail.run())
    try:
        await stored(4)  # T0, T0 + 1 h and T0 + 2 h pruned at the first look
        clock.advance(1800)  # T0 + 3 h is old now, but half an hour is not an hour
        trail.record("policy.reloaded", "ok")
        await stored(5)
        trail.record("policy.reloaded", "ok")  # a look after the one that stored the first
        await stored(6)
        clock.advance(3600)  # an hour after the first prune: T0 + 3 h and T0 + 4 h go
        trail.record("policy.reloaded", "ok")
        await stored(5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_old_events_are_pruned(store: SqliteDurableStore) -> None:
    await _fill(store)
    assert await store.prune_audit(T0 + 3 * 3600) == 3
    assert len(await store.audit_events(AuditQuery())) == 4


async def test_networks_a_user_signed_in_from(store: SqliteDurableStore) -> None:
    assert await store.note_network("alice", "192.0.2.0/24", T0) is True
    assert await store.note_network("alice", "192.0.2.0/24", T0 + 10) is False
    assert await store.note_network("alice", "198.51.100.0/24", T0 + 20) is True
    assert await store.note_network("bob", "192.0.2.0/24", T0 + 30) is True
    assert await store.networks("alice") == [
        ("192.0.2.0/24", T0, T0 + 10),
        ("198.51.100.0/24", T0 + 20, T0 + 20),
    ]


def test_times_are_utc_with_milliseconds() -> None:
    assert utc_text(0.25) == "1970-01-01T00:00:00.250Z"


def test_a_file_moved_away_by_logrotate_is_followed_by_a_new_one(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    trail = AuditTrail(None, FakeClock(T0), output=str(out))
    trail._writer.REOPEN_CHECK = 0.0  # type: ignore[union-attr]
    trail.record("signin.crm_ok", "ok", reason="before")
    out.rename(tmp_path / "audit.jsonl.1")
    trail.record("signin.crm_ok", "ok", reason="after")
    assert [line["reason"] for line in _lines(tmp_path / "audit.jsonl.1")] == ["before"]
    assert [line["reason"] for line in _lines(out)] == ["after"]


async def test_flushes_asked_at_once_store_every_event_exactly_once(
    store: SqliteDurableStore,
) -> None:
    """The background task and a caller (shutdown, a test) may flush at the same time."""
    trail = AuditTrail(store, FakeClock(T0), output="")
    for n in range(2000):
        trail.record("path.denied", "denied", reason=str(n), user_agent="ü" * 50)
        if n % 500 == 0:
            await asyncio.gather(*(trail.flush() for _ in range(4)))
    await asyncio.gather(*(trail.flush() for _ in range(4)))
    stored = await store.audit_events(AuditQuery(limit=5000))
    assert [e.reason for _, e in stored] == [str(n) for n in range(2000)]
    assert stored[0][1].user_agent == "ü" * 50
    assert isinstance(stored[0][1].time, float)


# -- loss is never silent --------------------------------------------------------------------


def _lost() -> float:
    return (
        REGISTRY.get_sample_value("crm_gateway_audit_lines_lost_total", {"output": "file"}) or 0.0
    )


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_lines_the_file_cannot_take_are_counted_and_each_episode_told_twice(
    store: SqliteDurableStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two real failures: the file's folder replaced by a file, then the file a link to
    /dev/full (ENOSPC, as a full disk). The store gets every event throughout."""
    caplog.set_level(logging.INFO, logger="gateway.audit")
    clock = FakeClock(T0)
    folder = tmp_path / "logs"
    folder.mkdir()
    out = folder / "audit.jsonl"
    trail = AuditTrail(store, clock, output=str(out))
    trail._writer.REOPEN_CHECK = 0.0  # type: ignore[union-attr]
    before = _lost()
    trail.record("ip.denied", "denied", reason="1")

    folder.rename(tmp_path / "logs.old")
    folder.write_text("a file where the folder was")
    for n in (2, 3, 4):
        trail.record("ip.denied", "denied", reason=str(n))
        clock.advance(20)
    assert _lost() - before == 3
    folder.unlink()
    folder.mkdir()
    trail.record("ip.denied", "denied", reason="5")

    out.unlink()
    out.symlink_to("/dev/full")
    for n in (6, 7):
        trail.record("ip.denied", "denied", reason=str(n))
    out.unlink()
    trail.record("ip.denied", "denied", reason="8")

    assert _lost() - before == 5
    started = _messages(caplog, "cannot be written")
    assert len(started) == 2, started
    assert "Not a directory" in started[0] and "No space left on device" in started[1]
    assert _messages(caplog, "written again") == [
        f"audit file {out} written again: 3 lines lost over 60s (the store has the events)",
        f"audit file {out} written again: 2 lines lost over 0s (the store has the events)",
    ]
    assert [line["reason"] for line in _lines(tmp_path / "logs.old" / "audit.jsonl")] == ["1"]
    assert [line["reason"] for line in _lines(out)] == ["8"]
    await trail.close()
    stored = await store.audit_events(AuditQuery())
    assert [e.reason for _, e in stored] == [str(n) for n in range(1, 9)]


async def test_a_store_that_is_down_is_told_at_the_start_once_a_minute_and_at_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Flushes come twice a second: the log hears of the outage three times, not 240."""
    caplog.set_level(logging.INFO, logger="gateway.audit")
    path = tmp_path / "gateway.db"
    store = SqliteDurableStore(str(path))
    await store.open()
    await store.close()
    clock = FakeClock(T0)
    trail = AuditTrail(store, clock, output="")
    for second in range(120):
        trail.record("ip.denied", "denied", reason=str(second))
        await trail.flush()
        clock.advance(0.5)
        await trail.flush()
        clock.advance(0.5)
    reopened = SqliteDurableStore(str(path))
    await reopened.open()
    trail._durable = reopened  # the store is back (as after a restart of it)
    await trail.flush()
    told = [r.getMessage() for r in caplog.records if r.name == "gateway.audit"]
    assert [m.split(":")[0] for m in told] == [
        "audit store unavailable",
        "audit store still unavailable after 60s",
        "audit store takes events again after 120s",
    ], told
    assert told[-1].endswith("120 that waited in memory stored")
    assert len(await reopened.audit_events(AuditQuery(limit=500))) == 120
    await reopened.close()
