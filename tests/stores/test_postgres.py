"""The PostgreSQL store beyond the contract suite, against the machine's real server: the
bounded pool, the statement timeout, every connection failure as StoreUnavailable, a pool that
recovers when the server comes back, and the schema's versions (made once by gateways starting
together, an older one refused with what to run, a newer one refused)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest

from gateway.config.model import StoreConfig
from gateway.errors import StoreUnavailable
from gateway.stores import STORE_MISSING, DurableStore, migrate_durable, open_durable
from gateway.stores.postgres_schema import (
    NEWEST,
    SCHEMA_NEW,
    SCHEMA_OLD,
    STEPS,
    TABLES,
    SchemaStep,
    prepare,
)
from gateway.stores.sqlite_base import SCHEMA_VERSION as SQLITE_SCHEMA
from tests.postgres_server import Databases, sql
from tests.process import free_port

T0 = 1_800_000_000.0


def settings(url: str, **options: object) -> StoreConfig:
    return StoreConfig("postgres", url=url, **options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def opened(config: StoreConfig, *, create: bool = True) -> AsyncIterator[DurableStore]:
    store = await open_durable(config, create=create)
    try:
        yield store
    finally:
        await store.close()


def gateway_connections(url: str) -> int:
    database = url.rsplit("/", 1)[1]
    rows = sql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crm-gateway'"
        f" AND datname = '{database}'",
    )
    return int(rows[0][0][0])


# -- the pool and the statement timeout ------------------------------------------------------


async def test_a_store_never_holds_more_connections_than_its_pool_allows(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("pool")
    async with opened(settings(url, max_connections=2)) as store:
        results = await asyncio.gather(
            *(store.note_network("alice", f"192.0.2.{n}/32", T0 + n) for n in range(40))
        )

        assert results == [True] * 40  # every call waited its turn and went through
        assert gateway_connections(url) == 2


async def test_a_statement_that_outlasts_the_timeout_fails_and_changes_nothing(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("timeout")
    async with opened(settings(url, statement_timeout=0.3)) as store:
        other = await asyncpg.connect(url)
        try:
            # Another host holds the tokens version's row: the insert must wait for it.
            transaction = other.transaction()
            await transaction.start()
            await other.execute("SELECT * FROM meta WHERE key = 'tokens_version' FOR UPDATE")
            with pytest.raises(StoreUnavailable) as timed_out:
                await asyncio.wait_for(store.add_token("tok_1", "sync", b"d" * 32, "", T0), 10)
            await transaction.rollback()
        finally:
            await other.close()

        assert "statement timeout" in str(timed_out.value)
        assert await store.tokens() == []
        assert await store.tokens_version() == 0


# -- failures and recovery -------------------------------------------------------------------


async def test_no_server_is_store_unavailable(tmp_path: Path) -> None:
    config = settings(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", connect_timeout=2)

    with pytest.raises(StoreUnavailable) as down:
        await open_durable(config, create=True)

    assert isinstance(down.value.__cause__, OSError)
    assert down.value.detail.startswith(f"postgres {config.url}: ")


async def test_a_database_that_does_not_exist_is_store_unavailable_naming_it(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("real")[: -len("real")] + "missing"

    with pytest.raises(StoreUnavailable) as missing:
        await open_durable(settings(url), create=True)

    assert '"' + url.rsplit("/", 1)[1] + '" does not exist' in missing.value.detail


class Relay:
    """A TCP relay on loopback in front of the real server: the test cuts it (every
    connection reset, nothing listening: the server is down) and brings it back on the same
    port, as a PostgreSQL restart looks to its clients."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listen = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.listen)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


async def test_the_pool_fails_closed_while_the_server_is_gone_and_recovers_when_it_is_back(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("relay")
    relay = Relay(5432)
    await relay.start()
    through = url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.listen}")
    try:
        async with opened(settings(through, connect_timeout=2, max_connections=3)) as store:
            await store.add_token("tok_1", "sync", b"\x01" * 32, "", T0)

            await relay.cut()
            for _ in range(3):  # every call, whichever pooled connection it gets
                with pytest.raises(StoreUnavailable):
                    await store.active_tokens()
            with pytest.raises(StoreUnavailable):
                await store.add_token("tok_2", "sync", b"\x02" * 32, "", T0)

            await relay.start()
            answered = await store.active_tokens()  # the same store, not reopened
    finally:
        await relay.cut()

    assert answered == (1, [("tok_1", "sync", b"\x01" * 32)])


