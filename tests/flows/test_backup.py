"""`crm-gateway backup` and `restore` as an operator runs them: real SQLite stores in a temp
folder, the real CLI, a real gateway taking writes while the backup is made, and backup files
that were altered, cut short, reordered, given another header or made under another key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest

from gateway.cli.main import main
from gateway.clock import FakeClock
from gateway.config.signin import Limits
from gateway.crypto import Sealer, new_key_line, parse_keys
from gateway.factors import recovery
from gateway.factors.protocol import Answer
from gateway.factors.totp import TotpFactor
from gateway.model import AuditEvent
from gateway.signin.regulation import Regulator
from gateway.stores.memory import MemorySharedStore
from gateway.stores.protocols import AuditQuery, Authenticator, Device, LedgerRow
from gateway.stores.sqlite import SqliteDurableStore
from tests.conftest import Served
from tests.process import run_command_async
from tests.signin_kit import DEMO_POLICY, Browsers, Start, enrolled

Dump = dict[str, list[tuple[Any, ...]]]  # SQLite's values, as tests/postgres_server.sql gives
T0 = 1_800_000_000.0


@dataclass
class Site:
    """A gateway.yaml and the SQLite store it names."""

    config: Path
    store: Path


def key_file(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / f"{name}.keys"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def site(tmp_path: Path, name: str, keys: Path | None, store: Path | None = None) -> Site:
    store = store or tmp_path / name / "gateway.db"
    secrets = f"secrets:\n  seal_keys: {{file: {keys}}}\n" if keys else ""
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:1'}\n"
        f"state:\n  durable: {{type: sqlite, path: {store}}}\n{secrets}"
    )
    return Site(config, store)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real command line, in this process."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def dump(path: Path) -> Dump:
    """Every row of every table, in rowid order: what "identical" is checked against."""
    with closing(sqlite3.connect(path)) as conn:
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        return {
            name: conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()
            for (name,) in names.fetchall()
        }


def book(store: SqliteDurableStore, ring_text: str, clock: FakeClock) -> TotpFactor:
    regulator = Regulator(MemorySharedStore(clock), clock, Limits())
    return TotpFactor(store, regulator, Sealer(parse_keys(ring_text)), clock)


async def fill(path: Path, ring_text: str) -> tuple[str, list[str]]:
    """A store as a gateway in use leaves it: (alice's TOTP secret, her recovery codes)."""
    clock = FakeClock(T0)
    store = SqliteDurableStore(str(path))
    await store.open()
    try:
        secret = pyotp.random_base32()
        await book(store, ring_text, clock).add("alice", secret, "Phone")
        codes = recovery.new_codes()
        await store.replace_recovery_codes("alice", recovery.digests("alice", codes), T0)
        assert await store.use_recovery_code("alice", recovery.digests("alice", codes)[0], T0)
        await store.add_token("tok_1", "crm-sync", b"\x01" * 32, "nightly sync", T0)
        await store.add_token("tok_2", "crm-sync", b"\x02" * 32, "old laptop", T0)
        await store.revoke_token("tok_2", T0 + 1)
        await store.save_device(Device("dev1", "alice", "Firefox on Linux", T0, T0, T0 + 86400))
        await store.revoke_sessions("bob", T0)
        await store.record_message(
            LedgerRow(T0, "alice", "staff", "sms", "outbox", "sent", 1, "0.07", "EUR")
        )
        await store.request_action("unlock", "bob", T0)
        await store.set_factor_choice("alice", "totp")
        await store.note_network("alice", "203.0.113.0/24", T0)
        await store.add_audit_events(
            [
                AuditEvent(T0 + i, "challenge.passed", "ok", user="alice", ip="203.0.113.7")
                for i in range(200)
            ]
        )
    finally:
        await store.close()
    return secret, codes


async def signs_in(path: Path, ring_text: str, secret: str, codes: list[str]) -> list[str]:
    """The restored store at work: alice's TOTP opens and checks, codes count once; the names
    of its admin.backup_* events."""
    clock = FakeClock(T0 + 3600)
    store = SqliteDurableStore(str(path))
    await store.open()
    try:
        assert [a.name for a in await store.all_authenticators()] == ["Phone"]
        code = pyotp.TOTP(secret).at(clock.now())
        assert (
            await book(store, ring_text, clock).check(Answer("alice", code, "203.0.113.7", ""))
        ).ok
        digests = recovery.digests("alice", codes)
        assert not await store.use_recovery_code("alice", digests[0], clock.now())  # used before
        assert await store.use_recovery_code("alice", digests[1], clock.now())
        assert [(t[0], t[4] is None) for t in await store.tokens()] == [
            ("tok_1", True),
            ("tok_2", False),
        ]
        found = await store.audit_events(AuditQuery(names=("admin.backup_*",)))
        return [event.name for _, event in found]
    finally:
        await store.close()


async def admin_events(path: Path, name: str) -> list[AuditEvent]:
    store = SqliteDurableStore(str(path))
    await store.open()
    try:
        return [event for _, event in await store.audit_events(AuditQuery(names=(name,)))]
    finally:
        await store.close()


def test_a_backup_restores_to_an_identical_store_that_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = key_file(tmp_path, "seal", new_key_line("k1"))
    live, fresh = site(tmp_path, "live", keys), site(tmp_path, "fresh", keys)
    secret, codes = asyncio.run(fill(live.store, keys.read_text()))
    before = dump(live.store)
    file = tmp_path / "gateway.backup"

    status, out, err = cli(capsys, "backup", str(file), "-c", str(live.config), "--json")
    assert status == 0, err
    made = json.loads(out)
    assert made["ok"] is True
    assert made["tables"] == {name: len(rows) for name, rows in before.items()}
    assert made["key_id"] == "k1"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    sealed = file.read_bytes()
    assert b"challenge.passed" not in sealed  # compressed and encrypted: no row reads through
    assert b"nightly sync" not in sealed
    [created] = asyncio.run(admin_events(live.store, "admin.backup_created"))
    assert dict(created.details)["file"] == str(file)
    assert dict(created.details)["rows"] == made["rows"]
    assert list(tmp_path.joinpath("live").iterdir()) == [live.store]  # no temp copy left

    status, out, err = cli(capsys, "restore", str(file), "-c", str(fresh.config), "--json")
    assert status == 0, err
    restored = json.loads(out)
    assert (restored["digest"], restored["tables"]) == (made["digest"], made["tables"])
    assert stat.S_IMODE(fresh.store.stat().st_mode) == 0o600

    # Identical, row for row. The backup's own event came after its snapshot: not in it. The
    # restore's event is the one row the restored store has on top.
    after = dump(fresh.store)
    events, sequence = after.pop("audit_events"), after.pop("sqlite_sequence")
    assert events[:-1] == before.pop("audit_events")
    assert events[-1][2:4] == ("admin.backup_restored", "ok")
    assert dict(sequence) == dict(before.pop("sqlite_sequence")) | {"audit_events": len(events)}
    assert after == before
    names = asyncio.run(signs_in(fresh.store, keys.read_text(), secret, codes))
    assert names == ["admin.backup_restored"]

    # Once more, with the summaries people read: both need --force now (file, store exist).
    status, _, err = cli(capsys, "restore", str(file), "-c", str(fresh.config))
    assert status == 1, err
    status, _, err = cli(capsys, "backup", str(file), "-c", str(live.config))
    assert status == 1, err
    status, out, _ = cli(capsys, "backup", str(file), "-c", str(live.config), "--force")
    assert status == 0
    assert out.startswith(f"backup written: {file} (")
    assert "not included: sessions" in out
    status, out, _ = cli(capsys, "restore", str(file), "-c", str(fresh.config), "--force")
    assert status == 0
    assert out.startswith(f"restored {file} into {fresh.store}: digest verified")


# -- under load ------------------------------------------------------------------------------

LOAD_POLICY = DEMO_POLICY.replace(
    "paths:\n", 'paths:\n  - {path: "/private/**", allow: [user:bob]}\n'
)


def denied_in(store: Path) -> int:
    with closing(sqlite3.connect(store)) as conn:
        query = "SELECT COUNT(*) FROM audit_events WHERE name = 'path.denied'"
        return int(conn.execute(query).fetchone()[0])


async def test_a_backup_taken_under_load_restores_to_the_state_at_its_snapshot(
    crm: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    gw = await start(crm.url, policy=LOAD_POLICY)
    await enrolled(browsers(gw))
    keys = tmp_path / "gw0" / "seal.keys"
    live = site(tmp_path, "live", keys, store=tmp_path / "gw0" / "gateway.db")
    fresh = site(tmp_path, "fresh", keys)
    file = tmp_path / "under-load.backup"
    writer = SqliteDurableStore(str(live.store))  # a second writer besides the gateway
    await writer.open()
    stop = asyncio.Event()
    added, asked = [0], [0]  # tokens written, pages asked for

    async def add_tokens_and_messages() -> None:
        for i in range(20_000):  # bounded; ends at `stop`, long before
            if stop.is_set():
                return
            digest = hashlib.sha256(str(i).encode()).digest()
            await writer.add_token(f"tok_{i:05}", "loadbot", digest, "", float(i))
            added[0] += 1
            await writer.record_message(
                LedgerRow(float(i), "loadbot", "bots", "sms", "outbox", "sent", 1, "0.07", "EUR")
            )

    async def ask_for_denied_pages(http: aiohttp.ClientSession) -> None:
        for i in range(20_000):  # each one an audit event (path.denied), stored in batches
            if stop.is_set():
                return
            async with http.get(f"{gw.url}/private/{i}", allow_redirects=False) as r:
                await r.read()
            asked[0] += 1
            # Paced like real clients: a client that never waits shares this process's event
            # loop with the gateway and starves its store thread of the GIL (row by row).
            await asyncio.sleep(0.005)

    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        load = [asyncio.create_task(add_tokens_and_messages())]
        load += [asyncio.create_task(ask_for_denied_pages(http)) for _ in range(3)]
        try:
            # Under way: tokens written, and audit events from the gateway in the store.
            while added[0] < 50 or denied_in(live.store) < 50:
                if all(task.done() for task in load):
                    break
                await asyncio.sleep(0.01)
            added_before = added[0]
            status, out, err = await run_command_async(
                "backup", str(file), "-c", str(live.config), "--json"
            )
            added_during, asked_during = added[0], asked[0]
            while added[0] < added_during + 20 or asked[0] < asked_during + 20:
                if all(task.done() for task in load):
                    break
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await asyncio.gather(*load)
    await writer.close()
    for _ in range(100):  # the gateway stores audit events every 0.5 s
        if denied_in(live.store) == asked[0]:
            break
        await asyncio.sleep(0.05)
    assert status == 0, err
    made = json.loads(out)
    assert added_during > added_before  # the store took writes while the backup ran

    status, out, err = await run_command_async(
        "restore", str(file), "-c", str(fresh.config), "--json"
    )
    assert status == 0, err
    restored = json.loads(out)
    assert (restored["digest"], restored["tables"]) == (made["digest"], made["tables"])

    snap, now = dump(fresh.store), dump(live.store)
    # Whole transactions, and every one before the snapshot: tokens 0..n-1, each with its
    # version bump, and the message written after each token.
    tokens = snap["api_tokens"]
    assert [row[0] for row in tokens] == [f"tok_{i:05}" for i in range(len(tokens))]
    assert added_before <= len(tokens) <= added_during + 1
    meta: dict[str, str] = dict(snap["meta"])
    assert int(meta["tokens_version"]) == len(tokens)
    times = [row[0] for row in snap["message_ledger"]]
    assert times == [float(i) for i in range(len(times))]
    assert len(times) in (len(tokens) - 1, len(tokens))
    # The live store went on; up to the snapshot it is the restored store, row for row.
    assert len(now["api_tokens"]) > len(tokens)
    assert tokens == [row for row in now["api_tokens"] if float(row[4]) < len(tokens)]
    assert snap["message_ledger"] == now["message_ledger"][: len(times)]
    *events, restore_event = snap["audit_events"]
    last = int(events[-1][0])
    assert [row[0] for row in events] == list(range(1, last + 1))
    assert events == [row for row in now["audit_events"] if int(row[0]) <= last]
    assert restore_event[2] == "admin.backup_restored"
    assert sum(row[2] == "path.denied" for row in events) > 0
    later = [row[2] for row in now["audit_events"] if int(row[0]) > last]
    assert "admin.backup_created" in later  # written after its snapshot
    assert "path.denied" in later
    for table in ("authenticators", "recovery_codes", "devices", "user_networks"):
        assert snap[table] == now[table], table
    assert len(snap["authenticators"]) == 1  # alice's, enrolled through the gateway


# -- refusals: altered files, other keys, data in the way ------------------------------------


@dataclass
class Made:
    keys: Path
    live: Site
    first: Path  # a backup of several chunks
    second: Path  # another backup of the same store, same key


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    tmp_path = tmp_path_factory.mktemp("made")
    keys = key_file(tmp_path, "seal", new_key_line("k1"))
    live = site(tmp_path, "live", keys)
    asyncio.run(fill(live.store, keys.read_text()))

    async def add_bulk() -> None:  # sealed secrets look random: ~4 MiB that do not compress
        store = SqliteDurableStore(str(live.store))
        await store.open()
        for i in range(56):
            row = Authenticator(f"a{i}", f"user{i}", "totp", "Phone", os.urandom(65536), "k1", T0)
            await store.add_authenticator(row)
        await store.close()

    asyncio.run(add_bulk())
    first, second = tmp_path / "first.backup", tmp_path / "second.backup"
    for file in (first, second):
        assert main(["backup", str(file), "-c", str(live.config)]) == 0
    return Made(keys, live, first, second)


def sections(file: Path) -> tuple[bytes, bytes, list[bytes]]:
    """(magic line, header line, [length-prefixed chunk, …])"""
    data = file.read_bytes()
    magic = data.index(b"\n") + 1
    header = data.index(b"\n", magic) + 1
    chunks, at = [], header
    while at < len(data):
        end = at + 4 + int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at:end])
        at = end
    return data[:magic], data[magic:header], chunks


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def with_digest_changed(magic: bytes, header: bytes, chunks: list[bytes], other: Path) -> bytes:
    at = header.index(b'"digest":"sha256:') + 20
    return magic + flipped(header, at) + b"".join(chunks)


