"""The backup file and the database copies around it: a consistent snapshot of a SQLite
store, its logical digest, the encrypted chunked format, and putting a verified copy in place.
Knows nothing of the config or the command line (gateway/backup.py runs the commands).

Format 1: the line `CRM-GATEWAY-BACKUP 1`, one line of JSON header (format, created, key_id,
salt, gateway, schema, tables, digest, size), then chunks `length (4 bytes, big-endian) |
AES-256-GCM ciphertext and tag`. The plaintext is the database file compressed with zlib, cut
in 1 MiB pieces; the last chunk (maybe empty) is the final one and there always is one.

- Key: HKDF-SHA256(the seal key named by key_id, salt: 32 random bytes from the header, info
  "crm-gateway backup v1"): one key per file and purpose, so the nonce can be the chunk index
  (gateway.crypto.ChunkSealer does the key work).
- Each chunk's associated data is SHA-256(magic + header line) | index | final flag. A changed
  or swapped header fails the first chunk; reordered chunks fail their index; a file cut after
  a chunk fails the final flag (and is named as truncated); flipped bits fail the tag.
- Digest: SHA-256 over sqlite_master (type, name, table, sql) and every row of every table
  (sqlite_sequence included), tables by name, rows ORDER BY every column, each value
  type-tagged (text and blobs length-prefixed, floats in exact hex): equal digests, equal
  contents, whatever the page layout or the SQLite version.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sqlite3
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gateway.crypto import ChunkSealer, KeyRing, SealBroken
from gateway.errors import Refused

MAGIC = b"CRM-GATEWAY-BACKUP 1\n"
FORMAT = 1
CHUNK = 1 << 20
_PURPOSE = "crm-gateway backup v1"
_MAX_HEADER = 64 * 1024
_TAG = ChunkSealer.TAG_BYTES


# -- what a database holds -------------------------------------------------------------------


@dataclass(frozen=True)
class Contents:
    digest: str  # "sha256:…" over the schema and every row
    tables: dict[str, int]  # rows per table
    schema: int  # meta.schema_version

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


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
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    for (name,) in names.fetchall():
        table = _quoted(name)
        width = len(conn.execute(f"SELECT * FROM {table} LIMIT 0").description)  # noqa: S608
        order = ", ".join(str(column) for column in range(1, width + 1))
        digest.update(b"T" + _encoded((name,)))
        count = 0
        # Names come from sqlite_master and are quoted; nothing here is user input.
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY {order}"):  # noqa: S608
            digest.update(_encoded(row))
            count += 1
        tables[name] = count
    try:
        found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        schema = int(found[0])
    except (sqlite3.Error, TypeError, ValueError):
        schema = 0  # not a crm-gateway store
    return Contents("sha256:" + digest.hexdigest(), tables, schema)


def _read_only(store: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{store.absolute().as_uri()}?mode=ro", uri=True)


def snapshot(store: Path, into: Path) -> None:
    """A consistent copy of `store` while others write to it: the backup API in one step is
    one read transaction (WAL: writers go on meanwhile). The store is opened read-only."""
    try:
        with (
            closing(_read_only(store)) as source,
            closing(sqlite3.connect(into)) as target,
        ):
            source.backup(target, pages=-1)  # all pages in one step: one read transaction
    except sqlite3.Error as exc:
        raise Refused("store_unreadable", f"{store} does not read as a store: {exc}") from None


def checked(db: Path, what: str, reason: str) -> Contents:
    """integrity_check, then the digest; `what` names the database in the refusal."""
    with closing(sqlite3.connect(db)) as conn:
        problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise Refused(reason, f"{what} is damaged: {'; '.join(problems[:3])}")
        return describe(conn)


def held_rows(store: Path) -> dict[str, int]:
    """Rows a store holds beyond what a fresh gateway writes (meta): {} for none or no file."""
    if not store.exists():
        return {}
    try:
        with closing(_read_only(store)) as conn:
            names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            counts = {
                name: conn.execute(f"SELECT COUNT(*) FROM {_quoted(name)}").fetchone()[0]  # noqa: S608
                for (name,) in names
                if name not in ("meta", "sqlite_sequence")
            }
    except sqlite3.Error as exc:
        raise Refused(
            "store_unreadable",
            f"{store} exists but does not read as a store ({exc}): move it aside (with any "
            "-wal and -shm file beside it), then restore again",
        ) from None
    return {name: count for name, count in sorted(counts.items()) if count}


# -- the file: header, chunks ------------------------------------------------------------------


def _bound(header_hash: bytes, index: int, final: bool) -> bytes:
    return header_hash + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _pieces(plain: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """The database compressed, in CHUNK pieces; the last one (maybe empty) marked final."""
    compressor = zlib.compressobj(6)
    pending = bytearray()
    while True:
        block = plain.read(CHUNK)
        pending += compressor.compress(block) if block else compressor.flush()
        while len(pending) > CHUNK:
            yield bytes(pending[:CHUNK]), False
            del pending[:CHUNK]
        if not block:
            yield bytes(pending), True
            return


def seal(plain: Path, out: BinaryIO, facts: dict[str, Any], ring: KeyRing) -> dict[str, Any]:
    """Write the backup of database `plain` to `out` under the ring's current key; the header
    (`facts` plus the format, key id and salt)."""
    key_id, key = ring.current
    salt = os.urandom(32)
    header = {**facts, "format": FORMAT, "key_id": key_id, "salt": base64.b64encode(salt).decode()}
    line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    out.write(MAGIC + line)
    header_hash = hashlib.sha256(MAGIC + line).digest()
    chunks = ChunkSealer(key, salt, _PURPOSE)
    with plain.open("rb") as source:
        for index, (piece, final) in enumerate(_pieces(source)):
            sealed = chunks.seal(index, piece, _bound(header_hash, index, final))
            out.write(len(sealed).to_bytes(4, "big") + sealed)
    return header


# What every header holds, and of which JSON type (an int is a float too).
_FIELDS: dict[str, type] = {"format": int, "created": float, "key_id": str, "salt": str}
_FIELDS |= {"gateway": str, "schema": int, "tables": dict, "digest": str, "size": int}


def _read_header(name: str, source: BinaryIO) -> tuple[dict[str, Any], bytes]:
    magic = source.read(len(MAGIC))
    if magic != MAGIC:
        if magic.startswith(b"CRM-GATEWAY-BACKUP "):
            raise Refused("format_unknown", f"{name} was written by a newer crm-gateway")
        raise Refused("not_a_backup", f"{name} is not a crm-gateway backup")
    line = source.readline(_MAX_HEADER)
    try:
        header = json.loads(line)
        if not isinstance(header, dict):
            raise TypeError
        for field, kind in _FIELDS.items():
            value = header[field]
            if not isinstance(value, kind) and not (kind is float and isinstance(value, int)):
                raise TypeError
        if len(base64.b64decode(header["salt"], validate=True)) != 32:
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise Refused("not_a_backup", f"{name}: the header is unreadable (damaged)") from None
    return header, line


def _frame(name: str, source: BinaryIO, index: int) -> bytes | None:
    """The next sealed chunk; None at the end of the file."""
    length = source.read(4)
    if not length:
        return None
    size = int.from_bytes(length, "big")
    if len(length) < 4 or not _TAG <= size <= CHUNK + _TAG:
        raise Refused("backup_broken", f"{name} was altered or cut short at chunk {index}")
    sealed = source.read(size)
    if len(sealed) < size:
        raise Refused("backup_broken", f"{name} is truncated: chunk {index} is cut short")
    return sealed


def unseal(path: Path, ring: KeyRing, out: BinaryIO) -> dict[str, Any]:
    """Decrypt and decompress `path` into `out`, every chunk checked; its header."""
    name = str(path)
    with path.open("rb") as source:
        header, line = _read_header(name, source)
        key = ring.get(header["key_id"])
        if key is None:
            held = ", ".join(key_id for key_id, _ in ring.keys)
            raise Refused(
                "key_missing",
                f"{name} was encrypted with seal key {header['key_id']!r}, which "
                f"secrets.seal_keys does not hold (it holds {held}): add that key to the ring",
            )
        header_hash = hashlib.sha256(MAGIC + line).digest()
        chunks = ChunkSealer(key, base64.b64decode(header["salt"]), _PURPOSE)
        inflate = zlib.decompressobj()
        written, index = 0, 0
        sealed = _frame(name, source, 0)
        if sealed is None:
            raise Refused("backup_broken", f"{name} is truncated: it holds no data")
        while sealed is not None:
            following = _frame(name, source, index + 1)
            final = following is None
            try:
                piece = chunks.unseal(index, sealed, _bound(header_hash, index, final))
            except SealBroken:
                raise _broken(name, header, chunks, sealed, header_hash, index, final) from None
            data = inflate.decompress(piece)
            written += len(data)
            if written > header["size"]:
                break
            out.write(data)
            sealed, index = following, index + 1
        data = inflate.flush()
        written += len(data)
        out.write(data)
    if written != header["size"] or not inflate.eof or inflate.unused_data:
        raise Refused("backup_broken", f"{name} does not hold what its header says")
    return header


def _broken(
    name: str,
    header: dict[str, Any],
    chunks: ChunkSealer,
    sealed: bytes,
    header_hash: bytes,
    index: int,
    final: bool,
) -> Refused:
    if index == 0:
        return Refused(
            "backup_broken",
            f"{name} does not open with seal key {header['key_id']!r}: it was made under "
            "another key of that id, or its header or first chunk was altered",
        )
    if final:
        try:
            chunks.unseal(index, sealed, _bound(header_hash, index, False))
        except SealBroken:
            pass
        else:
            return Refused("backup_broken", f"{name} is truncated: it ends after chunk {index}")
    return Refused("backup_broken", f"{name} was altered at chunk {index} (changed or reordered)")


# -- placing files ---------------------------------------------------------------------------


def private_dir(near: Path) -> Path:
    """A 0700 temp directory in `near` (the store's folder): plaintext stays where it was."""
    near.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".crm-gateway-backup-", dir=near))


