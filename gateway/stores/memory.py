"""In-process shared store: the single-instance default. Not shared between processes."""

from __future__ import annotations


class MemorySharedStore:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
