"""The PostgreSQL store's schema and its versions: the tables (the same rows as the SQLite
store's, so a snapshot or `store copy` moves rows as they are), the steps from one version to
the next, and the check every opening makes. Only `store migrate`, or a gateway finding an
empty database, changes the schema, and always under one advisory lock.

Text columns are COLLATE "C": compared and sorted by their bytes, as SQLite does, whatever
the database's locale ("Alice" and "alice" are two users, sorted alike on both backends)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from gateway.errors import StoreUnavailable
from gateway.stores.protocols import STORE_MISSING

# A connection of its own (commands) or one lent by the pool (the gateway): the same calls.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# StoreUnavailable.reason of a store whose schema is older, or newer, than this code's.
SCHEMA_OLD = "schema_old"
SCHEMA_NEW = "schema_new"

# pg_advisory_xact_lock key of schema changes: creating, migrating, restoring ("CRMGW" + 1).
SCHEMA_LOCK = 0x43524D4757_000001
# The same for audit writes: ids are handed out in commit order, so a reader paging by id
# (`audit tail`) never passes an id that a slower writer commits later.
AUDIT_LOCK = 0x43524D4757_000002


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "text", "bytes", "float", "int": what the row holds, on every backend

    @property
    def sql(self) -> str:
        return f'"{self.name}"'


def _columns(spec: str) -> tuple[Column, ...]:
    return tuple(Column(*item.split(":")) for item in spec.split())


# Every table and its columns, in the SQLite store's order (a snapshot is a SQLite file).
TABLES: dict[str, tuple[Column, ...]] = {
    "meta": _columns("key:text value:text"),
    "api_tokens": _columns("id:text user:text digest:bytes label:text created:float revoked:float"),
    "authenticators": _columns(
        "id:text user:text kind:text name:text sealed:bytes key_id:text created:float"
        " last_used:float"
    ),
    "recovery_codes": _columns("user:text digest:bytes created:float used:float"),
    "devices": _columns(
        "id:text user:text label:text created:float verified:float remembered_until:float"
        " revoked:float"
    ),
    "session_revocations": _columns("user:text not_before:float"),
    "message_ledger": _columns(
        "time:float user:text groups:text channel:text provider:text status:text attempts:int"
        " cost:text currency:text"
    ),
    "admin_requests": _columns("id:int action:text user:text created:float done:float"),
    "factor_choice": _columns("user:text factor:text"),
    "audit_events": _columns(
        "id:int time:float name:text outcome:text user:text ip:text user_agent:text path:text"
        " method:text request_id:text reason:text details:text"
    ),
    "user_networks": _columns("user:text network:text first_seen:float last_seen:float"),
    "interval_choice": _columns("user:text seconds:float chosen:float"),
}
# Tables whose ids come from a sequence that only grows (kept across copies and restores).
SEQUENCES = ("admin_requests", "audit_events")

_SCHEMA_1 = """
CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value text COLLATE "C" NOT NULL);
INSERT INTO meta (key, value) VALUES ('tokens_version', '0'), ('revocations_version', '0');
CREATE TABLE api_tokens (
    id text COLLATE "C" PRIMARY KEY,
    "user" text COLLATE "C" NOT NULL,
    digest bytea NOT NULL UNIQUE,
    label text COLLATE "C" NOT NULL DEFAULT '',
    created float8 NOT NULL,
    revoked float8
);
CREATE TABLE authenticators (
    id text COLLATE "C" PRIMARY KEY,
    "user" text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    sealed bytea NOT NULL,
    key_id text COLLATE "C" NOT NULL,
    created float8 NOT NULL,
    last_used float8
);
CREATE INDEX authenticators_user ON authenticators ("user");
CREATE TABLE recovery_codes (
    "user" text COLLATE "C" NOT NULL,
    digest bytea NOT NULL,
    created float8 NOT NULL,
    used float8,
    PRIMARY KEY ("user", digest)
);
CREATE TABLE devices (
    id text COLLATE "C" PRIMARY KEY,
    "user" text COLLATE "C" NOT NULL,
    label text COLLATE "C" NOT NULL,
    created float8 NOT NULL,
    verified float8 NOT NULL,
    remembered_until float8 NOT NULL DEFAULT 0,
    revoked float8
);
CREATE INDEX devices_user ON devices ("user");
CREATE TABLE session_revocations ("user" text COLLATE "C" PRIMARY KEY, not_before float8 NOT NULL);
CREATE TABLE message_ledger (
    time float8 NOT NULL,
    "user" text COLLATE "C" NOT NULL,
    groups text COLLATE "C" NOT NULL,
    channel text COLLATE "C" NOT NULL,
    provider text COLLATE "C" NOT NULL,
    status text COLLATE "C" NOT NULL,
    attempts bigint NOT NULL,
    cost text COLLATE "C" NOT NULL,
    currency text COLLATE "C" NOT NULL
);
CREATE INDEX message_ledger_time ON message_ledger (time);
CREATE TABLE admin_requests (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    action text COLLATE "C" NOT NULL,
    "user" text COLLATE "C" NOT NULL,
    created float8 NOT NULL,
    done float8
);
CREATE TABLE factor_choice ("user" text COLLATE "C" PRIMARY KEY, factor text COLLATE "C" NOT NULL);
CREATE TABLE audit_events (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    time float8 NOT NULL,
    name text COLLATE "C" NOT NULL,
    outcome text COLLATE "C" NOT NULL,
    "user" text COLLATE "C" NOT NULL,
    ip text COLLATE "C" NOT NULL,
    user_agent text COLLATE "C" NOT NULL,
    path text COLLATE "C" NOT NULL,
    method text COLLATE "C" NOT NULL,
    request_id text COLLATE "C" NOT NULL,
    reason text COLLATE "C" NOT NULL,
    details text COLLATE "C" NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_user ON audit_events ("user", time);
CREATE TABLE user_networks (
    "user" text COLLATE "C" NOT NULL,
    network text COLLATE "C" NOT NULL,
    first_seen float8 NOT NULL,
    last_seen float8 NOT NULL,
    PRIMARY KEY ("user", network)
);
"""

# Issue 16 item 5: the verification interval a user chose on the account page.
_SCHEMA_2 = """
CREATE TABLE interval_choice (
    "user" text COLLATE "C" PRIMARY KEY,
    seconds float8 NOT NULL,
    chosen float8 NOT NULL
);
"""


@dataclass(frozen=True)
class SchemaStep:
    """One schema version: what takes a store from the version before to this one."""

    version: int
    what: str  # for `store migrate`'s report
    sql: str


# Schema N is reached by the steps up to N, each run once, in order. A new version is a step
# added here (never an old one changed), the same change in the SQLite store's schema (one
# row layout: tests/stores/test_postgres_schema.py holds the two versions equal), and a line
# in the release notes telling operators to run `crm-gateway store migrate`.
STEPS: tuple[SchemaStep, ...] = (
    SchemaStep(1, "created the tables of schema 1", _SCHEMA_1),
    SchemaStep(2, "added interval_choice (the interval each user chose)", _SCHEMA_2),
)
NEWEST = STEPS[-1].version


async def found_version(conn: Conn, name: str) -> int:
    """The schema version of the database's store; 0 when it holds none (no `meta` table).
    A `meta` table without our version is some other program's: refused."""
    if await conn.fetchval("SELECT to_regclass('meta')") is None:
        return 0
    try:
        value = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(value)
    except (asyncpg.PostgresError, TypeError, ValueError):
        raise StoreUnavailable(
            f"postgres {name}: the database holds a table `meta` that is not crm-gateway's: "
            "give crm-gateway a database of its own"
        ) from None


def check_version(found: int, name: str, newest: int = NEWEST) -> None:
    """Refuse a store this code cannot use: none yet (STORE_MISSING), an older schema (says
    what to run), a newer one (says what it needs)."""
    if found == 0:
        raise StoreUnavailable(
            f"postgres {name}: no crm-gateway store in this database (start the gateway, or "
            "run `crm-gateway store migrate`, to create one)",
            reason=STORE_MISSING,
        )
    if found < newest:
        raise StoreUnavailable(
            f"postgres {name}: the store has schema {found} and this crm-gateway needs schema "
            f"{newest}: run `crm-gateway store migrate -c gateway.yaml` (with this version), "
            "then start the gateways",
            reason=SCHEMA_OLD,
        )
    if found > newest:
        raise StoreUnavailable(
            f"postgres {name}: the store has schema {found}, newer than this crm-gateway knows "
            f"({newest}): run the crm-gateway version that migrated it, or a later one",
            reason=SCHEMA_NEW,
        )


async def _apply(conn: Conn, found: int, steps: tuple[SchemaStep, ...]) -> list[str]:
    done = []
    for step in steps:
        if step.version > found:
            await conn.execute(step.sql)
            done.append(f"schema {step.version}: {step.what}")
    await conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', $1)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        str(steps[-1].version),
    )
    return done


async def prepare(
    conn: Conn,
    name: str,
    *,
    create: bool,
    migrate: bool = False,
    steps: tuple[SchemaStep, ...] = STEPS,
) -> tuple[int, list[str]]:
    """Make sure the database holds a store of the newest schema; (the version found, what
    was done). `create`: an empty database gets the newest schema (a gateway's first start).
    `migrate`: an older schema is brought up to date (`store migrate`); otherwise it is
    refused, as is a newer one. One transaction under the schema lock: of gateways starting
    together, one creates and the others find it made; a failed step changes nothing."""
    newest = steps[-1].version
    if not create and not migrate:
        found = await found_version(conn, name)
        check_version(found, name, newest)
        return found, []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        found = await found_version(conn, name)
        if found == newest or (found == 0 and not create):
            check_version(found, name, newest)
            return found, []
        if found > newest or (found and not migrate):
            check_version(found, name, newest)
        return found, await _apply(conn, found, steps)
