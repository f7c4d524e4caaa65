"""`crm-gateway keys generate|rotate` as an operator runs them: real keys from `keys generate`,
real TOTP secrets sealed in a real SQLite store, codes checked by the real factor book, and a
real gateway that, after the rotation, holds only the new key and still accepts codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyotp
import pytest

from gateway.cli import keys as keycli
from gateway.cli.main import main
from gateway.clock import FakeClock
from gateway.config.signin import Limits
from gateway.crypto import Sealer, parse_keys
from gateway.factors.protocol import Answer
from gateway.factors.totp import TotpFactor
from gateway.signin.regulation import Regulator
from gateway.stores.memory import MemorySharedStore
from gateway.stores.protocols import SEAL_RING_NOTE, AuditQuery, Authenticator
from gateway.stores.sqlite import SqliteDurableStore
from tests.conftest import Served
from tests.signin_kit import DEMO_LOGIN, Browsers, SignInGateway, enrolled, start_signin_gateway

T0 = 1_800_000_000.0


def generated(capsys: pytest.CaptureFixture[str], key_id: str) -> str:
    """A key line as an operator makes one: `crm-gateway keys generate --id ID`."""
    capsys.readouterr()  # what came before (a gateway's audit lines) is not the key
    assert main(["keys", "generate", "--id", key_id]) == 0
    return capsys.readouterr().out.strip()


def cli_config(folder: Path, *, login: bool = False, seal_keys: bool = True) -> Path:
    """A config naming the store and the seal keys file in `folder` (as the gateway's does)."""
    text = (
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:1'}\n"
        f"state:\n  durable: {{type: sqlite, path: {folder}/gateway.db}}\n"
    )
    if login:
        text += f"{DEMO_LOGIN}secrets:\n  session_keys: {{file: {folder}/session.keys}}\n"
        text += f"  seal_keys: {{file: {folder}/seal.keys}}\n"
    elif seal_keys:
        text += f"secrets:\n  seal_keys: {{file: {folder}/seal.keys}}\n"
    path = folder / "admin.yaml"
    path.write_text(text)
    return path


async def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real CLI (it runs its own event loop, so in a thread); (exit status, out, err)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def book(store: SqliteDurableStore, ring_text: str, clock: FakeClock) -> TotpFactor:
    regulator = Regulator(MemorySharedStore(clock), clock, Limits())
    return TotpFactor(store, regulator, Sealer(parse_keys(ring_text)), clock)


async def enrol(factors: TotpFactor, *users: str) -> dict[str, str]:
    """One TOTP authenticator per name (a name twice: two authenticators); {id: secret}."""
    secrets = {}
    for user in users:
        secret = pyotp.random_base32()
        row = await factors.add(user, secret, "Phone")
        secrets[row.id] = secret
    return secrets


def rows_by_id(rows: list[Authenticator]) -> dict[str, Authenticator]:
    return {row.id: row for row in rows}


async def test_rotate_reseals_every_secret_under_the_new_key_and_codes_still_verify(
    capsys: pytest.CaptureFixture[str], store: SqliteDurableStore, tmp_path: Path
) -> None:
    old, new = generated(capsys, "kA"), generated(capsys, "kB")
    clock = FakeClock(T0)
    secrets = await enrol(book(store, old, clock), "alice", "bob", "bob")
    (tmp_path / "seal.keys").write_text(f"{new}\n{old}\n")

    code, out, err = await run(capsys, "keys", "rotate", "-c", str(cli_config(tmp_path)))

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "ID", "BEFORE", "AFTER", "STATE"]
    assert lines[1].split() == ["kB", "0", "3", "current"]
    assert lines[2].split() == ["kA", "3", "0", "no", "longer", "used"]
    assert "re-sealed 3, skipped 0" in out
    assert "no stored value uses kA any more" in out
    rows = await store.all_authenticators()
    assert {(row.key_id, row.sealed[:3]) for row in rows} == {("kB", b"kB\x00")}
    # The ring without the old key opens every secret, and each is the one enrolled.
    only_new = book(store, new, clock)
    for row in rows:
        totp_code = pyotp.TOTP(secrets[row.id]).at(clock.now())
        verdict = await only_new.check(Answer(row.user, totp_code, "192.0.2.1", ""))
        assert (row.user, verdict.ok) == (row.user, True)
        clock.advance(30)  # the next code, not a replay


