"""API tokens: where a request carries one, how it is stored (a digest), and the in-memory
view every request consults (refreshed from the durable store when it changes).

Tokens are long random strings chosen by their owners' systems, so a SHA-256 digest is the
right storage: a slow password hash would put ~100 ms on every API call for no gain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.policy import TokenLocation

MIN_TOKEN_LENGTH = 16


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def find_credential(
    headers: Mapping[str, str],
    query: Callable[[], Mapping[str, str]],
    locations: tuple[TokenLocation, ...],
) -> str | None:
    """The credential of an API request, from the first configured place that has one.

    `query` is called only when a place is a query parameter: most requests need no parse."""
    for place in locations:
        if place.query:
            value = query().get(place.query)
            if value:
                return value
            continue
        raw = headers.get(place.header)
        if not raw:
            continue
        if not place.schemes:
            return raw.strip()
        scheme, _, rest = raw.strip().partition(" ")
        matched = next((s for s in place.schemes if s.lower() == scheme.lower()), None)
        if matched is None or not rest.strip():
            continue
        if matched == "Basic":
            try:
                return base64.b64decode(rest.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return rest.strip()  # still a credential: judged as an unknown token
        return rest.strip()
    return None


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user: str


class TokenTable:
    """Digest → owner, swapped whole when the store says tokens changed."""

    def __init__(self) -> None:
        self.version = -1
        self._by_digest: dict[bytes, TokenRecord] = {}

    def replace(self, version: int, rows: list[tuple[str, str, bytes]]) -> None:
        self._by_digest = {row[2]: TokenRecord(row[0], row[1]) for row in rows}
        self.version = version

    def lookup(self, token: str) -> TokenRecord | None:
        return self._by_digest.get(digest(token))

    def __len__(self) -> int:
        return len(self._by_digest)
