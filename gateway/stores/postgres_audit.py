"""The PostgreSQL store's audit trail (a batch in one statement, ids in commit order, every
value a parameter) and the networks users sign in from."""

from __future__ import annotations

import json

from gateway.model import AuditEvent
from gateway.stores.postgres_base import PostgresBase
from gateway.stores.postgres_schema import AUDIT_LOCK, Conn
from gateway.stores.protocols import AuditQuery

_AUDIT_COLUMNS = (
    'time, name, outcome, "user", ip, user_agent, path, method, request_id, reason, details'
)
_TYPES = ("float8",) + ("text",) * 10
# Rows removed per statement when pruning: a first prune of years of events stays within
# the statement timeout, and no statement holds row locks for long.
PRUNE_BATCH = 10_000


def _text(value: str) -> str:
    """Text PostgreSQL can hold: what UTF-8 cannot (lone surrogates, aiohttp's reading of
    header bytes that are not UTF-8) and NUL (a text value cannot hold it) as U+FFFD."""
    clean = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return clean.replace("\x00", "\ufffd")


class PostgresAudit(PostgresBase):
    async def add_audit_events(self, events: list[AuditEvent]) -> None:
        if not events:
            return
        columns: list[list[object]] = [[] for _ in _TYPES]
        for e in events:
            details = json.dumps(dict(e.details), ensure_ascii=False)
            values = (e.name, e.outcome, e.user, e.ip, e.user_agent, e.path, e.method)
            row = (e.time, *values, e.request_id, e.reason, details)
            for column, value in zip(columns, row, strict=True):
                column.append(value if isinstance(value, float | int) else _text(str(value)))
        unnest = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(_TYPES, start=1))
        insert = (
            f"INSERT INTO audit_events ({_AUDIT_COLUMNS})"  # noqa: S608 (constant columns)
            f" SELECT {_AUDIT_COLUMNS} FROM unnest({unnest}) WITH ORDINALITY"
            f" AS e({_AUDIT_COLUMNS}, n) ORDER BY n"
        )

        async def add(conn: Conn) -> None:
            # All or none, and ids in commit order: writers on other hosts wait for the lock,
            # so an id handed out is committed before any greater one.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
                await conn.execute(insert, *columns)

        await self._run("add_audit", add)

    async def audit_events(self, query: AuditQuery) -> list[tuple[int, AuditEvent]]:
        where, params = _where(query)
        order = "DESC" if query.newest_first else "ASC"
        params.append(query.limit)
        # Only constant column names and $n placeholders are joined; values are parameters.
        rows = await self.fetch(
            "audit_events",
            f"SELECT id, {_AUDIT_COLUMNS} FROM audit_events"  # noqa: S608
            f" WHERE {where} ORDER BY id {order} LIMIT ${len(params)}",
            *params,
        )
        found = []
        for row in rows:
            time, name, outcome, user, ip, agent, path, method, rid, reason = row[1:11]
            details = tuple(sorted(json.loads(row[11]).items()))
            event = AuditEvent(
                time, name, outcome, user, ip, agent, path, method, rid, reason, details
            )
            found.append((int(row[0]), event))
        return found

    async def audit_counts(self, query: AuditQuery, bucket: float) -> list[tuple[float, str, int]]:
        where, params = _where(query)
        params.append(bucket)
        rows = await self.fetch(
            "audit_counts",
            f"SELECT floor(time / ${len(params)})::bigint AS slot, name, count(*)"  # noqa: S608
            f" FROM audit_events WHERE {where} GROUP BY slot, name ORDER BY slot, name",
            *params,
        )
        return [(int(r[0]) * bucket, str(r[1]), int(r[2])) for r in rows]

    async def prune_audit(self, before: float) -> int:
        removed = 0
        while True:
            batch = await self.execute(
                "prune_audit",
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events"
                " WHERE time < $1 ORDER BY id LIMIT $2)",
                before,
                PRUNE_BATCH,
            )
            removed += batch
            if batch < PRUNE_BATCH:
                return removed

    async def note_network(self, user: str, network: str, now: float) -> bool:
        """One statement: of concurrent notes of one new network, the insert of exactly one
        goes through (xmax 0: a row this statement inserted); the others update it."""
        inserted = await self.fetchval(
            "note_network",
            'INSERT INTO user_networks ("user", network, first_seen, last_seen)'
            ' VALUES ($1, $2, $3, $3) ON CONFLICT ("user", network)'
            " DO UPDATE SET last_seen = excluded.last_seen RETURNING xmax = 0",
            user,
            network,
            now,
        )
        return bool(inserted)

    async def networks(self, user: str) -> list[tuple[str, float, float]]:
        return await self.fetch(
            "networks",
            'SELECT network, first_seen, last_seen FROM user_networks WHERE "user" = $1'
            " ORDER BY first_seen, network",
            user,
        )


def _where(query: AuditQuery) -> tuple[str, list[object]]:
    """The WHERE clause of a query's criteria ($1, $2, … in order) and its parameters."""
    params: list[object] = [query.after_id, query.since]
    where = ["id > $1", "time >= $2"]

    def param(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    if query.before_id:
        where.append(f"id < {param(query.before_id)}")
    if query.until != float("inf"):
        where.append(f"time < {param(query.until)}")
    for column in ("user", "ip", "outcome", "request_id"):
        value = getattr(query, column)
        if value:
            where.append(f'"{column}" = {param(value)}')
    if query.names:
        # Not LIKE: `_` and `%` are no wildcards here, and the case counts.
        alternatives = [
            f"starts_with(name, {param(name[:-1])})"
            if name.endswith("*")
            else f"name = {param(name)}"
            for name in query.names
        ]
        where.append("(" + " OR ".join(alternatives) + ")")
    return " AND ".join(where), params
