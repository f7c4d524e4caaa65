"""`crm-gateway store migrate`, `store copy` and `backup`/`restore` on PostgreSQL, as an operator
runs them: real SQLite files in a temp folder, databases of the test's own on the machine's
PostgreSQL (dropped after), the real command line, and stores read back through the registry
(a gateway's view): every record there, secrets opening under the same keys."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pyotp
import pytest

from gateway.cli.main import main
from gateway.clock import FakeClock
from gateway.config.model import StoreConfig
from gateway.config.signin import Limits
from gateway.crypto import Sealer, new_key_line, parse_keys
from gateway.factors import recovery
from gateway.factors.protocol import Answer
from gateway.factors.totp import TotpFactor
from gateway.model import AuditEvent
from gateway.signin.regulation import Regulator
from gateway.stores import AuditQuery, Device, DurableStore, LedgerRow, open_durable, open_shared
from tests.postgres_server import Databases, sql

T = TypeVar("T")
T0 = 1_800_000_000.0
ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, name: str, durable: str, keys: Path) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:1'}\n"
        f"state:\n  durable: {durable}\nsecrets:\n  seal_keys: {{file: {keys}}}\n"
    )
    return path


def sqlite_store(path: Path | str) -> str:
    return f"{{type: sqlite, path: {path}}}"


def postgres_store(url: str) -> str:
    return f"{{type: postgres, url: '{url}'}}"


def config_of(tmp_path: Path, name: str, settings: StoreConfig, keys: Path) -> Path:
    """`config` for a store already named by its settings."""
    durable = (
        sqlite_store(settings.path) if settings.type == "sqlite" else postgres_store(settings.url)
    )
    return config(tmp_path, name, durable, keys)


def copy_args(
    tmp_path: Path,
    source: StoreConfig,
    target: StoreConfig,
    keys: Path,
    target_keys: Path | None = None,
) -> tuple[str, ...]:
    """`store copy` from one gateway.yaml to another, both written in `tmp_path`."""
    source_yaml = config_of(tmp_path, "source", source, keys)
    target_yaml = config_of(tmp_path, "target", target, target_keys or keys)
    return ("store", "copy", "--from", str(source_yaml), "--to", str(target_yaml))


def sqlite_in(tmp_path: Path, folder: str) -> StoreConfig:
    return StoreConfig("sqlite", path=str(tmp_path / folder / "gateway.db"))


def without_events(records: dict[str, Any]) -> dict[str, Any]:
    """`everything` but the audit events, which a copy or a restore adds to."""
    return {k: v for k, v in records.items() if k != "events"}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)


async def opened(settings: StoreConfig) -> DurableStore:
    return await open_durable(settings, create=False)


async def factor(store: DurableStore, ring: str, clock: FakeClock) -> TotpFactor:
    shared = await open_shared(StoreConfig("memory"), clock)
    return TotpFactor(store, Regulator(shared, clock, Limits()), Sealer(parse_keys(ring)), clock)


async def fill(settings: StoreConfig, ring: str) -> tuple[str, list[str]]:
    """A store as a single host's gateway leaves it after a while: alice's TOTP secret and
    recovery codes, tokens, a device, revocations, the ledger, networks, requests, events."""
    clock = FakeClock(T0)
    store = await open_durable(settings, create=True)
    try:
        secret = pyotp.random_base32()
        await (await factor(store, ring, clock)).add("alice", secret, "Phone")
        codes = recovery.new_codes()
        digests = recovery.digests("alice", codes)
        await store.replace_recovery_codes("alice", digests, T0)
        assert await store.use_recovery_code("alice", digests[0], T0 + 0.5)
        await store.add_token("tok_1", "crm-sync", b"\x01" * 32, "nightly sync", T0 + 0.25)
        await store.add_token("tok_2", "crm-sync", b"\x02" * 32, "old laptop", T0)
        await store.revoke_token("tok_2", T0 + 1)
        await store.save_device(Device("dev1", "alice", "Firefox « ü »", T0, T0, T0 + 86400))
        await store.revoke_sessions("bob", T0 + 0.125)
        await store.record_message(
            LedgerRow(T0, "alice", "staff", "sms", "outbox", "sent", 1, "0.0725", "EUR")
        )
        await store.request_action("unlock", "bob", T0)
        await store.set_factor_choice("alice", "totp")
        await store.set_interval_choice("alice", 3600.0, T0 + 0.75)
        await store.note_network("alice", "203.0.113.0/24", T0)
        await store.set_note("seal_ring", '{"ids": ["k1"]}')
        await store.add_audit_events(
            [AuditEvent(T0 + i, "challenge.passed", "ok", user="alice") for i in range(120)]
        )
        await store.prune_audit(T0 + 20)  # ids before 21 are gone, and never handed out again
    finally:
        await store.close()
    return secret, codes


async def everything(settings: StoreConfig) -> dict[str, Any]:
    """What a gateway reads from the store, through the Protocol (each value as the store
    gives it: a test compares them whole and reads into the events)."""
    store = await opened(settings)
    try:
        return {
            "tokens": await store.tokens(),
            "active": await store.active_tokens(),
            "authenticators": await store.all_authenticators(),
            "codes": await store.recovery_codes_left("alice"),
            "device": await store.device("dev1"),
            "revocations": await store.revocations(),
            "users": await store.known_users(),
            "ledger": await store.messages(0, float("inf")),
            "requests": await store.pending_requests(),
            "choice": await store.factor_choice("alice"),
            "interval": await store.interval_choice("alice"),
            "networks": await store.networks("alice"),
            "note": await store.note("seal_ring"),
            "events": await store.audit_events(AuditQuery(limit=10_000)),
        }
    finally:
        await store.close()


async def signs_in(settings: StoreConfig, ring: str, secret: str, codes: list[str]) -> int:
    """The copied store at work: alice's TOTP secret opens under the same keys and her code
    passes, a used code stays used, an unused one works once; the id a new event gets."""
    clock = FakeClock(T0 + 3600)
    store = await opened(settings)
    try:
        totp = await factor(store, ring, clock)
        code = pyotp.TOTP(secret).at(clock.now())
        assert (await totp.check(Answer("alice", code, "203.0.113.7", ""))).ok
        digests = recovery.digests("alice", codes)
        assert not await store.use_recovery_code("alice", digests[0], clock.now())
        assert await store.use_recovery_code("alice", digests[1], clock.now())
        await store.add_audit_events([AuditEvent(clock.now(), "test.after_copy", "ok")])
        [(new_id, _)] = await store.audit_events(AuditQuery(names=("test.after_copy",)))
        return new_id
    finally:
        await store.close()


@pytest.fixture
def ring(tmp_path: Path) -> tuple[Path, str]:
    text = new_key_line("k1")
    path = tmp_path / "seal.keys"
    path.write_text(text + "\n")
    return path, text


# -- store migrate -------------------------------------------------------------------------------


def test_migrate_makes_the_schema_in_an_empty_database_then_finds_it_up_to_date(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    postgres_databases: Databases,
    ring: tuple[Path, str],
) -> None:
    url = postgres_databases.create("migrate")
    gateway_yaml = config(tmp_path, "gateway", postgres_store(url), ring[0])

    made = cli(capsys, "store", "migrate", "-c", str(gateway_yaml))
    again = cli(capsys, "store", "migrate", "-c", str(gateway_yaml))

    assert made[:2] == (
        0,
        f"{url} (state.durable.url): schema 0 → 2\n  schema 1: created the tables of schema 1\n"
        "  schema 2: added interval_choice (the interval each user chose)\n",
    )
    assert again[:2] == (
        0,
        f"{url} (state.durable.url): schema 2, the newest this crm-gateway knows: up to date\n",
    )
    assert sql(url, "SELECT count(*) FROM audit_events")[0] == [(0,)]  # left empty for a copy


def test_migrate_refuses_a_schema_newer_than_it_knows(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    postgres_databases: Databases,
    ring: tuple[Path, str],
) -> None:
    url = postgres_databases.create("newer")
    gateway_yaml = config(tmp_path, "gateway", postgres_store(url), ring[0])
    cli(capsys, "store", "migrate", "-c", str(gateway_yaml))
    sql(url, "UPDATE meta SET value = '7' WHERE key = 'schema_version'")

    status, out, err = cli(capsys, "store", "migrate", "-c", str(gateway_yaml))

    assert (status, out) == (1, "")
    assert "the store has schema 7, newer than this crm-gateway knows (2)" in err


def test_migrate_on_sqlite_says_the_gateway_keeps_it_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ring: tuple[Path, str]
) -> None:
    store = tmp_path / "data" / "gateway.db"
    gateway_yaml = config(tmp_path, "gateway", sqlite_store(store), ring[0])

    missing = cli(capsys, "store", "migrate", "-c", str(gateway_yaml))
    assert missing[0] == 1
    assert f"no durable store at {store} (state.durable.path)" in missing[2]
    assert not store.exists()

    run(fill(StoreConfig("sqlite", path=str(store)), ring[1]))
    found = cli(capsys, "store", "migrate", "-c", str(gateway_yaml))

    assert found[:2] == (
        0,
        f"{store} (state.durable.path): schema 2; this kind of store is brought up to date by "
        "the gateway itself when it opens it (to schema 2): nothing to run\n",
    )


def test_a_gateway_does_not_start_on_a_schema_it_does_not_know(
    tmp_path: Path, postgres_databases: Databases, ring: tuple[Path, str]
) -> None:
    url = postgres_databases.create("start")
    run((lambda: _made(url))())
    sql(url, "UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    gateway_yaml = config(tmp_path, "gateway", postgres_store(url), ring[0])

    started = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(gateway_yaml)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert started.returncode == 1
    assert "could not start: StoreUnavailable" in started.stderr
    assert "the store has schema 7, newer than this crm-gateway knows (2)" in started.stderr


async def _made(url: str) -> None:
    await (await open_durable(StoreConfig("postgres", url=url), create=True)).close()


# -- store copy ----------------------------------------------------------------------------------


def test_copy_moves_every_record_from_sqlite_into_postgresql_sealed_under_the_same_keys(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    postgres_databases: Databases,
    ring: tuple[Path, str],
) -> None:
    old = sqlite_in(tmp_path, "old")
    url = postgres_databases.create("copy")
    new = StoreConfig("postgres", url=url)
    secret, codes = run(fill(old, ring[1]))
    before = run(everything(old))

    status, out, err = cli(capsys, *copy_args(tmp_path, old, new, ring[0]))

    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"copied {old.path} (state.durable.path) into {url} (state.durable.url)")
    assert lines[1] == (
        "  schema 2, 120 rows in 13 tables: every table's rows and digest verified in the target"
    )
    shown = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in lines[3:16]}
    assert shown["audit_events"] == 100
    assert shown["authenticators"] == 1
    assert shown["recovery_codes"] == 10
    assert lines[-1].startswith("  not copied: sessions, lockouts")
    after = run(everything(new))
    assert without_events(after) == without_events(before)
    assert after["events"][:-1] == before["events"]
    assert after["events"][-1][1].name == "admin.store_copied"
    last_copied = before["events"][-1][0]
    assert run(signs_in(new, ring[1], secret, codes)) > last_copied


def test_copy_refuses_a_target_that_holds_data_unless_forced(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    postgres_databases: Databases,
    ring: tuple[Path, str],
) -> None:
    old = sqlite_in(tmp_path, "old")
    url = postgres_databases.create("held")
    run(fill(old, ring[1]))
    run(fill(StoreConfig("postgres", url=url), new_key_line("k9")))  # someone else's users
    held = run(everything(StoreConfig("postgres", url=url)))
    args = copy_args(tmp_path, old, StoreConfig("postgres", url=url), ring[0])

    refused = cli(capsys, *args)
    still = run(everything(StoreConfig("postgres", url=url)))
    forced = cli(capsys, *args, "--force")

    assert refused[0] == 1
    assert f"{url} holds data (" in refused[2]
    assert "authenticators 1" in refused[2]
    assert "nothing copied; --force replaces it" in refused[2]
    assert still == held
    assert forced[0] == 0
    assert f"  replaced what {url} held: admin_requests 1, api_tokens 2," in forced[1]


def test_copy_refuses_a_target_whose_seal_keys_would_not_open_the_secrets(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    postgres_databases: Databases,
    ring: tuple[Path, str],
) -> None:
    old = sqlite_in(tmp_path, "old")
    url = postgres_databases.create("keys")
    run(fill(old, ring[1]))
    other_keys = tmp_path / "other.keys"
    other_keys.write_text(new_key_line("k2") + "\n")
    args = copy_args(tmp_path, old, StoreConfig("postgres", url=url), ring[0], other_keys)

    status, _, err = cli(capsys, *args)

    assert status == 2
    assert "does not hold the seal key k1 that sealed the authenticators" in err
    assert sql(url, "SELECT to_regclass('meta') IS NULL")[0] == [(True,)]


def test_copy_back_from_postgresql_into_a_new_sqlite_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    postgres_databases: Databases,
    ring: tuple[Path, str],
) -> None:
    url = postgres_databases.create("back")
    shared = StoreConfig("postgres", url=url)
    secret, codes = run(fill(shared, ring[1]))
    before = run(everything(shared))
    single = sqlite_in(tmp_path, "single")

    status, _, err = cli(capsys, *copy_args(tmp_path, shared, single, ring[0]))

    assert status == 0, err
    after = run(everything(single))
    assert without_events(after) == without_events(before)
    assert after["events"][:-1] == before["events"]
    run(signs_in(single, ring[1], secret, codes))


# -- backup and restore on PostgreSQL ----------------------------------------------------------


def test_a_postgresql_backup_restores_into_another_database_and_sqlite_backups_into_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    postgres_databases: Databases,
    ring: tuple[Path, str],
) -> None:
    live_url, fresh_url = postgres_databases.create("live"), postgres_databases.create("fresh")
    live, fresh = StoreConfig("postgres", url=live_url), StoreConfig("postgres", url=fresh_url)
    secret, codes = run(fill(live, ring[1]))
    before = run(everything(live))
    live_yaml = config(tmp_path, "live", postgres_store(live_url), ring[0])
    fresh_yaml = config(tmp_path, "fresh", postgres_store(fresh_url), ring[0])
    backup = tmp_path / "pg.backup"

    made = cli(capsys, "backup", "-c", str(live_yaml), str(backup))
    restored = cli(capsys, "restore", "-c", str(fresh_yaml), str(backup))

    assert made[0] == 0, made[2]
    assert f"snapshot of {live_url} at " in made[1]
    assert restored[0] == 0, restored[2]
    assert restored[1].startswith(f"restored {backup} into {fresh_url}: digest verified")
    after = run(everything(fresh))
    assert after["events"][: len(before["events"])] == before["events"]
    assert without_events(after) == without_events(before)
    run(signs_in(fresh, ring[1], secret, codes))

    # A SQLite host's backup restores into PostgreSQL too: one snapshot format.
    single = sqlite_in(tmp_path, "single")
    run(fill(single, ring[1]))
    single_yaml = config_of(tmp_path, "single", single, ring[0])
    cli(capsys, "backup", "-c", str(single_yaml), str(tmp_path / "sqlite.backup"))
    crossed = cli(
        capsys, "restore", "-c", str(fresh_yaml), str(tmp_path / "sqlite.backup"), "--force"
    )
    assert crossed[0] == 0, crossed[2]
    assert run(everything(fresh))["authenticators"] == run(everything(single))["authenticators"]


def test_backup_of_an_unreachable_server_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ring: tuple[Path, str]
) -> None:
    from tests.process import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    gateway_yaml = config(tmp_path, "gateway", postgres_store(url), ring[0])

    status, out, err = cli(capsys, "backup", "-c", str(gateway_yaml), str(tmp_path / "b"))

    said = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert (status, out) == (1, "")
    assert len(said) == 1
    assert said[0].startswith(f"PostgreSQL {url}: ConnectionRefusedError")
    assert not (tmp_path / "b").exists()


# -- check-config without the driver ---------------------------------------------------------------


def test_check_config_fails_when_the_postgres_driver_cannot_be_imported(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "asyncpg"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'asyncpg'\", name='asyncpg')\n"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "listen: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:8081\n"
        "state:\n  durable: {type: postgres, url: 'postgresql://gw@db1/crm'}\n"
    )

    def check(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
            check=False,
        )

    missing = check({**os.environ, "PYTHONPATH": str(shim.parent)})

    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-2:] == [
        f"{path}:5: state.durable.type: postgres needs the Python package 'asyncpg' "
        "(pip install 'crm-gateway[postgres]'): No module named 'asyncpg'",
        f"{path}: 1 problem",
    ]
    assert check().returncode == 0
