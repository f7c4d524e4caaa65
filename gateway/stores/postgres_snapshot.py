"""The PostgreSQL durable store as one file, for backup, restore and `store copy` (the
DurableSnapshots of gateway/stores/kinds.py).

The snapshot is a SQLite store file: the SQLite store's own schema, filled with every row
read in one REPEATABLE READ, READ ONLY transaction (one consistent moment while gateways go
on writing), and the id sequences as sqlite_sequence. So its digest is the SQLite store's
(gateway.stores.sqlite_snapshot.describe: the same rows give the same digest on either
backend), the backup file format does not change, and a snapshot of either backend can be
put into the other. The store's own digest is its snapshot's: taken, then described.

Blocking calls, as the Protocol says: each runs its coroutine on an event loop of its own in
a thread of its own, so a command's thread and a test's running loop may both call them."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from gateway.config.model import StoreConfig
from gateway.errors import Refused, StoreUnavailable
from gateway.stores.kinds import Contents
from gateway.stores.postgres_base import FAILURES, connect, finish, problem, shown_url
from gateway.stores.postgres_schema import (
    NEWEST,
    SCHEMA_LOCK,
    SEQUENCES,
    TABLES,
    Column,
    Conn,
    found_version,
    prepare,
)

# The SQLite store's schema: a snapshot is a SQLite store file (see the module's docstring).
from gateway.stores.sqlite_base import _SCHEMA as SQLITE_SCHEMA
from gateway.stores.sqlite_base import bring_up_to_date
from gateway.stores.sqlite_snapshot import SqliteSnapshots

T = TypeVar("T")
_BATCH = 5000
_AS = {"text": str, "bytes": bytes, "float": float, "int": int}


def _blocking(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-snapshot") as thread:
        return thread.submit(lambda: asyncio.run(work())).result()


def _names(columns: tuple[Column, ...]) -> str:
    return ", ".join(c.sql for c in columns)


def _typed(columns: tuple[Column, ...], row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A snapshot row as PostgreSQL's binary COPY wants it (SQLite gives back what it kept)."""
    return tuple(
        None if value is None else _AS[column.kind](value)
        for column, value in zip(columns, row, strict=True)
    )