async def test_rotate_json_counts_per_key_and_names_the_unused_ones(
    capsys: pytest.CaptureFixture[str], store: SqliteDurableStore, tmp_path: Path
) -> None:
    older, old, new = (generated(capsys, k) for k in ("k1", "k2", "k3"))
    await enrol(book(store, older, FakeClock(T0)), "alice")
    await enrol(book(store, old, FakeClock(T0)), "bob", "carol")
    (tmp_path / "seal.keys").write_text(f"{new}\n{old}\n{older}\n")

    code, out, _ = await run(capsys, "keys", "rotate", "--json", "-c", str(cli_config(tmp_path)))

    report = json.loads(out)
    assert code == 0
    assert report["current"] == "k3"
    assert report["keys"] == [
        {"id": "k3", "before": 0, "after": 3, "state": "current"},
        {"id": "k2", "before": 2, "after": 0, "state": "no longer used"},
        {"id": "k1", "before": 1, "after": 0, "state": "no longer used"},
    ]
    assert (report["resealed"], report["skipped"], report["failed"]) == (3, 0, [])
    assert report["unused"] == ["k2", "k1"]
    assert report["dry_run"] is False


async def test_dry_run_shows_what_would_change_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], store: SqliteDurableStore, tmp_path: Path
) -> None:
    old, new = generated(capsys, "kA"), generated(capsys, "kB")
    await enrol(book(store, old, FakeClock(T0)), "alice", "bob")
    before = await store.all_authenticators()
    (tmp_path / "seal.keys").write_text(f"{new}\n{old}\n")

    code, out, _ = await run(capsys, "keys", "rotate", "--dry-run", "-c", str(cli_config(tmp_path)))

    assert code == 0
    assert out.splitlines()[0] == "dry run: nothing written"
    assert "would re-seal 2" in out
    assert "no stored value uses kA any more" in out
    assert await store.all_authenticators() == before
    assert await store.audit_events(AuditQuery(names=("admin.*",))) == []


async def test_a_value_no_key_opens_is_named_and_left_untouched(
    capsys: pytest.CaptureFixture[str], store: SqliteDurableStore, tmp_path: Path
) -> None:
    old, new, lost = (generated(capsys, k) for k in ("kA", "kB", "kLost"))
    fine = await enrol(book(store, old, FakeClock(T0)), "alice")
    orphaned = await enrol(book(store, lost, FakeClock(T0)), "bob")
    before = rows_by_id(await store.all_authenticators())
    (tmp_path / "seal.keys").write_text(f"{new}\n{old}\n")

    code, out, err = await run(capsys, "keys", "rotate", "-c", str(cli_config(tmp_path)))

    [bob_id] = orphaned
    assert code == 1
    assert f"authenticator {bob_id} of bob (sealed under kLost)" in err
    assert "left as it is" in err
    for secret in (*fine.values(), *orphaned.values()):
        assert secret not in out + err
    after = rows_by_id(await store.all_authenticators())
    assert after[bob_id] == before[bob_id]  # not a byte changed
    [alice_id] = fine
    assert after[alice_id].key_id == "kB"
    assert "kLost" in out and "not in the ring" in out
    [(_, event)] = await store.audit_events(AuditQuery(names=("admin.keys_rotated",)))
    assert event.outcome == "failed"
    assert dict(event.details)["failed"] == 1