async def test_connections_the_server_ended_are_made_anew_without_a_failed_call(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("ended")
    async with opened(settings(url, max_connections=3)) as store:
        await asyncio.gather(*(store.tokens_version() for _ in range(6)))
        database = url.rsplit("/", 1)[1]
        ended = sql(
            url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE"
            f" application_name = 'crm-gateway' AND datname = '{database}'",
        )[0][0][0]
        # pg_terminate_backend only signals: wait until the backends are gone (their sockets
        # closed), then let the loop read the goodbyes waiting on the pooled sockets.
        for _ in range(100):
            if gateway_connections(url) == 0:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)

        versions = await asyncio.gather(*(store.tokens_version() for _ in range(6)))

    assert ended >= 1
    assert versions == [0] * 6


# -- the schema and its versions ---------------------------------------------------------------


def test_both_backends_keep_the_same_rows_under_the_same_schema_version(tmp_path: Path) -> None:
    """A snapshot of either is a SQLite store file: one row layout, one version number."""

    async def make() -> None:
        await (
            await open_durable(StoreConfig("sqlite", str(tmp_path / "s.db")), create=True)
        ).close()

    asyncio.run(make())
    with closing(sqlite3.connect(tmp_path / "s.db")) as conn:
        sqlite_tables = {
            name: [row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')]
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
            )
        }

    assert {t: [c.name for c in cols] for t, cols in TABLES.items()} == sqlite_tables
    assert NEWEST == SQLITE_SCHEMA


async def test_gateways_starting_together_on_an_empty_database_make_the_schema_once(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("race")

    stores = await asyncio.gather(*(open_durable(settings(url), create=True) for _ in range(6)))
    try:
        await stores[0].add_token("tok_1", "sync", b"\x01" * 32, "", T0)
        assert [await s.tokens_version() for s in stores] == [1] * 6
    finally:
        for store in stores:
            await store.close()
    assert sql(url, "SELECT value FROM meta WHERE key = 'schema_version'")[0] == [(str(NEWEST),)]


async def test_an_admin_command_finds_no_store_in_an_empty_database_and_makes_none(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("empty")

    with pytest.raises(StoreUnavailable) as missing:
        await open_durable(settings(url), create=False)

    assert missing.value.reason == STORE_MISSING
    assert sql(url, "SELECT to_regclass('meta') IS NULL")[0] == [(True,)]


async def test_a_store_of_a_newer_schema_is_refused_by_gateways_commands_and_migrate(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("newer")
    await (await open_durable(settings(url), create=True)).close()
    sql(url, f"UPDATE meta SET value = '{NEWEST + 1}' WHERE key = 'schema_version'")

    for create in (True, False):
        with pytest.raises(StoreUnavailable) as refused:
            await open_durable(settings(url), create=create)
        assert refused.value.reason == SCHEMA_NEW
        assert f"schema {NEWEST + 1}, newer than this crm-gateway knows" in refused.value.detail
    with pytest.raises(StoreUnavailable) as not_migrated:
        await migrate_durable(settings(url))
    assert not_migrated.value.reason == SCHEMA_NEW


# A later version, as the next release will add one: exercised through the same `prepare`
# every opening and `store migrate` run, with the real steps and one more.
LATER = (*STEPS, SchemaStep(NEWEST + 1, "added a test table", "CREATE TABLE later (x int)"))


async def test_an_older_schema_is_refused_with_what_to_run_and_migrate_brings_it_up(
    postgres_databases: Databases,
) -> None:
    url = postgres_databases.create("older")
    await (await open_durable(settings(url), create=True)).close()  # today's newest
    conn = await asyncpg.connect(url)
    try:
        for create in (True, False):
            with pytest.raises(StoreUnavailable) as refused:
                await prepare(conn, "db", create=create, steps=LATER)
            assert refused.value.reason == SCHEMA_OLD
            assert "run `crm-gateway store migrate -c gateway.yaml`" in refused.value.detail

        found, done = await prepare(conn, "db", create=True, migrate=True, steps=LATER)
        again = await prepare(conn, "db", create=True, migrate=True, steps=LATER)
        opened_after = await prepare(conn, "db", create=False, steps=LATER)
    finally:
        await conn.close()

    assert (found, done) == (NEWEST, [f"schema {NEWEST + 1}: added a test table"])
    assert again == (NEWEST + 1, []) == opened_after
    assert sql(url, "SELECT count(*) FROM later")[0] == [(0,)]


async def test_migrations_started_together_run_each_step_once(
    postgres_databases: Databases,
) -> None:
    """CREATE TABLE twice would fail: the advisory lock makes the second wait, then find the
    work done."""
    url = postgres_databases.create("together")
    conns = [await asyncpg.connect(url) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(prepare(c, "db", create=True, migrate=True, steps=LATER) for c in conns)
        )
    finally:
        for conn in conns:
            await conn.close()

    assert sorted(len(steps) for _, steps in results) == [0, 0, 0, len(LATER)]
    assert sql(url, "SELECT value FROM meta WHERE key = 'schema_version'")[0] == [
        (str(NEWEST + 1),)
    ]
