"""SQLite durable store (WAL), the default: `state.durable: {type: sqlite, path: …}`. Every
call runs on one worker thread, never on the event loop. `DURABLE` is its registry entry."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.config import StoreConfig
from gateway.errors import StoreUnavailable
from gateway.metrics import STORE_SECONDS
from gateway.model import AuditEvent
from gateway.stores.protocols import (
    DUPLICATE,
    STORE_MISSING,
    AuditQuery,
    Authenticator,
    Device,
    DurableKind,
    LedgerRow,
)
from gateway.stores.sqlite_snapshot import SqliteSnapshots

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
"""
_AUDIT_COLUMNS = (
    "time, name, outcome, user, ip, user_agent, path, method, request_id, reason, details"
)


def _read_only(exc: sqlite3.Error) -> bool:
    """The file can be read but not written (write-protected, a read-only mount)."""
    return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY")


def _utf8(text: str) -> str:
    """`text` with what UTF-8 cannot hold (lone surrogates) as U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# A row refused for a key or a UNIQUE column already taken (not NOT NULL, CHECK, a trigger).
_DUPLICATES = ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")


class SqliteDurableStore:
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
            "SELECT id, user, label, created, revoked FROM api_tokens ORDER BY created, id"
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

    # -- second factors: authenticators, recovery codes, devices, session revocations -------

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

    async def add_authenticator(self, row: Authenticator) -> None:
        await self.change(
            (
                "INSERT INTO authenticators (id, user, kind, name, sealed, key_id, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.user, row.kind, row.name, row.sealed, row.key_id, row.created),
            )
        )

    async def authenticators(self, user: str) -> list[Authenticator]:
        rows = await self.query(
            "SELECT id, user, kind, name, sealed, key_id, created, last_used"
            " FROM authenticators WHERE user = ? ORDER BY created, id",
            user,
        )
        return [Authenticator(*r) for r in rows]  # type: ignore[arg-type]

    async def all_authenticators(self) -> list[Authenticator]:
        rows = await self.query(
            "SELECT id, user, kind, name, sealed, key_id, created, last_used"
            " FROM authenticators ORDER BY user, created, id"
        )
        return [Authenticator(*r) for r in rows]  # type: ignore[arg-type]

    async def reseal_authenticator(
        self, auth_id: str, sealed: bytes, key_id: str, *, expected: bytes
    ) -> bool:
        """Compare and swap: replaced only while the stored value is still `expected`, so an
        authenticator removed or re-enrolled since it was read is never brought back."""
        replaced = await self.change(
            (
                "UPDATE authenticators SET sealed = ?, key_id = ? WHERE id = ? AND sealed = ?",
                (sealed, key_id, auth_id, expected),
            )
        )
        return replaced > 0

    async def touch_authenticator(self, auth_id: str, now: float) -> None:
        await self.change(("UPDATE authenticators SET last_used = ? WHERE id = ?", (now, auth_id)))

    async def remove_authenticator(self, user: str, auth_id: str) -> bool:
        removed = await self.change(
            ("DELETE FROM authenticators WHERE user = ? AND id = ?", (user, auth_id))
        )
        return removed > 0

    async def replace_recovery_codes(self, user: str, digests: list[bytes], now: float) -> None:
        await self.change(
            ("DELETE FROM recovery_codes WHERE user = ?", (user,)),
            *(
                (
                    "INSERT INTO recovery_codes (user, digest, created) VALUES (?, ?, ?)",
                    (user, d, now),
                )
                for d in digests
            ),
        )

    async def use_recovery_code(self, user: str, digest: bytes, now: float) -> bool:
        """Atomic: of two requests with the same code, exactly one succeeds."""
        used = await self.change(
            (
                "UPDATE recovery_codes SET used = ? WHERE user = ? AND digest = ? AND used IS NULL",
                (now, user, digest),
            )
        )
        return used > 0

    async def recovery_codes_left(self, user: str) -> int:
        rows = await self.query(
            "SELECT COUNT(*) FROM recovery_codes WHERE user = ? AND used IS NULL", user
        )
        return int(str(rows[0][0]))

    async def save_device(self, row: Device) -> None:
        await self.change(
            (
                "INSERT INTO devices (id, user, label, created, verified, remembered_until)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " verified = excluded.verified, remembered_until = excluded.remembered_until,"
                " label = excluded.label WHERE devices.user = excluded.user"
                " AND devices.revoked IS NULL",
                (row.id, row.user, row.label, row.created, row.verified, row.remembered_until),
            )
        )

    async def device(self, device_id: str) -> Device | None:
        rows = await self.query(
            "SELECT id, user, label, created, verified, remembered_until, revoked"
            " FROM devices WHERE id = ?",
            device_id,
        )
        return Device(*rows[0]) if rows else None  # type: ignore[arg-type]

    async def devices(self, user: str) -> list[Device]:
        rows = await self.query(
            "SELECT id, user, label, created, verified, remembered_until, revoked"
            " FROM devices WHERE user = ? AND revoked IS NULL ORDER BY created, id",
            user,
        )
        return [Device(*r) for r in rows]  # type: ignore[arg-type]

    async def revoke_device(self, user: str, device_id: str, now: float) -> bool:
        revoked = await self.change(
            (
                "UPDATE devices SET revoked = ? WHERE user = ? AND id = ? AND revoked IS NULL",
                (now, user, device_id),
            )
        )
        return revoked > 0

    async def revoke_sessions(self, user: str, now: float) -> None:
        """Every session of `user` started before `now` ends (workers see it within seconds)."""
        await self.change(
            (
                "INSERT INTO session_revocations (user, not_before) VALUES (?, ?)"
                " ON CONFLICT (user) DO UPDATE SET not_before = excluded.not_before",
                (user, now),
            ),
            (
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1"
                " WHERE key = 'revocations_version'",
                (),
            ),
        )

    async def revocations(self) -> tuple[int, dict[str, float]]:
        version = await self.query("SELECT value FROM meta WHERE key = 'revocations_version'")
        rows = await self.query("SELECT user, not_before FROM session_revocations")
        return int(str(version[0][0])), {str(u): float(str(t)) for u, t in rows}

    async def revocations_version(self) -> int:
        rows = await self.query("SELECT value FROM meta WHERE key = 'revocations_version'")
        return int(str(rows[0][0]))

    async def record_message(self, row: LedgerRow) -> None:
        await self.change(
            (
                "INSERT INTO message_ledger (time, user, groups, channel, provider, status,"
                " attempts, cost, currency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(row),
            )
        )

    async def messages(self, since: float, until: float) -> list[LedgerRow]:
        rows = await self.query(
            "SELECT time, user, groups, channel, provider, status, attempts, cost, currency"
            " FROM message_ledger WHERE time >= ? AND time < ? ORDER BY time",
            since,
            until,
        )
        return [LedgerRow(*r) for r in rows]  # type: ignore[arg-type]

    async def request_action(self, action: str, user: str, now: float) -> int:
        """An admin request the running gateway carries out (it holds the state): its id."""
        return await self._run(self._request, action, user, now)

    def _request(self, action: str, user: str, now: float) -> int:
        conn = self._connection()
        with conn:
            cursor = conn.execute(
                "INSERT INTO admin_requests (action, user, created) VALUES (?, ?, ?)",
                (action, user, now),
            )
        return int(cursor.lastrowid or 0)

    async def pending_requests(self) -> list[tuple[int, str, str]]:
        rows = await self.query(
            "SELECT id, action, user FROM admin_requests WHERE done IS NULL ORDER BY id"
        )
        return [(int(str(r[0])), str(r[1]), str(r[2])) for r in rows]

    async def claim_request(self, request_id: int, now: float) -> bool:
        """Mark a request done; True for the one worker that claimed it."""
        done = await self.change(
            ("UPDATE admin_requests SET done = ? WHERE id = ? AND done IS NULL", (now, request_id))
        )
        return done > 0

    async def request_done(self, request_id: int) -> bool:
        rows = await self.query("SELECT done FROM admin_requests WHERE id = ?", request_id)
        return bool(rows) and rows[0][0] is not None

    async def remove_authenticators(self, user: str) -> int:
        return await self.change(("DELETE FROM authenticators WHERE user = ?", (user,)))

    async def revoke_devices(self, user: str, now: float) -> int:
        return await self.change(
            ("UPDATE devices SET revoked = ? WHERE user = ? AND revoked IS NULL", (now, user))
        )

    async def known_users(self) -> list[str]:
        """Every user the store holds something for (authenticators, codes, devices)."""
        rows = await self.query(
            "SELECT user FROM authenticators UNION SELECT user FROM recovery_codes"
            " UNION SELECT user FROM devices ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    async def set_factor_choice(self, user: str, factor: str) -> None:
        await self.change(
            (
                "INSERT INTO factor_choice (user, factor) VALUES (?, ?)"
                " ON CONFLICT (user) DO UPDATE SET factor = excluded.factor",
                (user, factor),
            )
        )

    async def factor_choice(self, user: str) -> str:
        rows = await self.query("SELECT factor FROM factor_choice WHERE user = ?", user)
        return str(rows[0][0]) if rows else ""

    # -- the audit trail and the networks users sign in from -------------------------------

    def _add_audit(self, events: list[AuditEvent]) -> None:
        # One statement for the whole batch, its rows unpacked by SQLite from one JSON text:
        # row-by-row binding needs the GIL per row, and a busy event loop then stretches the
        # write lock to seconds (measured: 1,137 rows held it 1.9 s; one statement, ms).
        rows = json.dumps(
            [
                [
                    e.time,
                    e.name,
                    e.outcome,
                    e.user,
                    e.ip,
                    e.user_agent,
                    e.path,
                    e.method,
                    e.request_id,
                    e.reason,
                    json.dumps(dict(e.details), ensure_ascii=False),
                ]
                for e in events
            ],
            ensure_ascii=False,
        )
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(11))
        insert = (
            f"INSERT INTO audit_events ({_AUDIT_COLUMNS})"  # noqa: S608 (constant columns)
            f" SELECT {picks} FROM json_each(?) ORDER BY key"
        )
        conn = self._connection()
        try:
            with conn:
                conn.execute(insert, (rows,))
        except UnicodeEncodeError:
            # A lone surrogate (aiohttp's reading of a header byte that is not UTF-8, in a
            # User-Agent) cannot be bound: refused before any row, the batch is kept with
            # U+FFFD in its place. Raised, it ended the audit flush task for good.
            with conn:
                conn.execute(insert, (_utf8(rows),))

    async def add_audit_events(self, events: list[AuditEvent]) -> None:
        if events:
            await self._run(self._add_audit, events)

    async def audit_events(self, query: AuditQuery) -> list[tuple[int, AuditEvent]]:
        where = ["id > ?", "time >= ?"]
        params: list[object] = [query.after_id, query.since]
        if query.until != float("inf"):
            where.append("time < ?")
            params.append(query.until)
        for column in ("user", "ip", "outcome", "request_id"):
            value = getattr(query, column)
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if query.names:
            alternatives = []
            for name in query.names:
                if name.endswith("*"):
                    # Not LIKE: it ignores case (an exact name does not) and reads `_` and `%`.
                    alternatives.append("substr(name, 1, ?) = ?")
                    params += [len(name) - 1, name[:-1]]
                else:
                    alternatives.append("name = ?")
                    params.append(name)
            where.append("(" + " OR ".join(alternatives) + ")")
        order = "DESC" if query.newest_first else "ASC"
        params.append(query.limit)
        # Only constant column names and `?` placeholders are joined; values are parameters.
        rows = await self.query(
            f"SELECT id, {_AUDIT_COLUMNS} FROM audit_events WHERE {' AND '.join(where)}"  # noqa: S608
            f" ORDER BY id {order} LIMIT ?",
            *params,
        )
        found = []
        for row in rows:
            name, outcome, user, ip, agent, path, method, rid, reason = (str(v) for v in row[2:11])
            event = AuditEvent(
                float(row[1]),  # type: ignore[arg-type]
                name,
                outcome,
                user,
                ip,
                agent,
                path,
                method,
                rid,
                reason,
                details=tuple(sorted(json.loads(str(row[11])).items())),
            )
            found.append((int(row[0]), event))  # type: ignore[call-overload]
        return found

    async def prune_audit(self, before: float) -> int:
        return await self.change(("DELETE FROM audit_events WHERE time < ?", (before,)))

    def _note_network(self, user: str, network: str, now: float) -> bool:
        conn = self._connection()
        with conn:
            added = conn.execute(
                "INSERT OR IGNORE INTO user_networks (user, network, first_seen, last_seen)"
                " VALUES (?, ?, ?, ?)",
                (user, network, now, now),
            ).rowcount
            if not added:
                conn.execute(
                    "UPDATE user_networks SET last_seen = ? WHERE user = ? AND network = ?",
                    (now, user, network),
                )
        return bool(added)

    async def note_network(self, user: str, network: str, now: float) -> bool:
        return await self._run(self._note_network, user, network, now)

    async def networks(self, user: str) -> list[tuple[str, float, float]]:
        rows = await self.query(
            "SELECT network, first_seen, last_seen FROM user_networks WHERE user = ?"
            " ORDER BY first_seen, network",
            user,
        )
        return [(str(r[0]), float(r[1]), float(r[2])) for r in rows]  # type: ignore[arg-type]

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


async def _open_durable(settings: StoreConfig, create: bool) -> SqliteDurableStore:
    store = SqliteDurableStore(settings.path, create=create)
    try:
        await store.open()
    except BaseException:
        await store.close()
        raise
    return store


DURABLE = DurableKind(
    open=_open_durable,
    snapshots=lambda settings: SqliteSnapshots(Path(settings.path), SCHEMA_VERSION),
    address=lambda settings: (settings.path, SqliteSnapshots.key),
)