async def test_an_authenticator_removed_or_replaced_during_rotation_is_not_brought_back(
    capsys: pytest.CaptureFixture[str], store: SqliteDurableStore
) -> None:
    old, new = generated(capsys, "kA"), generated(capsys, "kB")
    clock = FakeClock(T0)
    secrets = await enrol(book(store, old, clock), "alice", "bob", "carol")
    read = await store.all_authenticators()  # what rotate read, before the gateway acted:
    alice, bob, _ = read
    await store.remove_authenticator("alice", alice.id)  # alice removed hers,
    await store.reseal_authenticator(bob.id, b"kA\x00other", "kA", expected=bob.sealed)

    rotation = await keycli.rotate(store, Sealer(parse_keys(f"{new}\n{old}")), read, dry_run=False)

    assert (rotation.resealed, rotation.skipped, rotation.unopened) == (1, 2, [])
    rows = rows_by_id(await store.all_authenticators())
    assert alice.id not in rows
    # The store's own compare and swap: a removed row is not written, and not recreated.
    assert not await store.reseal_authenticator(alice.id, b"kB\x00x", "kB", expected=alice.sealed)
    assert alice.id not in rows_by_id(await store.all_authenticators())
    assert rows[bob.id].sealed == b"kA\x00other"
    assert rotation.after == {"kB": 1, "kA": 1}  # what the store holds, read again
    assert rotation.unused == []
    carol = next(r for r in rows.values() if r.user == "carol")
    verdict = await book(store, new, clock).check(
        Answer("carol", pyotp.TOTP(secrets[carol.id]).at(clock.now()), "192.0.2.1", "")
    )
    assert verdict.ok


async def test_rotating_twice_changes_nothing_the_second_time(
    capsys: pytest.CaptureFixture[str], store: SqliteDurableStore, tmp_path: Path
) -> None:
    old, new = generated(capsys, "kA"), generated(capsys, "kB")
    await enrol(book(store, old, FakeClock(T0)), "alice", "bob")
    (tmp_path / "seal.keys").write_text(f"{new}\n{old}\n")
    config = str(cli_config(tmp_path))
    assert (await run(capsys, "keys", "rotate", "-c", config))[0] == 0
    first = await store.all_authenticators()

    code, out, _ = await run(capsys, "keys", "rotate", "--json", "-c", config)

    assert code == 0
    assert json.loads(out)["resealed"] == 0
    assert await store.all_authenticators() == first


async def test_rotation_is_recorded_in_the_audit_trail(
    capsys: pytest.CaptureFixture[str], store: SqliteDurableStore, tmp_path: Path
) -> None:
    old, new = generated(capsys, "kA"), generated(capsys, "kB")
    await enrol(book(store, old, FakeClock(T0)), "alice")
    (tmp_path / "seal.keys").write_text(f"{new}\n{old}\n")
    config = str(cli_config(tmp_path))
    assert (await run(capsys, "keys", "rotate", "-c", config))[0] == 0

    code, out, _ = await run(
        capsys, "audit", "search", "--event", "admin.keys_*", "--json", "-c", config
    )

    [line] = out.splitlines()
    event = json.loads(line)
    assert (code, event["event"], event["outcome"], event["method"]) == (
        0,
        "admin.keys_rotated",
        "ok",
        "CLI",
    )
    details = event["details"]
    assert {k: details[k] for k in ("resealed", "skipped", "failed", "current", "unused")} == {
        "resealed": 1,
        "skipped": 0,
        "failed": 0,
        "current": "kB",
        "unused": "kA",
    }
    assert details["by"]


async def test_rotate_without_seal_keys_exits_2_and_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = await run(
        capsys, "keys", "rotate", "-c", str(cli_config(tmp_path, seal_keys=False))
    )

    assert (code, out) == (2, "")
    assert "secrets.seal_keys is not configured" in err


def test_keys_generate_needs_no_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no gateway.yaml here

    assert main(["keys", "generate"]) == 0

    key_id = parse_keys(capsys.readouterr().out).current[0]
    assert key_id.startswith("k20") and len(key_id) == 9


async def stop(gw: SignInGateway) -> None:
    await gw.served.runner.cleanup()  # the sessions are kept in gateway.db.sessions


