"""One contract, every durable backend: the store as one file for backup and restore (the
DurableSnapshots Protocol of gateway/stores/protocols.py), held against real stores. The
encrypted file around a snapshot is the backup command's (tests/flows/test_backup.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from gateway.errors import Refused
from gateway.model import AuditEvent
from gateway.stores import Authenticator, DurableStore, durable_snapshots
from tests.contracts.conftest import DurableBackend

T0 = 1_800_000_000.0


async def fill(store: DurableStore, tokens: int = 2) -> None:
    for n in range(tokens):
        await store.add_token(f"tok_{n}", "crm-sync", bytes([n]) * 32, "", T0 + n)
    await store.add_authenticator(
        Authenticator("a1", "alice", "totp", "Phone", b"k1\x00sealed", "k1", T0)
    )
    await store.add_audit_events([AuditEvent(T0, "admin.token_added", "ok", user="alice")])


async def test_a_new_store_holds_nothing_beyond_what_every_store_holds(
    durable_backend: DurableBackend,
) -> None:
    snapshots = durable_snapshots(durable_backend.settings)
    assert not snapshots.exists()
    assert snapshots.held_rows() == {}

    await durable_backend.open()

    assert snapshots.exists()
    assert snapshots.held_rows() == {}
    contents = snapshots.examine_store("the store", "store_damaged")
    assert contents.schema == snapshots.schema >= 1


async def test_held_rows_count_what_the_store_holds_per_table(
    durable_backend: DurableBackend, durable: DurableStore
) -> None:
    await fill(durable, tokens=3)

    held = durable_snapshots(durable_backend.settings).held_rows()

    assert sum(held.values()) == 5  # tokens, the authenticator, the event
    assert sorted(held.values()) == [1, 1, 3]
    assert all(count > 0 for count in held.values())


async def test_a_snapshot_holds_the_store_as_it_was_when_taken(
    durable_backend: DurableBackend, durable: DurableStore, tmp_path: Path
) -> None:
    await fill(durable)
    snapshots = durable_snapshots(durable_backend.settings)
    taken = tmp_path / "snapshot"

    await asyncio.to_thread(snapshots.take, taken)
    await durable.add_token("tok_later", "crm-sync", b"\x09" * 32, "", T0 + 60)

    contents = snapshots.examine(taken, "the snapshot", "backup_damaged")
    now = snapshots.examine_store("the store", "store_damaged")
    assert contents.schema == snapshots.schema
    assert contents.rows == now.rows - 1
    assert contents.digest != now.digest
    assert snapshots.examine(taken, "again", "backup_damaged") == contents  # a digest is stable


async def test_a_snapshot_put_in_place_gives_another_store_the_same_contents_at_once(
    durable_backends: Callable[[str], DurableBackend], tmp_path: Path
) -> None:
    source, target = durable_backends("source"), durable_backends("target")
    await fill(await source.open())
    running = await target.open()  # against advice, a gateway still holds the target open
    await running.add_token("tok_replaced", "old", b"\x07" * 32, "", T0)
    taken = tmp_path / "snapshot"
    await asyncio.to_thread(durable_snapshots(source.settings).take, taken)
    into = durable_snapshots(target.settings)

    await asyncio.to_thread(into.put, taken)

    put = into.examine_store("the store", "verify_failed")
    assert put == durable_snapshots(source.settings).examine_store("the store", "store_damaged")
    assert [row[0] for row in await running.tokens()] == ["tok_0", "tok_1"]
    assert [a.id for a in await running.authenticators("alice")] == ["a1"]
    await running.add_token("tok_after", "crm-sync", b"\x08" * 32, "", T0 + 9)  # writes on
    assert sorted(t[0] for t in (await running.active_tokens())[1]) == [
        "tok_0",
        "tok_1",
        "tok_after",
    ]


async def test_a_snapshot_put_where_there_is_no_store_makes_one(
    durable_backends: Callable[[str], DurableBackend], tmp_path: Path
) -> None:
    source, target = durable_backends("source"), durable_backends("new")
    await fill(await source.open())
    taken = tmp_path / "snapshot"
    await asyncio.to_thread(durable_snapshots(source.settings).take, taken)

    await asyncio.to_thread(durable_snapshots(target.settings).put, taken)

    restored = await target.open(create=False)
    assert [row[0] for row in await restored.tokens()] == ["tok_0", "tok_1"]


async def test_taking_a_snapshot_of_no_store_is_refused(
    durable_backend: DurableBackend, tmp_path: Path
) -> None:
    snapshots = durable_snapshots(durable_backend.settings)

    with pytest.raises(Refused) as refused:
        await asyncio.to_thread(snapshots.take, tmp_path / "snapshot")

    assert refused.value.reason == "store_unreadable"
    assert not snapshots.exists()


async def test_a_snapshot_of_the_schema_before_is_brought_up_to_date_when_put(
    durable_backends: Callable[[str], DurableBackend], tmp_path: Path
) -> None:
    """A backup made by the crm-gateway before an upgrade (schema 1: no interval_choice
    table) restores into a store of this version, which then works in full."""
    source, target = durable_backends("source"), durable_backends("upgraded")
    await fill(await source.open())
    taken = tmp_path / "snapshot"
    await asyncio.to_thread(durable_snapshots(source.settings).take, taken)
    with closing(sqlite3.connect(taken)) as old:
        old.execute("DROP TABLE interval_choice")
        old.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        old.commit()
    snapshots = durable_snapshots(target.settings)

    await asyncio.to_thread(snapshots.put, taken)

    restored = await target.open(create=False)
    assert [row[0] for row in await restored.tokens()] == ["tok_0", "tok_1"]
    assert snapshots.examine_store("the store", "store_damaged").schema == snapshots.schema == 2
    await restored.set_interval_choice("alice", 3600.0, T0)
    choice = await restored.interval_choice("alice")
    assert choice is not None and choice.seconds == 3600.0