def with_a_chunk_changed(magic: bytes, header: bytes, chunks: list[bytes], other: Path) -> bytes:
    return magic + header + chunks[0] + flipped(chunks[1], 5000) + b"".join(chunks[2:])


def with_chunks_swapped(magic: bytes, header: bytes, chunks: list[bytes], other: Path) -> bytes:
    return magic + header + b"".join([chunks[0], chunks[2], chunks[1], *chunks[3:]])


def without_last_chunk(magic: bytes, header: bytes, chunks: list[bytes], other: Path) -> bytes:
    return magic + header + b"".join(chunks[:-1])


def cut_mid_chunk(magic: bytes, header: bytes, chunks: list[bytes], other: Path) -> bytes:
    return (magic + header + b"".join(chunks))[:-100]


def with_a_chunk_added(magic: bytes, header: bytes, chunks: list[bytes], other: Path) -> bytes:
    return magic + header + b"".join([*chunks, chunks[1]])


def with_another_header(magic: bytes, header: bytes, chunks: list[bytes], other: Path) -> bytes:
    _, other_header, _ = sections(other)  # same store, same key: only the salt differs
    return magic + other_header + b"".join(chunks)


def with_header_garbled(magic: bytes, header: bytes, chunks: list[bytes], other: Path) -> bytes:
    return magic + header.replace(b'"format":1', b'"format":"1"') + b"".join(chunks)


