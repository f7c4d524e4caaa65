"""Recovery codes: a set of ten, shown once, kept only as digests, each good once."""

from __future__ import annotations

from gateway.crypto import new_recovery_code, normalize_recovery_code, recovery_digest

COUNT = 10


def new_codes() -> list[str]:
    codes: set[str] = set()
    while len(codes) < COUNT:
        codes.add(new_recovery_code())
    return sorted(codes)


def digests(user: str, codes: list[str]) -> list[bytes]:
    return [recovery_digest(user, code) for code in codes]


def looks_like_code(text: str) -> bool:
    return len(normalize_recovery_code(text)) == 10