async def test_a_gateway_holding_only_the_new_key_accepts_codes_after_rotation(
    capsys: pytest.CaptureFixture[str], crm: Served, browsers: Browsers, tmp_path: Path
) -> None:
    folder = tmp_path / "gw"
    folder.mkdir()
    clock = FakeClock(T0)
    running = await start_signin_gateway(crm.url, folder, clock=clock)
    try:
        secret, _ = await enrolled(browsers(running))
    finally:
        await stop(running)
    old = (folder / "seal.keys").read_text().strip()
    new = generated(capsys, "k2")
    (folder / "seal.keys").write_text(f"{new}\n{old}\n")
    config = str(cli_config(folder, login=True))

    # Rotated while the gateway is stopped: its kept sessions still need the old key.
    code, out, err = await run(capsys, "keys", "rotate", "--json", "-c", config)
    assert code == 0, err
    report = json.loads(out)
    assert (code, report["resealed"], report["unused"]) == (0, 1, [])
    assert report["session_snapshot"]["key_id"] == "k1"
    assert report["keys"][1]["state"] == "still used by the kept sessions"

    running = await start_signin_gateway(crm.url, folder, clock=clock, reuse_keys=True)
    await stop(running)  # it read the kept sessions and kept them again, under k2
    code, out, _ = await run(capsys, "keys", "rotate", "--json", "-c", config)
    assert (code, json.loads(out)["unused"]) == (0, ["k1"])

    (folder / "seal.keys").write_text(f"{new}\n")  # the old key removed
    clock.advance(60)  # a fresh code, not the enrolment's
    running = await start_signin_gateway(crm.url, folder, clock=clock, reuse_keys=True)
    try:
        b = browsers(running)
        assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
        status, _, r = await b.answer(b.code(secret))
        assert (status, r.headers["Location"]) == (303, "/contacts")
        assert (await b.get("/contacts"))[0] == 200
    finally:
        await stop(running)


async def test_rotate_refuses_while_a_gateway_runs_without_the_new_key(
    capsys: pytest.CaptureFixture[str], crm: Served, browsers: Browsers, tmp_path: Path
) -> None:
    """Step 3 skipped: the running gateway holds only k1. Re-sealing under k2 would lock
    every user out of their codes, so rotate refuses and changes nothing."""
    folder = tmp_path / "gw"
    folder.mkdir()
    clock = FakeClock(T0)
    running = await start_signin_gateway(crm.url, folder, clock=clock)
    try:
        await enrolled(browsers(running))
        old = (folder / "seal.keys").read_text().strip()
        (folder / "seal.keys").write_text(f"{generated(capsys, 'k2')}\n{old}\n")
        config = str(cli_config(folder, login=True))
        before = await running.signin.durable.all_authenticators()
        code, _, err = await run(capsys, "keys", "rotate", "-c", config)
        assert code == 1
        assert "holding seal keys k1 and has not stopped" in err
        assert "Restart it with the new seal keys file first" in err
        assert await running.signin.durable.all_authenticators() == before
    finally:
        await stop(running)
    # Stopped (gracefully): nothing runs with the old ring, so rotate goes ahead.
    code, out, err = await run(capsys, "keys", "rotate", "--json", "-c", config)
    assert code == 0, err
    assert json.loads(out)["resealed"] == 1


async def test_force_rotates_when_the_gateway_that_held_the_old_key_is_gone(
    capsys: pytest.CaptureFixture[str], store: SqliteDurableStore, tmp_path: Path
) -> None:
    """A gateway killed (no graceful stop) leaves its note saying it runs: --force."""
    await store.set_note(SEAL_RING_NOTE, json.dumps({"ids": ["k1"], "started": T0, "stopped": 0}))
    ring = generated(capsys, "k1")
    factors = book(store, ring, FakeClock(T0))
    await enrol(factors, "alice")
    (tmp_path / "seal.keys").write_text(f"{generated(capsys, 'k2')}\n{ring}\n")
    config = str(cli_config(tmp_path))
    code, _, err = await run(capsys, "keys", "rotate", "-c", config)
    assert code == 1
    assert "--force only if it is not running" in err
    code, out, err = await run(capsys, "keys", "rotate", "--force", "--json", "-c", config)
    assert code == 0, err
    assert json.loads(out)["resealed"] == 1