Attack = Callable[[bytes, bytes, list[bytes], Path], bytes]


@pytest.mark.parametrize(
    ("attack", "says", "reason"),
    [
        (with_digest_changed, "does not open with seal key 'k1'", "backup_broken"),
        (with_another_header, "does not open with seal key 'k1'", "backup_broken"),
        (with_a_chunk_changed, "was altered at chunk 1", "backup_broken"),
        (with_chunks_swapped, "was altered at chunk 1", "backup_broken"),
        (with_a_chunk_added, "was altered at chunk 3", "backup_broken"),
        (without_last_chunk, "is truncated: it ends after chunk 2", "backup_broken"),
        (cut_mid_chunk, "is truncated: chunk 3 is cut short", "backup_broken"),
        (with_header_garbled, "the header is unreadable", "not_a_backup"),
    ],
)
def test_an_altered_backup_is_refused_and_the_store_left_alone(
    made: Made,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    attack: Attack,
    says: str,
    reason: str,
) -> None:
    magic, header, chunks = sections(made.first)
    assert len(chunks) == 4  # the attacks below need a middle and a last chunk
    file = tmp_path / "altered.backup"
    file.write_bytes(attack(magic, header, chunks, made.second))
    target = site(tmp_path, "target", made.keys)
    asyncio.run(fill(target.store, made.keys.read_text()))
    before = dump(target.store)

    status, out, err = cli(capsys, "restore", str(file), "-c", str(target.config), "--check")
    assert (status, out) == (1, "")
    assert says in err
    status, out, err = cli(
        capsys, "restore", str(file), "-c", str(target.config), "--force", "--json"
    )
    assert status == 1
    assert says in err
    assert json.loads(out) == {
        "ok": False,
        "reason": reason,
        "error": err.splitlines()[-1],  # after the config's warning (no login section)
    }

    after = dump(target.store)  # untouched, but for the record of the refusal
    events = after.pop("audit_events")
    assert events[:-1] == before.pop("audit_events")
    assert events[-1][2:4] == ("admin.backup_restored", "refused")
    after.pop("sqlite_sequence"), before.pop("sqlite_sequence")
    assert after == before
    assert list(target.store.parent.iterdir()) == [target.store]  # no plaintext left behind


