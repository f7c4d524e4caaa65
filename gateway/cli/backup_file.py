"""The backup file: the encrypted chunked format around a store's snapshot, and writing files
whole or not at all. Knows nothing of the config, the command line (gateway/cli/backup.py) or
the store (its snapshot, digest and placing are the store's: gateway/stores, DurableSnapshots;
for SQLite, stores/sqlite_snapshot.py, which also defines the digest).

Format 1: the line `CRM-GATEWAY-BACKUP 1`, one line of JSON header (format, created, key_id,
salt, gateway, schema, tables, digest, size), then chunks `length (4 bytes, big-endian) |
AES-256-GCM ciphertext and tag`. The plaintext is the store's snapshot file (SQLite: the
database file) compressed with zlib, cut in 1 MiB pieces; the last chunk (maybe empty) is
the final one and there always is one.

- Key: HKDF-SHA256(the seal key named by key_id, salt: 32 random bytes from the header, info
  "crm-gateway backup v1"): one key per file and purpose, so the nonce can be the chunk index
  (gateway.crypto.ChunkSealer does the key work).
- Each chunk's associated data is SHA-256(magic + header line) | index | final flag. A changed
  or swapped header fails the first chunk; reordered chunks fail their index; a file cut after
  a chunk fails the final flag (and is named as truncated); flipped bits fail the tag.
- The header's digest and row counts are the store's (DurableSnapshots.examine): a restore
  checks the decrypted snapshot against them before anything is put in place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from gateway.crypto import ChunkSealer, KeyRing
from gateway.errors import Refused, SealBroken

MAGIC = b"CRM-GATEWAY-BACKUP 1\n"
FORMAT = 1
CHUNK = 1 << 20
_PURPOSE = "crm-gateway backup v1"
_MAX_HEADER = 64 * 1024
_TAG = ChunkSealer.TAG_BYTES


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
    """A 0700 temp directory in `near` (the store's workspace): plaintext stays where it was."""
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
