"""Per-worker memos of pure answers (a parsed session, a cookie header's reading, a decision,
a header plan): a dict that keeps at most `most` entries, the oldest leaving first."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, most: int) -> None:
    """Add to `cache`; when it holds `most` entries already, the oldest goes first."""
    if key not in cache and len(cache) >= most:
        del cache[next(iter(cache))]
    cache[key] = value