def test_a_backup_opens_only_with_its_own_key_kept_in_the_ring(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same_id = site(tmp_path, "same-id", key_file(tmp_path, "same-id", new_key_line("k1")))
    status, _, err = cli(capsys, "restore", str(made.first), "-c", str(same_id.config))
    assert status == 1
    assert "does not open with seal key 'k1'" in err
    assert not same_id.store.exists()

    rotated = key_file(tmp_path, "rotated", new_key_line("k2"))  # k1 dropped from the ring
    other = site(tmp_path, "rotated", rotated)
    status, out, err = cli(capsys, "restore", str(made.first), "-c", str(other.config), "--json")
    assert status == 1
    assert (
        "encrypted with seal key 'k1', which secrets.seal_keys does not hold (it holds k2)" in err
    )
    assert json.loads(out)["reason"] == "key_missing"
    assert not other.store.exists()

    # After a rotation that keeps the old key (new one first), old backups still restore.
    kept = key_file(tmp_path, "kept", new_key_line("k2"), made.keys.read_text().strip())
    status, out, err = cli(
        capsys, "restore", str(made.first), "-c", str(site(tmp_path, "kept", kept).config)
    )
    assert status == 0, err


def test_restore_replaces_a_store_with_data_only_when_forced(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = site(tmp_path, "target", made.keys)
    asyncio.run(fill(target.store, made.keys.read_text()))
    before = dump(target.store)
    status, _, err = cli(capsys, "restore", str(made.first), "-c", str(target.config))
    assert status == 1
    assert f"{target.store} holds data (admin_requests 1, api_tokens 2, audit_events 200," in err
    assert "stop the gateway, then restore with --force" in err
    after = dump(target.store)
    assert after["authenticators"] == before["authenticators"]
    assert [
        e.outcome for e in asyncio.run(admin_events(target.store, "admin.backup_restored"))
    ] == ["refused"]

    status, out, err = cli(
        capsys, "restore", str(made.first), "-c", str(target.config), "--force", "--json"
    )
    assert status == 0, err
    assert json.loads(out)["replaced"]["authenticators"] == 1
    assert len(dump(target.store)["authenticators"]) == 57
    events = asyncio.run(admin_events(target.store, "admin.backup_restored"))
    assert [e.outcome for e in events] == ["ok"]  # the refusal went with the replaced store
    assert dict(events[0].details)["rows"] == json.loads(out)["rows"]


async def test_a_store_still_open_reads_the_restored_state(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against advice, the gateway still runs: its open connection must see the restored
    store (a rename would leave it reading and writing the replaced file)."""
    target = site(tmp_path, "target", made.keys)
    await fill(target.store, made.keys.read_text())
    running = SqliteDurableStore(str(target.store))
    await running.open()
    try:
        assert len(await running.all_authenticators()) == 1
        args = ["restore", str(made.first), "-c", str(target.config), "--force"]
        assert await asyncio.to_thread(main, args) == 0
        out, _ = capsys.readouterr()
        assert "a gateway may have the store open: restart it" in out
        assert len(await running.all_authenticators()) == 57
        await running.add_token("tok_after", "crm-sync", b"\x03" * 32, "", T0 + 7200)
    finally:
        await running.close()
    assert [row[0] for row in dump(target.store)["api_tokens"]] == ["tok_1", "tok_2", "tok_after"]


def test_backup_does_not_replace_a_file_unless_forced(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "kept.backup"
    file.write_bytes(b"yesterday's backup")
    status, out, err = cli(capsys, "backup", str(file), "-c", str(made.live.config), "--json")
    assert status == 1
    assert f"{file} exists: --force replaces it" in err
    assert json.loads(out)["reason"] == "file_exists"
    assert file.read_bytes() == b"yesterday's backup"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.backup"]  # no temp file left


def test_without_seal_keys_backup_and_restore_are_configuration_errors(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyless = site(tmp_path, "keyless", None, store=made.live.store)
    for command in ("backup", "restore"):
        file = tmp_path / "new.backup" if command == "backup" else made.first
        status, out, err = cli(capsys, command, str(file), "-c", str(keyless.config), "--json")
        assert status == 2
        assert "add secrets.seal_keys" in err
        assert "crm-gateway keys generate" in err
        assert json.loads(out)["reason"] == "no_seal_keys"
    assert not (tmp_path / "new.backup").exists()


def test_restore_check_shows_a_backup_and_touches_no_store(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = site(tmp_path, "elsewhere", made.keys)
    status, out, err = cli(
        capsys, "restore", "--check", str(made.first), "-c", str(elsewhere.config)
    )
    assert status == 0, err
    assert out.startswith(f"{made.first}: a valid backup, digest verified (nothing restored)")
    assert "authenticators 57" in out
    status, out, _ = cli(
        capsys, "restore", "--check", str(made.first), "-c", str(elsewhere.config), "--json"
    )
    shown = json.loads(out)
    assert (status, shown["restored"], shown["tables"]["audit_events"]) == (0, False, 200)
    assert not elsewhere.store.parent.exists()


def test_a_store_from_a_newer_gateway_is_not_restored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = key_file(tmp_path, "seal", new_key_line("k1"))
    live, fresh = site(tmp_path, "live", keys), site(tmp_path, "fresh", keys)
    asyncio.run(fill(live.store, keys.read_text()))
    with closing(sqlite3.connect(live.store)) as conn, conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    file = tmp_path / "newer.backup"
    status, out, err = cli(capsys, "backup", str(file), "-c", str(live.config), "--json")
    assert (status, json.loads(out)["schema"]) == (0, 3), err
    status, _, err = cli(capsys, "restore", str(file), "-c", str(fresh.config))
    assert status == 1
    assert "holds store schema 3; this crm-gateway knows up to 2" in err
    assert not fresh.store.exists()


def test_backup_of_a_missing_store_says_so_and_makes_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nothing = site(tmp_path, "nothing", key_file(tmp_path, "seal", new_key_line("k1")))
    status, _, err = cli(capsys, "backup", str(tmp_path / "x.backup"), "-c", str(nothing.config))
    assert status == 1
    assert f"no store at {nothing.store} (state.durable.path): nothing to back up" in err
    assert not nothing.store.parent.exists()
    assert not (tmp_path / "x.backup").exists()
