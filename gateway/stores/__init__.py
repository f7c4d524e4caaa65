"""State stores behind Protocols; `open_stores` is the closed registry chosen by config.

Stores are dumb: they keep and return bytes and rows. Expiry semantics, sealing and rate
windows are written once above them. Stores never import the core or the web layer.
"""

from __future__ import annotations

from gateway.clock import Clock
from gateway.config import State
from gateway.stores.memory import MemorySharedStore
from gateway.stores.protocols import (
    Authenticator,
    Device,
    DurableStore,
    LedgerRow,
    SharedStore,
)
from gateway.stores.sqlite import SqliteDurableStore

__all__ = ["Authenticator", "Device", "DurableStore", "LedgerRow", "SharedStore", "open_stores"]


async def open_stores(state: State, clock: Clock) -> tuple[DurableStore, SharedStore]:
    """Open the configured durable and shared stores (config validation limits the kinds)."""
    durable = SqliteDurableStore(state.durable.path)
    await durable.open()
    shared: SharedStore
    if state.shared.type == "redis":
        from gateway.stores.redis import RedisSharedStore  # optional dependency: lazily

        shared = RedisSharedStore(state.shared.url, state.shared.prefix)
        await shared.warn_if_nothing_kept()
    else:
        shared = MemorySharedStore(clock)
    return durable, shared
