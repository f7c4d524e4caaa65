"""What a backend module gives the store registry (gateway/stores/__init__.py): how to open
it and, for a durable store, how to take and put back a snapshot of it for `crm-gateway
backup` and `restore`. No implementation here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from gateway.clock import Clock
from gateway.config.model import StoreConfig
from gateway.stores.protocols import DurableStore, SharedStore

# -- backup and restore: the durable store as one file ----------------------------------------


@dataclass(frozen=True)
class Contents:
    """What a snapshot (or a store) holds, to compare two without reading them again."""

    digest: str  # "sha256:…" over the schema and every row: equal digests, equal contents
    tables: dict[str, int]  # rows per table
    schema: int  # the store's schema version; 0: not a crm-gateway store
    # "sha256:…" per table over its rows (what `store copy` compares table by table)
    table_digests: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


class DurableSnapshots(Protocol):
    """The durable store's whole contents as one file, for `crm-gateway backup` and `restore`
    (gateway.cli.backup decides and reports; gateway.cli.backup_file seals the file): a copy
    consistent at one moment while gateways go on writing, checked, and put back in place.

    Blocking calls, for a command's thread, never a gateway's event loop. Trouble with the
    store or a snapshot raises errors.Refused with a reason code; OSError is left to the
    caller (a folder it may not write, a full disk: it names the file)."""

    name: str  # the store as an operator knows it: its file, or its server and database
    key: str  # the config key that names it, for messages: "state.durable.path"
    schema: int  # the newest store schema this code knows

    def exists(self) -> bool:
        """Whether the store is there (a missing one is neither backed up nor written to)."""
        ...

    def workspace(self) -> Path:
        """A folder for the plaintext snapshot while it is worked on: one that already holds
        the store's data in plaintext (the SQLite file's), so plaintext goes nowhere new."""
        ...

    def in_use(self) -> bool:
        """Whether a gateway may have the store open now (asked before the store is read)."""
        ...

    def take(self, into: Path) -> None:
        """Write a consistent snapshot of the store into the file `into` (refused with
        `store_unreadable` when the store does not read as one)."""
        ...

    def examine(self, snapshot: Path, what: str, reason: str) -> Contents:
        """Check a snapshot file whole, refused with `reason` naming it as `what` when it is
        damaged; its contents. A snapshot of something that is not a store has schema 0."""
        ...

    def examine_store(self, what: str, reason: str) -> Contents:
        """The same of the store itself: a restore is verified by reading it back."""
        ...

    def held_rows(self) -> dict[str, int]:
        """Rows per table the store holds beyond what a fresh gateway writes, tables with
        none left out: {} for none, or for no store."""
        ...

    def put(self, snapshot: Path) -> None:
        """Replace the store's contents with a checked snapshot (making the store when it is
        missing), so that a gateway that still holds it open reads the restored contents."""
        ...


# -- what a backend module gives the registry ---------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """What `crm-gateway store migrate` found and did to a store's schema."""

    before: int  # the schema found (0: none yet, an empty database)
    after: int  # the schema now: the newest this code knows
    steps: tuple[str, ...]  # what was done, a line each (none: it was up to date)


class _Opens(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


S = TypeVar("S", bound=_Opens)


async def opened(store: S) -> S:
    """`store` opened; closed again when opening fails, so a half-open store gives back its
    thread or its pool before the error goes up."""
    try:
        await store.open()
    except BaseException:
        await store.close()
        raise
    return store


@dataclass(frozen=True)
class DurableKind:
    """One `state.durable.type`: its module's `DURABLE`. `open` returns a store ready to use;
    with `create` False (admin commands) it never makes one and raises StoreUnavailable with
    reason STORE_MISSING when there is none. `address` names the store for people: (the
    store as an operator knows it, the config key that named it). `migrate`, for a store
    whose schema is brought up to date by a command rather than by the gateway opening it:
    takes the store to the newest schema (StoreUnavailable when it cannot: unreachable, or a
    schema newer than this code)."""

    open: Callable[[StoreConfig, bool], Awaitable[DurableStore]]
    snapshots: Callable[[StoreConfig], DurableSnapshots]
    address: Callable[[StoreConfig], tuple[str, str]]
    migrate: Callable[[StoreConfig], Awaitable[Migration]] | None = None


@dataclass(frozen=True)
class SharedKind:
    """One `state.shared.type`: its module's `SHARED`. `open` returns a store ready to use."""

    open: Callable[[StoreConfig, Clock], Awaitable[SharedStore]]
