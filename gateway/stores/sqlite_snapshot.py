"""The SQLite durable store as one file, for backup and restore (the DurableSnapshots of
gateway/stores/kinds.py): a consistent copy of the database file while gateways write,
its logical digest, and putting a checked copy in place. Knows nothing of the backup file's
format or its encryption (gateway/cli/backup_file.py) nor of the commands (gateway/cli/backup.py).

Digest: SHA-256 over sqlite_master (type, name, table, sql) and every row of every table
(sqlite_sequence included), tables by name, rows ORDER BY every column, each value
type-tagged (text and blobs length-prefixed, floats in exact hex): equal digests, equal
contents, whatever the page layout or the SQLite version.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import ParamSpec, TypeVar

from gateway.errors import Refused
from gateway.stores.kinds import Contents

P = ParamSpec("P")
T = TypeVar("T")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _encoded(row: tuple[object, ...]) -> bytes:
    """A row, each value type-tagged, text and blobs length-prefixed, numbers terminated: 1,
    1.0 and "1" never encode alike, and no two rows share an encoding. (Inlined: it runs for
    every value of every row, millions of times in a big audit table.)"""
    parts = [b"R"]
    for value in row:
        if isinstance(value, str):
            text = value.encode("utf-8", "surrogatepass")
            parts += (b"s%d:" % len(text), text)
        elif isinstance(value, int):
            parts.append(b"i%d;" % value)
        elif isinstance(value, float):
            parts.append(b"f%s;" % value.hex().encode())  # exact, unlike a decimal repr
        elif value is None:
            parts.append(b"n")
        else:
            blob = bytes(value)  # type: ignore[call-overload]  # sqlite3 gives bytes here
            parts += (b"b%d:" % len(blob), blob)
    return b"".join(parts)


def describe(conn: sqlite3.Connection) -> Contents:
    """The logical digest and row counts of a database: equal digests, equal contents."""
    digest = hashlib.sha256(b"crm-gateway logical digest 1\n")
    for entry in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY 1, 2"):
        digest.update(b"S" + _encoded(entry))
    tables: dict[str, int] = {}
    per_table: dict[str, str] = {}  # the same rows, a digest per table (for `store copy`)
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    for (name,) in names.fetchall():
        table = _quoted(name)
        width = len(conn.execute(f"SELECT * FROM {table} LIMIT 0").description)  # noqa: S608
        order = ", ".join(str(column) for column in range(1, width + 1))
        digest.update(b"T" + _encoded((name,)))
        own = hashlib.sha256(b"crm-gateway table digest 1\n" + _encoded((name,)))
        count = 0
        # Names come from sqlite_master and are quoted; nothing here is user input.
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY {order}"):  # noqa: S608
            encoded = _encoded(row)
            digest.update(encoded)
            own.update(encoded)
            count += 1
        tables[name] = count
        per_table[name] = "sha256:" + own.hexdigest()
    try:
        found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        schema = int(found[0])
    except (sqlite3.Error, TypeError, ValueError):
        schema = 0  # not a crm-gateway store
    return Contents("sha256:" + digest.hexdigest(), tables, schema, per_table)


def _read_only(store: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{store.absolute().as_uri()}?mode=ro", uri=True)


def _sqlite_refused(method: Callable[P, T]) -> Callable[P, T]:
    """SQLite's own errors (the store stayed locked for 30 s, a file that is no database)
    become a refusal the command reports in one line."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise Refused("sqlite_failed", f"SQLite: {exc}") from None

    return translated


class SqliteSnapshots:
    """Snapshots of the SQLite file at `path`: the database file itself is the snapshot."""

    key = "state.durable.path"

    def __init__(self, path: Path, schema: int) -> None:
        self._path = path
        self.name = str(path)
        self.schema = schema

    def exists(self) -> bool:
        return self._path.is_file()

    def workspace(self) -> Path:
        return self._path.parent

    def in_use(self) -> bool:
        return Path(f"{self._path}-wal").exists()  # readers leave one too: look before reading

    def take(self, into: Path) -> None:
        """The backup API in one step is one read transaction (WAL: writers go on meanwhile).
        The store is opened read-only."""
        try:
            with (
                closing(_read_only(self._path)) as source,
                closing(sqlite3.connect(into)) as target,
            ):
                source.backup(target, pages=-1)  # all pages in one step: one read transaction
        except sqlite3.Error as exc:
            raise Refused(
                "store_unreadable", f"{self._path} does not read as a store: {exc}"
            ) from None

    @_sqlite_refused
    def examine(self, snapshot: Path, what: str, reason: str) -> Contents:
        """integrity_check, then the digest."""
        with closing(sqlite3.connect(snapshot)) as conn:
            problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if problems != ["ok"]:
                raise Refused(reason, f"{what} is damaged: {'; '.join(problems[:3])}")
            return describe(conn)

    def examine_store(self, what: str, reason: str) -> Contents:
        return self.examine(self._path, what, reason)

    def held_rows(self) -> dict[str, int]:
        if not self._path.exists():
            return {}
        try:
            with closing(_read_only(self._path)) as conn:
                names = conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
                counts = {
                    name: conn.execute(f"SELECT COUNT(*) FROM {_quoted(name)}").fetchone()[0]  # noqa: S608
                    for (name,) in names
                    if name not in ("meta", "sqlite_sequence")
                }
        except sqlite3.Error as exc:
            raise Refused(
                "store_unreadable",
                f"{self._path} exists but does not read as a store ({exc}): move it aside "
                "(with any -wal and -shm file beside it), then restore again",
            ) from None
        return {name: count for name, count in sorted(counts.items()) if count}

    @_sqlite_refused
    def put(self, snapshot: Path) -> None:
        """Copy the checked database into the store with the backup API, in one write
        transaction through SQLite's locks. Not a rename: a gateway that still has the file
        open would write on into the unlinked old file (and a -wal left beside the new one
        would be replayed into it); this way it reads the restored pages at its next
        transaction. The backup API also keeps the file's owner and mode; a new file is
        made 0600 (in a folder made when missing, as the gateway would make it)."""
        if not self._path.exists():
            self._path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with (
            closing(sqlite3.connect(snapshot)) as source,
            closing(sqlite3.connect(self._path, timeout=30.0)) as target,
        ):
            source.backup(target)
            target.execute("PRAGMA journal_mode=WAL")
