"""The seams between the gateway and its state: what every backend must provide."""

from __future__ import annotations

from typing import Protocol


class DurableStore(Protocol):
    """Authenticators, recovery-code hashes, token hashes, audit events: survives restarts."""

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable when it does not."""
        ...

    async def close(self) -> None: ...


class SharedStore(Protocol):
    """Short-lived state shared by every worker: sessions, replay guards, rate windows."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
