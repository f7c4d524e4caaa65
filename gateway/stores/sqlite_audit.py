"""The SQLite store's audit trail (written a batch per statement, searched with every
value a parameter) and the networks users sign in from."""

from __future__ import annotations

import json

from gateway.model import AuditEvent
from gateway.stores.protocols import AuditQuery
from gateway.stores.sqlite_base import SqliteBase

_AUDIT_COLUMNS = (
    "time, name, outcome, user, ip, user_agent, path, method, request_id, reason, details"
)


def _utf8(text: str) -> str:
    """`text` with what UTF-8 cannot hold (lone surrogates) as U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class SqliteAudit(SqliteBase):
    def _add_audit(self, events: list[AuditEvent]) -> None:
        # One statement for the whole batch, its rows unpacked by SQLite from one JSON text:
        # row-by-row binding needs the GIL per row, and a busy event loop then stretches the
        # write lock to seconds (measured: 1,137 rows held it 1.9 s; one statement, ms).
        rows = json.dumps(
            [
                [
                    e.time,
                    e.name,
                    e.outcome,
                    e.user,
                    e.ip,
                    e.user_agent,
                    e.path,
                    e.method,
                    e.request_id,
                    e.reason,
                    json.dumps(dict(e.details), ensure_ascii=False),
                ]
                for e in events
            ],
            ensure_ascii=False,
        )
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(11))
        insert = (
            f"INSERT INTO audit_events ({_AUDIT_COLUMNS})"  # noqa: S608 (constant columns)
            f" SELECT {picks} FROM json_each(?) ORDER BY key"
        )
        conn = self._connection()
        try:
            with conn:
                conn.execute(insert, (rows,))
        except UnicodeEncodeError:
            # A lone surrogate (aiohttp's reading of a header byte that is not UTF-8, in a
            # User-Agent) cannot be bound: refused before any row, the batch is kept with
            # U+FFFD in its place. Raised, it ended the audit flush task for good.
            with conn:
                conn.execute(insert, (_utf8(rows),))

    async def add_audit_events(self, events: list[AuditEvent]) -> None:
        if events:
            await self._run(self._add_audit, events)

    async def audit_events(self, query: AuditQuery) -> list[tuple[int, AuditEvent]]:
        where, params = _where(query)
        order = "DESC" if query.newest_first else "ASC"
        # Only constant column names and `?` placeholders are joined; values are parameters.
        rows = await self.query(
            f"SELECT id, {_AUDIT_COLUMNS} FROM audit_events WHERE {where}"  # noqa: S608
            f" ORDER BY id {order} LIMIT ?",
            *params,
            query.limit,
        )
        found = []
        for row in rows:
            name, outcome, user, ip, agent, path, method, rid, reason = (str(v) for v in row[2:11])
            event = AuditEvent(
                float(row[1]),  # type: ignore[arg-type]
                name,
                outcome,
                user,
                ip,
                agent,
                path,
                method,
                rid,
                reason,
                details=tuple(sorted(json.loads(str(row[11])).items())),
            )
            found.append((int(row[0]), event))  # type: ignore[call-overload]
        return found

    async def audit_counts(self, query: AuditQuery, bucket: float) -> list[tuple[float, str, int]]:
        where, params = _where(query)
        rows = await self.query(
            "SELECT CAST(time / ? AS INTEGER) AS slot, name, COUNT(*) FROM audit_events"  # noqa: S608
            f" WHERE {where} GROUP BY slot, name ORDER BY slot, name",
            bucket,
            *params,
        )
        return [(int(r[0]) * bucket, str(r[1]), int(r[2])) for r in rows]  # type: ignore[call-overload]

    async def prune_audit(self, before: float) -> int:
        return await self.change(("DELETE FROM audit_events WHERE time < ?", (before,)))

    def _note_network(self, user: str, network: str, now: float) -> bool:
        conn = self._connection()
        with conn:
            added = conn.execute(
                "INSERT OR IGNORE INTO user_networks (user, network, first_seen, last_seen)"
                " VALUES (?, ?, ?, ?)",
                (user, network, now, now),
            ).rowcount
            if not added:
                conn.execute(
                    "UPDATE user_networks SET last_seen = ? WHERE user = ? AND network = ?",
                    (now, user, network),
                )
        return bool(added)

    async def note_network(self, user: str, network: str, now: float) -> bool:
        return await self._run(self._note_network, user, network, now)

    async def networks(self, user: str) -> list[tuple[str, float, float]]:
        rows = await self.query(
            "SELECT network, first_seen, last_seen FROM user_networks WHERE user = ?"
            " ORDER BY first_seen, network",
            user,
        )
        return [(str(r[0]), float(r[1]), float(r[2])) for r in rows]  # type: ignore[arg-type]


def _where(query: AuditQuery) -> tuple[str, list[object]]:
    """The WHERE clause of a query's criteria and its parameters, in order."""
    where = ["id > ?", "time >= ?"]
    params: list[object] = [query.after_id, query.since]
    if query.before_id:
        where.append("id < ?")
        params.append(query.before_id)
    if query.until != float("inf"):
        where.append("time < ?")
        params.append(query.until)
    for column in ("user", "ip", "outcome", "request_id"):
        value = getattr(query, column)
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if query.names:
        alternatives = []
        for name in query.names:
            if name.endswith("*"):
                # Not LIKE: it ignores case (an exact name does not) and reads `_` and `%`.
                alternatives.append("substr(name, 1, ?) = ?")
                params += [len(name) - 1, name[:-1]]
            else:
                alternatives.append("name = ?")
                params.append(name)
        where.append("(" + " OR ".join(alternatives) + ")")
    return " AND ".join(where), params
