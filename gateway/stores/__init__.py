"""State stores behind Protocols, and the closed registries that config chooses them from:
the one place outside a backend's own module that names one. Everything else opens stores
through the functions here and holds them as `DurableStore` / `SharedStore`.

Stores are dumb: they keep and return bytes and rows. Expiry semantics, sealing and rate
windows are written once above them. Stores never import the core or the web layer.

Adding a backend (say `postgres` for the durable state): a module in gateway/stores/ whose
`DURABLE` is a DurableKind (how to open it, snapshot it for backups, and name it), a line in
DURABLE_BACKENDS below, its name in gateway.config.model.DURABLE_KINDS with the checks of its keys,
and its fixture in tests/contracts/conftest.py: the durable contract suite is its definition
of done.
"""

from __future__ import annotations

import importlib

from gateway.clock import Clock
from gateway.config.model import State, StoreConfig
from gateway.stores.kinds import Contents, DurableKind, DurableSnapshots, Migration, SharedKind
from gateway.stores.protocols import (
    DUPLICATE,
    STORE_MISSING,
    AuditQuery,
    Authenticator,
    Device,
    DurableStore,
    InProcessStore,
    IntervalChoice,
    LedgerRow,
    SharedStore,
)

__all__ = [
    "DUPLICATE",
    "STORE_MISSING",
    "AuditQuery",
    "Authenticator",
    "Contents",
    "Device",
    "DurableSnapshots",
    "DurableStore",
    "InProcessStore",
    "IntervalChoice",
    "LedgerRow",
    "Migration",
    "SharedStore",
    "durable_address",
    "durable_snapshots",
    "migrate_durable",
    "open_durable",
    "open_shared",
    "open_stores",
]

# `type:` → the module that implements it, imported only when chosen (a backend's driver is
# an optional dependency). Config validation accepts the same names (gateway.config.model's
# DURABLE_KINDS and SHARED_KINDS); tests/stores/test_stores_registry.py keeps the two lists equal.
DURABLE_BACKENDS: dict[str, str] = {
    "sqlite": "gateway.stores.sqlite",
    "postgres": "gateway.stores.postgres",
}
SHARED_BACKENDS: dict[str, str] = {
    "memory": "gateway.stores.memory",
    "redis": "gateway.stores.redis",
}


def durable_kind(settings: StoreConfig) -> DurableKind:
    """The registry's entry for `settings.type` (config validation limits the kinds)."""
    kind = getattr(importlib.import_module(DURABLE_BACKENDS[settings.type]), "DURABLE", None)
    if not isinstance(kind, DurableKind):
        raise TypeError(f"{DURABLE_BACKENDS[settings.type]} has no DURABLE = DurableKind(…)")
    return kind


def shared_kind(settings: StoreConfig) -> SharedKind:
    kind = getattr(importlib.import_module(SHARED_BACKENDS[settings.type]), "SHARED", None)
    if not isinstance(kind, SharedKind):
        raise TypeError(f"{SHARED_BACKENDS[settings.type]} has no SHARED = SharedKind(…)")
    return kind


async def open_durable(settings: StoreConfig, *, create: bool) -> DurableStore:
    """The configured durable store, open. `create`: make it when missing, for the running
    gateway and the demo, which own it. Admin commands pass False: a command pointed at the
    wrong place must say so (StoreUnavailable, reason STORE_MISSING), not act on a new empty
    store and report success."""
    return await durable_kind(settings).open(settings, create)


def durable_snapshots(settings: StoreConfig) -> DurableSnapshots:
    """The configured durable store as one file, for backup and restore (opens nothing)."""
    return durable_kind(settings).snapshots(settings)


async def migrate_durable(settings: StoreConfig) -> Migration | None:
    """Bring the configured store's schema up to date (`crm-gateway store migrate`); None for a
    kind whose store does that itself whenever it is opened (SQLite)."""
    migrate = durable_kind(settings).migrate
    return None if migrate is None else await migrate(settings)


def durable_address(settings: StoreConfig) -> tuple[str, str]:
    """(the store as an operator knows it, the config key that named it): for messages."""
    return durable_kind(settings).address(settings)


async def open_shared(settings: StoreConfig, clock: Clock) -> SharedStore:
    return await shared_kind(settings).open(settings, clock)


async def open_stores(state: State, clock: Clock) -> tuple[DurableStore, SharedStore]:
    """The running gateway's two stores, open (the durable one made when missing)."""
    durable = await open_durable(state.durable, create=True)
    try:
        shared = await open_shared(state.shared, clock)
    except BaseException:
        await durable.close()
        raise
    return durable, shared
