"""SQLite durable store (WAL). Every call runs on one worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.errors import StoreUnavailable

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
INSERT OR IGNORE INTO meta (key, value) VALUES ('tokens_version', '0');
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    revoked REAL
);
"""


class SqliteDurableStore:
    def __init__(self, path: str) -> None:
        self._path = path
        # One thread owns the connection: SQLite connections are not shared across threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreUnavailable(f"sqlite {self._path}: the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, RuntimeError) as exc:
            # RuntimeError: the worker thread is gone (interpreter or store shutting down).
            raise StoreUnavailable(f"sqlite {self._path}: {exc}") from exc

    def _open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, timeout=5.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        conn.commit()
        self._conn = conn

    def _ping(self) -> None:
        if self._conn is None:
            raise sqlite3.OperationalError("not open")
        self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()

    def _bump_tokens(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'tokens_version'"
        )

    def _add_token(
        self, token_id: str, user: str, token_digest: bytes, label: str, now: float
    ) -> None:
        conn = self._connection()
        with conn:
            conn.execute(
                "INSERT INTO api_tokens (id, user, digest, label, created) VALUES (?, ?, ?, ?, ?)",
                (token_id, user, token_digest, label, now),
            )
            self._bump_tokens(conn)

    def _revoke_token(self, token_id: str, now: float) -> bool:
        conn = self._connection()
        with conn:
            cursor = conn.execute(
                "UPDATE api_tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (now, token_id),
            )
            if cursor.rowcount:
                self._bump_tokens(conn)
            return cursor.rowcount > 0

    def _tokens(self) -> list[tuple[str, str, str, float, float | None]]:
        rows = self._connection().execute(
            "SELECT id, user, label, created, revoked FROM api_tokens ORDER BY created"
        )
        return [tuple(r) for r in rows]

    def _active_tokens(self) -> tuple[int, list[tuple[str, str, bytes]]]:
        conn = self._connection()
        version = int(
            conn.execute("SELECT value FROM meta WHERE key = 'tokens_version'").fetchone()[0]
        )
        rows = conn.execute("SELECT id, user, digest FROM api_tokens WHERE revoked IS NULL")
        return version, [(r[0], r[1], bytes(r[2])) for r in rows]

    def _tokens_version(self) -> int:
        row = (
            self._connection()
            .execute("SELECT value FROM meta WHERE key = 'tokens_version'")
            .fetchone()
        )
        return int(row[0])

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError("not open")
        return self._conn

    async def add_token(
        self, token_id: str, user: str, token_digest: bytes, label: str, now: float
    ) -> None:
        await self._run(self._add_token, token_id, user, token_digest, label, now)

    async def revoke_token(self, token_id: str, now: float) -> bool:
        return await self._run(self._revoke_token, token_id, now)

    async def tokens(self) -> list[tuple[str, str, str, float, float | None]]:
        """(id, user, label, created, revoked) of every token, revoked ones included."""
        return await self._run(self._tokens)

    async def active_tokens(self) -> tuple[int, list[tuple[str, str, bytes]]]:
        return await self._run(self._active_tokens)

    async def tokens_version(self) -> int:
        return await self._run(self._tokens_version)

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
