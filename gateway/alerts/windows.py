"""Counting audit events in fixed windows in the shared store, so that every worker counts
together: a counter per window, the first events kept as samples for the alert, and (for
ip_denied) the addresses seen. Keys hold a digest or a number, never a raw user name."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from gateway.config.alerts import Threshold
from gateway.model import AuditEvent
from gateway.stores.protocols import SharedStore

SAMPLE_EVENTS = 10  # events of a window kept for the alert
SAMPLE_ADDRESSES = 20  # addresses named in an ip_denied alert
KEY = "alert:"


def window_key(rule: str, scope: str, threshold: Threshold, event: AuditEvent) -> str:
    # The event's own time places it: every worker agrees on the window.
    return f"{KEY}{rule}:{scope}:{int(event.time // threshold.within)}"


def encode(event: AuditEvent) -> bytes:
    return json.dumps(dataclasses.asdict(event), ensure_ascii=False).encode()


def decode(raw: bytes) -> AuditEvent | None:
    try:
        found = json.loads(raw)
        found["details"] = tuple((str(k), v) for k, v in found.get("details", ()))
        return AuditEvent(**found)
    except (ValueError, TypeError, AttributeError):  # another version's shape: only a sample
        return None


class Windows:
    def __init__(self, shared: SharedStore) -> None:
        self._shared = shared

    async def count(self, key: str) -> int:
        """The window's count so far, without counting."""
        return int(await self._shared.get(key) or b"0")

    async def tally(self, key: str, threshold: Threshold, event: AuditEvent) -> int:
        """Count the event in its window; keep it as a sample while the window is young."""
        count = await self._shared.incr(key, threshold.within)
        if count < threshold.count and count <= SAMPLE_EVENTS:
            await self._shared.put(f"{key}:e{count}", encode(event), threshold.within)
        return count

    async def samples(self, key: str, count: int, event: AuditEvent) -> tuple[AuditEvent, ...]:
        """The first events of the window (as many as were kept) and the one that raised it."""
        kept = min(count - 1, SAMPLE_EVENTS)
        found = await asyncio.gather(*(self._shared.get(f"{key}:e{n}") for n in range(1, kept + 1)))
        earlier = [e for e in (decode(raw) for raw in found if raw is not None) if e is not None]
        return (*earlier, event)

    async def note_address(self, key: str, ip: str, ttl: float) -> None:
        """One counter per address, and the first few addresses in numbered slots: the worker
        that raises the alert can list what every worker saw."""
        if await self._shared.incr(f"{key}:ip:{ip}", ttl) != 1:
            return
        slot = await self._shared.incr(f"{key}:ips", ttl)
        if slot <= SAMPLE_ADDRESSES:
            await self._shared.put(f"{key}:ip#{slot}", ip.encode(), ttl)

    async def addresses(self, key: str) -> tuple[tuple[tuple[str, int], ...], int]:
        total = int(await self._shared.get(f"{key}:ips") or b"0")
        slots = range(1, min(total, SAMPLE_ADDRESSES) + 1)
        named = await asyncio.gather(*(self._shared.get(f"{key}:ip#{n}") for n in slots))
        ips = [raw.decode() for raw in named if raw is not None]
        counts = await asyncio.gather(*(self._shared.get(f"{key}:ip:{ip}") for ip in ips))
        found = [(ip, int(raw or b"0")) for ip, raw in zip(ips, counts, strict=True)]
        return tuple(sorted(found, key=lambda pair: (-pair[1], pair[0]))), total
