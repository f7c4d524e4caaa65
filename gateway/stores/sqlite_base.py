"""The SQLite durable store's file: its schema, one connection owned by one worker thread
(never the event loop), the statements every part of the store runs through, and the notes
the gateway leaves for the admin commands. gateway.stores.sqlite builds the store on it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from gateway.errors import StoreUnavailable
from gateway.metrics import STORE_SECONDS
from gateway.stores.protocols import DUPLICATE, STORE_MISSING

T = TypeVar("T")

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '2');
INSERT OR IGNORE INTO meta (key, value) VALUES ('tokens_version', '0');
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS authenticators (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL
);
CREATE INDEX IF NOT EXISTS authenticators_user ON authenticators (user);
CREATE TABLE IF NOT EXISTS recovery_codes (
    user TEXT NOT NULL,
    digest BLOB NOT NULL,
    created REAL NOT NULL,
    used REAL,
    PRIMARY KEY (user, digest)
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    label TEXT NOT NULL,
    created REAL NOT NULL,
    verified REAL NOT NULL,
    remembered_until REAL NOT NULL DEFAULT 0,
    revoked REAL
);
CREATE INDEX IF NOT EXISTS devices_user ON devices (user);
CREATE TABLE IF NOT EXISTS session_revocations (
    user TEXT PRIMARY KEY,
    not_before REAL NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revocations_version', '0');
CREATE TABLE IF NOT EXISTS message_ledger (
    time REAL NOT NULL,
    user TEXT NOT NULL,
    groups TEXT NOT NULL,
    channel TEXT NOT NULL,
    provider TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    cost TEXT NOT NULL,
    currency TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS message_ledger_time ON message_ledger (time);
CREATE TABLE IF NOT EXISTS admin_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    user TEXT NOT NULL,
    created REAL NOT NULL,
    done REAL
);
CREATE TABLE IF NOT EXISTS factor_choice (
    user TEXT PRIMARY KEY,
    factor TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    name TEXT NOT NULL,
    outcome TEXT NOT NULL,
    user TEXT NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    path TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time);
CREATE INDEX IF NOT EXISTS audit_events_user ON audit_events (user, time);
CREATE TABLE IF NOT EXISTS user_networks (
    user TEXT NOT NULL,
    network TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (user, network)
);
CREATE TABLE IF NOT EXISTS interval_choice (
    user TEXT PRIMARY KEY,
    seconds REAL NOT NULL,
    chosen REAL NOT NULL
);
UPDATE meta SET value = '2' WHERE key = 'schema_version' AND value = '1';
"""


def bring_up_to_date(path: Path) -> int:
    """A store file of an older schema (a backup made before an upgrade) given the newest:
    what the store does itself when it opens a file. Returns the schema it holds then."""
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(_SCHEMA)
        conn.commit()
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0])


def _read_only(exc: sqlite3.Error) -> bool:
    """The file can be read but not written (write-protected, a read-only mount)."""
    return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY")


# A row refused for a key or a UNIQUE column already taken (not NOT NULL, CHECK, a trigger).
_DUPLICATES = ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")


class SqliteBase:
    def __init__(self, path: str, *, create: bool = True) -> None:
        """`create`: make the file (and its folder) when missing: for the gateway, which owns
        the store. Admin commands pass False: a command pointed at the wrong place must say so,
        not act on a new empty store and report success."""
        self._path = path
        self._create = create
        # One thread owns the connection: SQLite connections are not shared across threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreUnavailable(f"sqlite {self._path}: the store is closed")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, RuntimeError) as exc:
            # RuntimeError: the worker thread is gone (interpreter or store shutting down).
            duplicate = getattr(exc, "sqlite_errorname", "") in _DUPLICATES
            reason = DUPLICATE if duplicate else None
            raise StoreUnavailable(f"sqlite {self._path}: {exc}", reason=reason) from exc
        finally:
            # Waiting for the store's thread included: that is what a request feels.
            operation = fn.__name__.lstrip("_")  # query, change, add_token, add_audit, …
            STORE_SECONDS.labels("durable", operation).observe(time.perf_counter() - started)

    def _connect(self) -> sqlite3.Connection:
        if self._create:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            return sqlite3.connect(self._path, timeout=5.0, check_same_thread=False)
        if not Path(self._path).exists():
            raise StoreUnavailable(f"sqlite {self._path}: no such store", reason=STORE_MISSING)
        # mode=rw: SQLite itself never creates the file, even if it vanished since the look.
        uri = f"{Path(self._path).absolute().as_uri()}?mode=rw"
        return sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)

    def _open(self) -> None:
        conn = self._connect()
        # Workers starting together on a new file: switching it to WAL takes a lock that
        # SQLite refuses at once (no busy wait) while another one creates the schema.
        for tries_left in range(50, -1, -1):
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                conn.commit()
                break
            except sqlite3.OperationalError as exc:
                conn.rollback()
                if _read_only(exc) and not self._create:
                    break  # an admin command may still read it; a change fails when made
                if "locked" not in str(exc) or not tries_left:
                    conn.close()
                    raise
                time.sleep(0.1)
        self._conn = conn

    def _ping(self) -> None:
        if self._conn is None:
            raise sqlite3.OperationalError("not open")
        self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError("not open")
        return self._conn

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        return [tuple(r) for r in self._connection().execute(sql, params)]

    def _change(self, statements: list[tuple[str, tuple[object, ...]]]) -> int:
        """Run statements in one transaction; the row count of the first."""
        conn = self._connection()
        with conn:
            counts = [conn.execute(sql, params).rowcount for sql, params in statements]
        return counts[0] if counts else 0

    async def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        return await self._run(self._query, sql, params)

    async def change(self, *statements: tuple[str, tuple[object, ...]]) -> int:
        return await self._run(self._change, list(statements))

    # -- notes the gateway leaves for the admin commands ----------------------------------

    async def set_note(self, name: str, value: str) -> None:
        await self.change(
            (
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ("note:" + name, value),
            )
        )

    async def note(self, name: str) -> str:
        rows = await self.query("SELECT value FROM meta WHERE key = ?", "note:" + name)
        return str(rows[0][0]) if rows else ""

    async def open(self) -> None:
        await self._run(self._open)

    async def ping(self) -> None:
        await self._run(self._ping)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)