class PostgresSnapshots:
    """Snapshots of the store in the database `settings.url` names."""

    key = "state.durable.url"

    def __init__(self, settings: StoreConfig) -> None:
        self._settings = settings
        self.name = shown_url(settings.url)
        self.schema = NEWEST

    def _refused(self, exc: BaseException) -> Refused:
        cause = exc.detail if isinstance(exc, StoreUnavailable) else problem(exc)
        cause = cause.removeprefix(f"postgres {self.name}: ")
        return Refused("postgres_failed", f"PostgreSQL {self.name}: {cause}")

    async def _connect(self, application: str) -> asyncpg.Connection:
        # No statement timeout: a snapshot of a big audit trail takes what it takes.
        return await connect(self._settings, statement_timeout=0, application=application)

    def _call(self, application: str, work: Callable[[Conn], Any]) -> Any:
        """`work` on a connection of its own; failures refused in one line (a database that
        does not exist is asyncpg's InvalidCatalogNameError, left to the caller)."""

        async def run() -> Any:
            conn = await self._connect(application)
            try:
                return await work(conn)
            finally:
                await finish(conn)

        try:
            return _blocking(run)
        except asyncpg.InvalidCatalogNameError:
            raise
        except FAILURES as exc:
            raise self._refused(exc) from None
        except StoreUnavailable as exc:
            raise self._refused(exc) from None
        except sqlite3.Error as exc:  # the snapshot file's side: a full disk, a bad file
            raise Refused("sqlite_failed", f"SQLite: {exc}") from None

    def exists(self) -> bool:
        async def look(conn: Conn) -> bool:
            return await found_version(conn, self.name) > 0

        try:
            return bool(self._call("crm-gateway backup", look))
        except asyncpg.InvalidCatalogNameError:
            return False  # no database: no store

    def workspace(self) -> Path:
        """No local folder holds this store's data: the system's temporary folder (TMPDIR
        chooses it), in a private folder made by the caller, removed when done."""
        return Path(tempfile.gettempdir())

    def in_use(self) -> bool:
        async def others(conn: Conn) -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND application_name = 'crm-gateway'"
                )
            )

        try:
            return bool(self._call("crm-gateway backup", others))
        except asyncpg.InvalidCatalogNameError:
            return False

    def take(self, into: Path) -> None:
        async def copy(conn: Conn) -> None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if await found_version(conn, self.name) == 0:
                    raise Refused("store_unreadable", f"{self.name} holds no crm-gateway store")
                with closing(sqlite3.connect(into)) as out:
                    await self._export(conn, out)

        try:
            self._call("crm-gateway backup", copy)
        except asyncpg.InvalidCatalogNameError as exc:
            raise Refused("store_unreadable", f"{self.name}: {problem(exc)}") from None

    async def _export(self, conn: Conn, out: sqlite3.Connection) -> None:
        out.executescript(SQLITE_SCHEMA)
        out.execute("DELETE FROM meta")  # the store's own, version and notes included
        for table, columns in TABLES.items():
            names = _names(columns)
            insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
            batch: list[tuple[Any, ...]] = []
            async for record in conn.cursor(f"SELECT {names} FROM {table}", prefetch=_BATCH):  # noqa: S608
                batch.append(tuple(record))
                if len(batch) == _BATCH:
                    out.executemany(insert, batch)
                    batch.clear()
            out.executemany(insert, batch)
        out.execute("DELETE FROM sqlite_sequence")  # made by the inserts; PostgreSQL's instead
        for table in SEQUENCES:
            last = await conn.fetchval(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass)", table
            )
            if last is not None:  # NULL: no id handed out yet, as SQLite keeps no row then
                out.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, last))
        out.commit()

    def examine(self, snapshot: Path, what: str, reason: str) -> Contents:
        """The snapshot is a SQLite store file: checked and described as one."""
        return SqliteSnapshots(snapshot, self.schema).examine(snapshot, what, reason)

    def examine_store(self, what: str, reason: str) -> Contents:
        with tempfile.TemporaryDirectory(dir=self.workspace(), prefix="crm-gateway-") as work:
            taken = Path(work) / "store.db"
            self.take(taken)
            return self.examine(taken, what, reason)

    def held_rows(self) -> dict[str, int]:
        async def count(conn: Conn) -> dict[str, int]:
            if await found_version(conn, self.name) == 0:
                return {}
            held = {}
            for table in TABLES:
                if table != "meta":
                    held[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608
            return {table: n for table, n in sorted(held.items()) if n}

        try:
            return dict(self._call("crm-gateway restore", count))
        except asyncpg.InvalidCatalogNameError:
            return {}

    def put(self, snapshot: Path) -> None:
        """Every table emptied and filled from the snapshot, and the id sequences set, in one
        transaction under the schema lock: a gateway that holds the store open reads either
        the old contents or the restored ones, never a mix. A database without a store gets
        the newest schema first."""
        with tempfile.TemporaryDirectory(prefix="crm-gateway-restore-") as work:
            self._put(self._current(snapshot, Path(work)))

    def _current(self, snapshot: Path, work: Path) -> Path:
        """The snapshot as the newest schema: itself, or a copy brought up to date when a
        backup of an older crm-gateway is restored (the SQLite store does the same on open)."""
        uri = f"{snapshot.absolute().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as src:
            row = src.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            held = 0 if row is None else int(row[0])
            if 1 <= held < self.schema:
                copy = work / "snapshot"
                with closing(sqlite3.connect(copy)) as dst:
                    src.backup(dst)
                held = bring_up_to_date(copy)
                snapshot = copy
        if held != self.schema:
            shown = "no schema" if row is None else f"schema {row[0]}"
            raise Refused(
                "schema_unknown",
                f"the snapshot holds {shown}; {self.name} takes schema {self.schema}: "
                "restore it with a crm-gateway that knows that schema",
            )
        return snapshot

    def _put(self, snapshot: Path) -> None:
        uri = f"{snapshot.absolute().as_uri()}?mode=ro"

        async def fill(conn: Conn) -> None:
            await prepare(conn, self.name, create=True)
            # Opened here: a SQLite connection is used by the thread that made it.
            with closing(sqlite3.connect(uri, uri=True)) as src:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                    await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
                    for table, columns in TABLES.items():
                        await self._import(conn, src, table, columns)
                    kept = dict(src.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
                    for table in SEQUENCES:
                        last = kept.get(table)
                        await conn.execute(
                            "SELECT setval(pg_get_serial_sequence($1, 'id'), $2, $3)",
                            table,
                            int(last) if last else 1,
                            bool(last),
                        )

        try:
            self._call("crm-gateway restore", fill)
        except asyncpg.InvalidCatalogNameError as exc:
            raise self._refused(exc) from None

    async def _import(
        self,
        conn: Conn,
        src: sqlite3.Connection,
        table: str,
        columns: tuple[Column, ...],
    ) -> None:
        rows = src.execute(f"SELECT {_names(columns)} FROM {table}")  # noqa: S608
        while batch := rows.fetchmany(_BATCH):
            await conn.copy_records_to_table(
                table,
                records=[_typed(columns, r) for r in batch],
                columns=[c.name for c in columns],
            )
