"""The durable backends the contract suite runs on, each a real store: SQLite in the test's
folder, PostgreSQL in databases of the test's own on the machine's server (tests/
postgres_server.py: dropped after the test; skipped, saying so, where no PostgreSQL answers).
A backend joins the suite with a name in DURABLE_BACKENDS and its branch in
`durable_backend`; the tests themselves do not change."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.config.model import StoreConfig
from gateway.stores import DurableStore, open_durable
from tests.postgres_server import Databases, holds_store, sql

DURABLE_BACKENDS = ["sqlite", "postgres"]


@dataclass
class DurableBackend:
    """One backend under test: its settings, how to tell whether the store is there, and the
    one reach past the store the suite needs (`refuse`: from now on the store refuses to add
    an audit event with this name, as a full disk or a violated constraint would)."""

    settings: StoreConfig
    exists: Callable[[], bool]
    refuse: Callable[[str], Awaitable[None]]
    opened: list[DurableStore] = field(default_factory=list)

    async def open(self, *, create: bool = True) -> DurableStore:
        """Another connection to the same store, through the registry (closed after the test);
        as a second worker or host holds it."""
        store = await open_durable(self.settings, create=create)
        self.opened.append(store)
        return store


def _sqlite(path: Path) -> DurableBackend:
    async def refuse(name: str) -> None:
        quoted = name.replace("'", "''")
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(
                f"CREATE TRIGGER refuse_{len(quoted)}_{abs(hash(name))} BEFORE INSERT ON"
                f" audit_events WHEN NEW.name = '{quoted}'"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )

    return DurableBackend(StoreConfig("sqlite", path=str(path)), path.exists, refuse)


def _postgres(url: str) -> DurableBackend:
    """A database of the test's own, empty: the DBA made it, the gateway makes the tables."""

    async def refuse(name: str) -> None:
        quoted = name.replace("'", "''")
        sql(
            url,
            "CREATE OR REPLACE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            f"CREATE TRIGGER refuse_{abs(hash(name))} BEFORE INSERT ON audit_events FOR EACH ROW"
            f" WHEN (NEW.name = '{quoted}') EXECUTE FUNCTION test_refuse()",
        )

    return DurableBackend(
        StoreConfig("postgres", url=url, max_connections=4), lambda: holds_store(url), refuse
    )


@pytest.fixture(params=DURABLE_BACKENDS)
async def durable_backends(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[str], DurableBackend]]:
    """Makes stores of one backend, each by its name, none there yet (as for a new host)."""
    made: list[DurableBackend] = []
    databases: Databases | None = None
    if request.param == "postgres":
        databases = request.getfixturevalue("postgres_databases")

    def make(name: str) -> DurableBackend:
        if request.param == "sqlite":
            backend = _sqlite(tmp_path / name / "gateway.db")
        elif request.param == "postgres" and databases is not None:
            backend = _postgres(databases.create(name))
        else:  # pragma: no cover - a name in the list without its branch
            raise AssertionError(f"no fixture for the durable backend {request.param!r}")
        made.append(backend)
        return backend

    yield make
    for backend in made:
        for store in backend.opened:
            await store.close()


@pytest.fixture
def durable_backend(durable_backends: Callable[[str], DurableBackend]) -> DurableBackend:
    return durable_backends("state")


@pytest.fixture
async def durable(durable_backend: DurableBackend) -> DurableStore:
    """A new, empty store of the backend, open (made, as the running gateway makes it)."""
    return await durable_backend.open()
