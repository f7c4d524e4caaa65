"""The PostgreSQL durable store's connections: how the settings become a connection (URL,
password, timeouts), the bounded pool every worker holds, and the one place where whatever
asyncpg or the network raises becomes StoreUnavailable. gateway.stores.postgres builds the
store on it; gateway.stores.postgres_schema checks the schema it opens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.config.model import StoreConfig
from gateway.errors import StoreUnavailable
from gateway.metrics import STORE_SECONDS
from gateway.stores.postgres_schema import Conn, prepare
from gateway.stores.protocols import DUPLICATE

T = TypeVar("T")

# How the gateway's connections show in pg_stat_activity (`backup` and `restore` look for
# them to warn that a gateway holds the store); commands name themselves apart.
APPLICATION = "crm-gateway"

# Everything a call may raise for the store's sake: the server's errors (a statement timed
# out, a constraint, the server shutting down), the driver's (a connection lost, the pool
# closing, a value it cannot send), the network's (refused, reset, no such host, a timeout:
# all OSError). Each becomes StoreUnavailable where it enters; nothing else is caught.
FAILURES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    UnicodeError,
)


def shown_url(url: str) -> str:
    """The URL as an operator may see it: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if user else f"***@{host}"))


def problem(exc: BaseException) -> str:
    """asyncpg's words for a failure, in one line (its class when it says nothing)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def translated(name: str, exc: BaseException) -> StoreUnavailable:
    duplicate = isinstance(exc, asyncpg.UniqueViolationError)
    return StoreUnavailable(
        f"postgres {name}: {problem(exc)}", reason=DUPLICATE if duplicate else None
    )


def connect_options(settings: StoreConfig, *, statement_timeout: float | None = None) -> Any:
    """Keyword arguments for asyncpg.connect and create_pool. The statement timeout is the
    server's (it cancels the statement and the call fails), with a client-side one a little
    longer for a server that stops answering altogether; 0 for none (backups, copies)."""
    seconds = settings.statement_timeout if statement_timeout is None else statement_timeout
    options: dict[str, Any] = {
        "dsn": settings.url,
        "timeout": settings.connect_timeout,
        "command_timeout": seconds + 2.0 if seconds else None,
        "server_settings": {
            "application_name": APPLICATION,
            "statement_timeout": str(int(seconds * 1000)),
            # A transaction left open by a stalled client holds its locks for this long at most.
            "idle_in_transaction_session_timeout": "60000",
        },
    }
    if settings.password:
        options["password"] = settings.password
    return options


async def connect(
    settings: StoreConfig, *, statement_timeout: float | None = None, application: str = ""
) -> asyncpg.Connection[asyncpg.Record]:
    """One connection of its own (commands: migrate, snapshots), failures translated."""
    options = connect_options(settings, statement_timeout=statement_timeout)
    if application:
        options["server_settings"]["application_name"] = application
    try:
        return await asyncpg.connect(**options)
    except FAILURES as exc:
        raise translated(shown_url(settings.url), exc) from exc


async def finish(conn: Conn) -> None:
    """Close a connection of its own, politely but within 5 s (the server may be gone)."""
    try:
        await asyncio.wait_for(conn.close(), 5.0)
    except FAILURES:
        conn.terminate()


async def _keep_session(conn: Conn) -> None:
    """The pool's reset on release: nothing. asyncpg's default sends `RESET ALL` and more,
    a round trip per call; the store leaves no session state behind (no LISTEN, no session
    locks, no SET), and an open transaction is still rolled back before this runs."""


def rows_changed(status: str) -> int:
    """The count in a command's status ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresBase:
    def __init__(self, settings: StoreConfig, *, create: bool = True) -> None:
        self._settings = settings
        self._create = create
        self.name = shown_url(settings.url)
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._closed = False

    async def open(self) -> None:
        """The pool (one connection made at once: an unreachable server fails the start),
        and the schema checked, or made in an empty database when `create`."""
        try:
            self._pool = await asyncpg.create_pool(
                **connect_options(self._settings),
                min_size=1,
                max_size=self._settings.max_connections,
                # Idle connections are closed after a while, and a connection the server
                # dropped (a restart) is noticed on the socket and made anew at the next use.
                max_inactive_connection_lifetime=300.0,
                reset=_keep_session,
            )
        except FAILURES as exc:
            raise translated(self.name, exc) from exc
        await self._run("open", lambda conn: prepare(conn, self.name, create=self._create))

    async def _run(self, operation: str, work: Callable[[Conn], Awaitable[T]]) -> T:
        """`work` on a pooled connection; every failure StoreUnavailable (reason DUPLICATE for
        a row that breaks a uniqueness rule). Waiting for a connection counts as the call."""
        if self._closed or self._pool is None:
            raise StoreUnavailable(f"postgres {self.name}: the store is closed")
        started = time.perf_counter()
        try:
            async with self._pool.acquire(timeout=self._settings.connect_timeout) as conn:
                return await work(conn)
        except FAILURES as exc:
            raise translated(self.name, exc) from exc
        finally:
            STORE_SECONDS.labels("durable", operation).observe(time.perf_counter() - started)

    async def fetch(self, operation: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
        rows = await self._run(operation, lambda conn: conn.fetch(sql, *args))
        return [tuple(row) for row in rows]

    async def fetchval(self, operation: str, sql: str, *args: object) -> Any:
        return await self._run(operation, lambda conn: conn.fetchval(sql, *args))

    async def execute(self, operation: str, sql: str, *args: object) -> int:
        """One statement (its own transaction); the rows it changed."""
        status = await self._run(operation, lambda conn: conn.execute(sql, *args))
        return rows_changed(status)

    async def ping(self) -> None:
        await self.fetchval("ping", "SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                # Bounded: a server that stopped answering would hold a graceful close forever.
                await asyncio.wait_for(pool.close(), self._settings.connect_timeout)
            except FAILURES:  # TimeoutError included
                pool.terminate()  # the server is gone: nothing to say goodbye to

    # -- notes the gateway leaves for the admin commands ----------------------------------

    async def set_note(self, name: str, value: str) -> None:
        await self.execute(
            "set_note",
            "INSERT INTO meta (key, value) VALUES ($1, $2)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            "note:" + name,
            value,
        )

    async def note(self, name: str) -> str:
        value = await self.fetchval("note", "SELECT value FROM meta WHERE key = $1", "note:" + name)
        return "" if value is None else str(value)
