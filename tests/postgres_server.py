"""A real PostgreSQL for the tests: the machine's on 127.0.0.1:5432 (trust auth, user
postgres; CRM_GATEWAY_TEST_POSTGRES names another maintenance URL). Each test gets databases
of its own, with names no other run uses, dropped when it ends: nothing is left behind on the
machine's server. Where no PostgreSQL answers, the tests that need one are skipped, loudly."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

T = TypeVar("T")
ADMIN_URL = os.environ.get(
    "CRM_GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_checked: list[str] = []  # once per run: "" when PostgreSQL answers, else why not


def blocking(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code or from inside a running loop (a loop of its own)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(lambda: asyncio.run(work())).result()


async def _admin() -> asyncpg.Connection[asyncpg.Record]:
    return await asyncpg.connect(ADMIN_URL, timeout=5)


def why_not_there() -> str:
    """'' when the maintenance URL answers; otherwise the reason, for the skip."""
    if not _checked:

        async def look() -> str:
            try:
                conn = await _admin()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                return f"{type(exc).__name__}: {exc}"
            await conn.close()
            return ""

        _checked.append(blocking(look))
    return _checked[0]


def url_of(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{database}"))


def sql(url: str, *statements: str) -> list[list[tuple[Any, ...]]]:
    """Statements run straight on a database, outside our code (a test's own look or reach)."""

    async def run() -> list[list[tuple[Any, ...]]]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return [[tuple(r) for r in await conn.fetch(s)] for s in statements]
        finally:
            await conn.close()

    return blocking(run)


def holds_store(url: str) -> bool:
    """Whether the database holds crm-gateway's tables (read without our code)."""
    return sql(url, "SELECT to_regclass('meta') IS NOT NULL")[0][0][0] is True


class Databases:
    """Databases made for one test, each with a name of its own; `drop` removes them all
    (connections still open to them are ended: WITH (FORCE))."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self._run = secrets.token_hex(4)

    def create(self, name: str) -> str:
        """A new, empty database; its URL."""
        database = f"crmgw_test_{os.getpid()}_{self._run}_{len(self.made)}_{name}"[:63].lower()

        async def make() -> None:
            conn = await _admin()
            try:
                await conn.execute(f'CREATE DATABASE "{database}"')
            finally:
                await conn.close()

        blocking(make)
        self.made.append(database)
        return url_of(database)

    def drop(self) -> None:
        async def drop_all() -> None:
            conn = await _admin()
            try:
                for database in self.made:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await conn.close()

        if self.made:
            blocking(drop_all)
        self.made.clear()


@pytest.fixture
def postgres_databases() -> Iterator[Databases]:
    """Databases on the machine's PostgreSQL, dropped after the test; skipped (with the
    reason) only where no PostgreSQL answers."""
    reason = why_not_there()
    if reason:
        pytest.skip(f"NO POSTGRESQL at {ADMIN_URL} ({reason}): the postgres backend is untested")
    databases = Databases()
    try:
        yield databases
    finally:
        databases.drop()
