"""The seams between the gateway and its state: what every backend must provide."""

from __future__ import annotations

from typing import Protocol


class DurableStore(Protocol):
    """Authenticators, recovery-code hashes, token hashes, audit events: survives restarts."""

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable when it does not."""
        ...

    async def close(self) -> None: ...

    async def add_token(
        self, token_id: str, user: str, token_digest: bytes, label: str, now: float
    ) -> None: ...

    async def revoke_token(self, token_id: str, now: float) -> bool:
        """True when an active token was revoked; False when none had that id."""
        ...

    async def tokens(self) -> list[tuple[str, str, str, float, float | None]]: ...

    async def active_tokens(self) -> tuple[int, list[tuple[str, str, bytes]]]:
        """(version, [(id, user, digest)]): the version changes whenever tokens change."""
        ...

    async def tokens_version(self) -> int: ...


class SharedStore(Protocol):
    """Short-lived state shared by every worker: sessions, replay guards, rate windows."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
