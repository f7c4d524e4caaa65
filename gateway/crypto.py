"""Keys, sealing and hashing: AES-GCM with key ids, argon2id passwords, recovery-code digests.

Owns every use of a key. Knows nothing about where keys are configured (gateway.config.signin
reads the text) or what is sealed (sessions, authenticators, held CRM cookies are callers).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.errors import KeyProblem, SealBroken

if TYPE_CHECKING:
    from argon2 import PasswordHasher
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# cryptography and argon2 are imported at their first use, not with this module: a gateway
# without sign-in never seals nor hashes, and their native libraries would be about 7 MB of
# every worker's memory at rest.

_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
KEY_BYTES = 32


@dataclass(frozen=True)
class KeyRing:
    """Named keys, newest first: the first writes (signs, seals); all of them read."""

    keys: tuple[tuple[str, bytes], ...]

    def __repr__(self) -> str:
        # Configs and rings reach logs and tracebacks: show the ids, never the keys.
        return f"KeyRing(ids={tuple(name for name, _ in self.keys)!r})"

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[0]

    def get(self, key_id: str) -> bytes | None:
        for name, key in self.keys:
            if name == key_id:
                return key
        return None


def parse_keys(text: str) -> KeyRing:
    """`id:base64url` entries separated by newlines, spaces or commas; `#` starts a comment."""
    entries: list[tuple[str, bytes]] = []
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0]
        for token in line.replace(",", " ").split():
            name, sep, encoded = token.partition(":")
            if not sep or not _KEY_ID.match(name):
                raise KeyProblem(f"entry {len(entries) + 1} must look like id:base64key")
            try:
                # validate: the default silently drops characters outside the alphabet.
                padded = encoded + "=" * (-len(encoded) % 4)
                key = base64.b64decode(padded, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                raise KeyProblem(f"key {name!r} is not base64") from None
            if len(key) < KEY_BYTES:
                raise KeyProblem(f"key {name!r} has {len(key)} bytes; at least {KEY_BYTES} needed")
            if any(existing == name for existing, _ in entries):
                raise KeyProblem(f"key id {name!r} appears twice")
            entries.append((name, key))
    if not entries:
        raise KeyProblem("holds no key")
    return KeyRing(tuple(entries))


def new_key_line(key_id: str) -> str:
    """One fresh entry for a key file: `crm-gateway keys generate` and the demo use it."""
    if not _KEY_ID.match(key_id):
        raise KeyProblem(f"key id {key_id!r} must be 1-32 of A-Z a-z 0-9 _ . -")
    encoded = base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")
    return f"{key_id}:{encoded}"


class Sealer:
    """AES-256-GCM. A sealed value is `key id | 0x00 | nonce(12) | ciphertext+tag`, so the key
    that opens it is known and old keys keep reading while new values use the current one.
    `purpose` is bound as associated data: a value sealed for one use never opens as another."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def seal(self, plaintext: bytes, purpose: str) -> bytes:
        key_id, key = self.ring.current
        nonce = os.urandom(12)
        body = _aesgcm(key[:KEY_BYTES]).encrypt(nonce, plaintext, purpose.encode())
        return key_id.encode() + b"\x00" + nonce + body

    def key_id(self, sealed: bytes) -> str:
        return sealed.split(b"\x00", 1)[0].decode("ascii", "replace")

    def unseal(self, sealed: bytes, purpose: str) -> bytes:
        key_id, sep, rest = sealed.partition(b"\x00")
        key = self.ring.get(key_id.decode("ascii", "replace")) if sep else None
        if key is None or len(rest) < 12 + 16:
            raise SealBroken("sealed under an unknown key, or truncated")
        from cryptography.exceptions import InvalidTag

        try:
            return _aesgcm(key[:KEY_BYTES]).decrypt(rest[:12], rest[12:], purpose.encode())
        except InvalidTag:
            raise SealBroken("does not open: tampered or sealed for another purpose") from None


def _aesgcm(key: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def subkey(key: bytes, purpose: str) -> bytes:
    """A key for one purpose (HMAC-SHA256 of the purpose under `key`): the one-time codes'
    HMAC key comes from the seal key this way, never the seal key itself."""
    return hmac.new(key, purpose.encode(), "sha256").digest()


class ChunkSealer:
    """AES-256-GCM over a stream cut in chunks (a backup file), under a key derived with
    HKDF-SHA256 from a ring key, a random salt and `purpose`: one key per stream, so a chunk's
    nonce is its index and never repeats. `bound` (associated data) ties a chunk to its place."""

    TAG_BYTES = 16  # a sealed chunk is this much longer than its plaintext

    def __init__(self, key: bytes, salt: bytes, purpose: str) -> None:
        # The whole ring key (not key[:KEY_BYTES] as Sealer uses): backups already written
        # were derived this way.
        from cryptography.hazmat.primitives.hashes import SHA256
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        derive = HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=salt, info=purpose.encode())
        self._aead = _aesgcm(derive.derive(key))

    @staticmethod
    def _nonce(index: int) -> bytes:
        return index.to_bytes(12, "big")

    def seal(self, index: int, plaintext: bytes, bound: bytes) -> bytes:
        return self._aead.encrypt(self._nonce(index), plaintext, bound)

    def unseal(self, index: int, sealed: bytes, bound: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(self._nonce(index), sealed, bound)
        except InvalidTag:
            raise SealBroken(f"chunk {index} does not open: altered, moved, other key") from None


# -- secrets shown to people ----------------------------------------------------------------

_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed back


def new_recovery_code() -> str:
    """`xxxxx-xxxxx`: 10 symbols of 31, about 49 bits; easy to type from paper."""
    symbols = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{symbols[:5]}-{symbols[5:]}"


def normalize_recovery_code(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def recovery_digest(user: str, code: str) -> bytes:
    """Codes carry ~49 bits and are single use: a salted SHA-256 (user as salt) is enough,
    and lets a code be found by digest without trying every stored hash."""
    data = f"crm-gateway recovery\x00{user}\x00{normalize_recovery_code(code)}"
    return hashlib.sha256(data.encode()).digest()


def same(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison for codes and tokens."""
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


# -- passwords (login.mode: gateway) --------------------------------------------------------


@functools.cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    # RFC 9106 second recommended option (64 MiB, 3 passes), one lane per core we have.
    return PasswordHasher(time_cost=3, memory_cost=65536, parallelism=2)


_DUMMY: list[str] = []  # made on first use: 64 MiB of argon2 work is not an import cost


def _dummy_hash() -> str:
    """A real hash of a random password: unknown users cost the same time as known ones."""
    if not _DUMMY:
        _DUMMY.append(_hasher().hash(secrets.token_hex(16)))
    return _DUMMY[0]


def hash_password(password: str) -> str:
    """Slow on purpose (~0.1-0.3 s): callers run it off the event loop."""
    return _hasher().hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Blocking; `stored` None (unknown user) still spends the full time."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return _hasher().verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def is_password_hash(text: str) -> bool:
    return text.startswith("$argon2id$")