def private_file(path: Path) -> Path:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return path


def write_new(out: Path, force: bool, write: Callable[[BinaryIO], object]) -> int:
    """`out` whole or not at all: a temp file beside it, fsynced, then linked or renamed."""
    descriptor, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    temp = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(temp, out)
        else:
            try:
                os.link(temp, out)  # fails if `out` appeared meanwhile: never clobbered
            except FileExistsError:
                raise Refused("file_exists", f"{out} exists: --force replaces it") from None
            except OSError:  # a filesystem without hard links
                if out.exists():
                    raise Refused("file_exists", f"{out} exists: --force replaces it") from None
                os.replace(temp, out)
        directory = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        temp.unlink(missing_ok=True)
    return out.stat().st_size


def place(verified: Path, store: Path) -> None:
    """Copy the verified database into the store with the backup API, in one write
    transaction through SQLite's locks. Not a rename: a gateway that still has the file open
    would write on into the unlinked old file (and a -wal left beside the new one would be
    replayed into it); this way it reads the restored pages at its next transaction."""
    if not store.exists():
        private_file(store)
    with (
        closing(sqlite3.connect(verified)) as source,
        closing(sqlite3.connect(store, timeout=30.0)) as target,
    ):
        source.backup(target)
        target.execute("PRAGMA journal_mode=WAL")
