"""API tokens: where a request carries one, how it is stored (a digest), and the in-memory
view every request consults (refreshed from the durable store when it changes).

Tokens are long random strings chosen by their owners' systems, so a SHA-256 digest is the
right storage: a slow password hash would put ~100 ms on every API call for no gain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from multidict import MultiMapping

from gateway.errors import AmbiguousCredential, AmbiguousField
from gateway.fields import query_values
from gateway.headers import fold
from gateway.policy.model import TokenLocation

MIN_TOKEN_LENGTH = 16


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class CredentialPlaces:
    """The policy's token places, worked out once per policy: every spelling of each header
    (CGI and WSGI servers read `X_API_Key` as `X-API-Key`) and the schemes it may carry."""

    headers: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (spellings, schemes)
    queries: tuple[str, ...]


def credential_places(locations: tuple[TokenLocation, ...]) -> CredentialPlaces:
    schemes: dict[str, list[str]] = {}
    raw: set[str] = set()  # headers read whole (no scheme)
    queries: list[str] = []
    for place in locations:
        if place.query:
            queries.append(place.query)
            continue
        key = fold(place.header)
        schemes.setdefault(key, [])
        if place.schemes:
            schemes[key].extend(s for s in place.schemes if s not in schemes[key])
        else:
            raw.add(key)
    headers = tuple(
        (_spellings(name), () if name in raw else tuple(found)) for name, found in schemes.items()
    )
    return CredentialPlaces(headers, tuple(dict.fromkeys(queries)))


def _spellings(name: str) -> tuple[str, ...]:
    """`x-api-key` → x-api-key, x_api-key, x-api_key, x_api_key (case is the multidict's)."""
    parts = name.split("-")
    if len(parts) > 6:  # no real header; avoid 2**n spellings
        return (name, name.replace("-", "_"))
    found = [parts[0]]
    for part in parts[1:]:
        found = [f"{head}{sep}{part}" for head in found for sep in ("-", "_")]
    return tuple(found)


def find_credential(
    headers: MultiMapping[str],
    raw_query: str,
    places: CredentialPlaces,
) -> str | None:
    """The one API credential a request carries, None when it carries none, or
    AmbiguousCredential: a header or query key given twice, credentials in two places, or a
    scheme the policy does not judge in a header it reads (`Authorization: Basic` where only
    Bearer is configured would reach the CRM unjudged)."""
    found: list[str] = []
    for spellings, schemes in places.headers:
        for spelling in spellings:
            values = headers.getall(spelling, None)
            if values:  # most requests carry none: no generator made for them
                found.extend(_from_header(value, schemes) for value in values if value.strip())
    if places.queries and raw_query:
        for name in places.queries:
            try:
                found.extend(v for v in query_values(raw_query, name) if v)
            except AmbiguousField as exc:
                raise AmbiguousCredential(str(exc)) from None
    if len(found) > 1:
        raise AmbiguousCredential(f"{len(found)} API credentials in one request")
    return found[0] if found else None


def _from_header(raw: str, schemes: tuple[str, ...]) -> str:
    if not schemes:
        return raw.strip()
    scheme, _, rest = raw.strip().partition(" ")
    matched = next((s for s in schemes if s.lower() == scheme.lower()), None)
    if matched is None or not rest.strip():
        raise AmbiguousCredential(f"a credential scheme the policy does not judge: {scheme[:16]!r}")
    if matched == "Basic":
        try:
            return base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return rest.strip()  # still a credential: judged as an unknown token
    return rest.strip()


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
        """The registered token's owner, or None. A `user:password` pair (Basic) is looked
        up whole and by each half, as CRMs read a token from either: the owner of any
        registered match judges it, and halves that name two owners read two ways."""
        found = {self._by_digest.get(digest(candidate)) for candidate in _candidates(token)}
        found.discard(None)
        if len(found) > 1:
            raise AmbiguousCredential("the parts of one credential are two users' tokens")
        return found.pop() if found else None

    def __len__(self) -> int:
        return len(self._by_digest)


def _candidates(token: str) -> tuple[str, ...]:
    user, colon, password = token.partition(":")
    return tuple(dict.fromkeys(t for t in (token, user, password) if t)) if colon else (token,)
