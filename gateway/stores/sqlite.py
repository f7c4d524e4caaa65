"""SQLite durable store (WAL), the default: `state.durable: {type: sqlite, path: …}`: API
tokens, second factors, devices, session revocations and admin requests here, the file and
its connection in gateway.stores.sqlite_base, the audit trail in gateway.stores.sqlite_audit.
`DURABLE` is its registry entry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.stores.kinds import DurableKind, opened
from gateway.stores.protocols import (
    Authenticator,
    Device,
    IntervalChoice,
    LedgerRow,
)
from gateway.stores.sqlite_audit import SqliteAudit
from gateway.stores.sqlite_base import SCHEMA_VERSION
from gateway.stores.sqlite_snapshot import SqliteSnapshots


class SqliteDurableStore(SqliteAudit):
    # -- API tokens ---------------------------------------------------------------------

    def _bump_tokens(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'tokens_version'"
        )

    def _add_token(
        self, token_id: str, user: str, token_digest: bytes, label: str, now: float
    ) -> None:
        conn = self._connection()
        with conn:
            conn.execute(
                "INSERT INTO api_tokens (id, user, digest, label, created) VALUES (?, ?, ?, ?, ?)",
                (token_id, user, token_digest, label, now),
            )
            self._bump_tokens(conn)

    def _revoke_token(self, token_id: str, now: float) -> bool:
        conn = self._connection()
        with conn:
            cursor = conn.execute(
                "UPDATE api_tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (now, token_id),
            )
            if cursor.rowcount:
                self._bump_tokens(conn)
            return cursor.rowcount > 0

    def _tokens(self) -> list[tuple[str, str, str, float, float | None]]:
        rows = self._connection().execute(
            "SELECT id, user, label, created, revoked FROM api_tokens ORDER BY created, id"
        )
        return [tuple(r) for r in rows]

    def _active_tokens(self) -> tuple[int, list[tuple[str, str, bytes]]]:
        conn = self._connection()
        version = int(
            conn.execute("SELECT value FROM meta WHERE key = 'tokens_version'").fetchone()[0]
        )
        rows = conn.execute("SELECT id, user, digest FROM api_tokens WHERE revoked IS NULL")
        return version, [(r[0], r[1], bytes(r[2])) for r in rows]

    def _tokens_version(self) -> int:
        row = (
            self._connection()
            .execute("SELECT value FROM meta WHERE key = 'tokens_version'")
            .fetchone()
        )
        return int(row[0])

    async def add_token(
        self, token_id: str, user: str, token_digest: bytes, label: str, now: float
    ) -> None:
        await self._run(self._add_token, token_id, user, token_digest, label, now)

    async def revoke_token(self, token_id: str, now: float) -> bool:
        return await self._run(self._revoke_token, token_id, now)

    async def tokens(self) -> list[tuple[str, str, str, float, float | None]]:
        """(id, user, label, created, revoked) of every token, revoked ones included."""
        return await self._run(self._tokens)

    async def active_tokens(self) -> tuple[int, list[tuple[str, str, bytes]]]:
        return await self._run(self._active_tokens)

    async def tokens_version(self) -> int:
        return await self._run(self._tokens_version)

    # -- second factors: authenticators, recovery codes, devices, session revocations -------

    async def add_authenticator(self, row: Authenticator) -> None:
        await self.change(
            (
                "INSERT INTO authenticators (id, user, kind, name, sealed, key_id, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.user, row.kind, row.name, row.sealed, row.key_id, row.created),
            )
        )

    async def authenticators(self, user: str) -> list[Authenticator]:
        rows = await self.query(
            "SELECT id, user, kind, name, sealed, key_id, created, last_used"
            " FROM authenticators WHERE user = ? ORDER BY created, id",
            user,
        )
        return [Authenticator(*r) for r in rows]  # type: ignore[arg-type]

    async def all_authenticators(self) -> list[Authenticator]:
        rows = await self.query(
            "SELECT id, user, kind, name, sealed, key_id, created, last_used"
            " FROM authenticators ORDER BY user, created, id"
        )
        return [Authenticator(*r) for r in rows]  # type: ignore[arg-type]

    async def reseal_authenticator(
        self, auth_id: str, sealed: bytes, key_id: str, *, expected: bytes
    ) -> bool:
        """Compare and swap: replaced only while the stored value is still `expected`, so an
        authenticator removed or re-enrolled since it was read is never brought back."""
        replaced = await self.change(
            (
                "UPDATE authenticators SET sealed = ?, key_id = ? WHERE id = ? AND sealed = ?",
                (sealed, key_id, auth_id, expected),
            )
        )
        return replaced > 0

    async def touch_authenticator(self, auth_id: str, now: float) -> None:
        await self.change(("UPDATE authenticators SET last_used = ? WHERE id = ?", (now, auth_id)))

    async def remove_authenticator(self, user: str, auth_id: str) -> bool:
        removed = await self.change(
            ("DELETE FROM authenticators WHERE user = ? AND id = ?", (user, auth_id))
        )
        return removed > 0

    async def replace_recovery_codes(self, user: str, digests: list[bytes], now: float) -> None:
        await self.change(
            ("DELETE FROM recovery_codes WHERE user = ?", (user,)),
            *(
                (
                    "INSERT INTO recovery_codes (user, digest, created) VALUES (?, ?, ?)",
                    (user, d, now),
                )
                for d in digests
            ),
        )

    async def use_recovery_code(self, user: str, digest: bytes, now: float) -> bool:
        """Atomic: of two requests with the same code, exactly one succeeds."""
        used = await self.change(
            (
                "UPDATE recovery_codes SET used = ? WHERE user = ? AND digest = ? AND used IS NULL",
                (now, user, digest),
            )
        )
        return used > 0

    async def recovery_codes_left(self, user: str) -> int:
        rows = await self.query(
            "SELECT COUNT(*) FROM recovery_codes WHERE user = ? AND used IS NULL", user
        )
        return int(str(rows[0][0]))

    async def save_device(self, row: Device) -> None:
        await self.change(
            (
                "INSERT INTO devices (id, user, label, created, verified, remembered_until)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " verified = excluded.verified, remembered_until = excluded.remembered_until,"
                " label = excluded.label WHERE devices.user = excluded.user"
                " AND devices.revoked IS NULL",
                (row.id, row.user, row.label, row.created, row.verified, row.remembered_until),
            )
        )

    async def device(self, device_id: str) -> Device | None:
        rows = await self.query(
            "SELECT id, user, label, created, verified, remembered_until, revoked"
            " FROM devices WHERE id = ?",
            device_id,
        )
        return Device(*rows[0]) if rows else None  # type: ignore[arg-type]

    async def devices(self, user: str) -> list[Device]:
        rows = await self.query(
            "SELECT id, user, label, created, verified, remembered_until, revoked"
            " FROM devices WHERE user = ? AND revoked IS NULL ORDER BY created, id",
            user,
        )
        return [Device(*r) for r in rows]  # type: ignore[arg-type]

    async def revoke_device(self, user: str, device_id: str, now: float) -> bool:
        revoked = await self.change(
            (
                "UPDATE devices SET revoked = ? WHERE user = ? AND id = ? AND revoked IS NULL",
                (now, user, device_id),
            )
        )
        return revoked > 0

    async def revoke_sessions(self, user: str, now: float) -> None:
        """Every session of `user` started before `now` ends (workers see it within seconds)."""
        await self.change(
            (
                "INSERT INTO session_revocations (user, not_before) VALUES (?, ?)"
                " ON CONFLICT (user) DO UPDATE SET not_before = excluded.not_before",
                (user, now),
            ),
            (
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1"
                " WHERE key = 'revocations_version'",
                (),
            ),
        )

    async def revocations(self) -> tuple[int, dict[str, float]]:
        version = await self.query("SELECT value FROM meta WHERE key = 'revocations_version'")
        rows = await self.query("SELECT user, not_before FROM session_revocations")
        return int(str(version[0][0])), {str(u): float(str(t)) for u, t in rows}

    async def revocations_version(self) -> int:
        rows = await self.query("SELECT value FROM meta WHERE key = 'revocations_version'")
        return int(str(rows[0][0]))

    async def record_message(self, row: LedgerRow) -> None:
        await self.change(
            (
                "INSERT INTO message_ledger (time, user, groups, channel, provider, status,"
                " attempts, cost, currency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(row),
            )
        )

    async def messages(self, since: float, until: float) -> list[LedgerRow]:
        rows = await self.query(
            "SELECT time, user, groups, channel, provider, status, attempts, cost, currency"
            " FROM message_ledger WHERE time >= ? AND time < ? ORDER BY time",
            since,
            until,
        )
        return [LedgerRow(*r) for r in rows]  # type: ignore[arg-type]

    async def request_action(self, action: str, user: str, now: float) -> int:
        """An admin request the running gateway carries out (it holds the state): its id."""
        return await self._run(self._request, action, user, now)

    def _request(self, action: str, user: str, now: float) -> int:
        conn = self._connection()
        with conn:
            cursor = conn.execute(
                "INSERT INTO admin_requests (action, user, created) VALUES (?, ?, ?)",
                (action, user, now),
            )
        return int(cursor.lastrowid or 0)

    async def pending_requests(self) -> list[tuple[int, str, str]]:
        rows = await self.query(
            "SELECT id, action, user FROM admin_requests WHERE done IS NULL ORDER BY id"
        )
        return [(int(str(r[0])), str(r[1]), str(r[2])) for r in rows]

    async def claim_request(self, request_id: int, now: float) -> bool:
        """Mark a request done; True for the one worker that claimed it."""
        done = await self.change(
            ("UPDATE admin_requests SET done = ? WHERE id = ? AND done IS NULL", (now, request_id))
        )
        return done > 0

    async def request_done(self, request_id: int) -> bool:
        rows = await self.query("SELECT done FROM admin_requests WHERE id = ?", request_id)
        return bool(rows) and rows[0][0] is not None

    async def remove_authenticators(self, user: str) -> int:
        return await self.change(("DELETE FROM authenticators WHERE user = ?", (user,)))

    async def revoke_devices(self, user: str, now: float) -> int:
        return await self.change(
            ("UPDATE devices SET revoked = ? WHERE user = ? AND revoked IS NULL", (now, user))
        )

    async def known_users(self) -> list[str]:
        """Every user the store holds something for (authenticators, codes, devices)."""
        rows = await self.query(
            "SELECT user FROM authenticators UNION SELECT user FROM recovery_codes"
            " UNION SELECT user FROM devices ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    async def set_factor_choice(self, user: str, factor: str) -> None:
        await self.change(
            (
                "INSERT INTO factor_choice (user, factor) VALUES (?, ?)"
                " ON CONFLICT (user) DO UPDATE SET factor = excluded.factor",
                (user, factor),
            )
        )

    async def factor_choice(self, user: str) -> str:
        rows = await self.query("SELECT factor FROM factor_choice WHERE user = ?", user)
        return str(rows[0][0]) if rows else ""

    async def set_interval_choice(self, user: str, seconds: float, now: float) -> None:
        await self.change(
            (
                "INSERT INTO interval_choice (user, seconds, chosen) VALUES (?, ?, ?)"
                " ON CONFLICT (user) DO UPDATE SET seconds = excluded.seconds,"
                " chosen = excluded.chosen",
                (user, seconds, now),
            )
        )

    async def interval_choice(self, user: str) -> IntervalChoice | None:
        rows = await self.query("SELECT seconds, chosen FROM interval_choice WHERE user = ?", user)
        if not rows:
            return None
        seconds, chosen = rows[0]  # REAL columns: floats
        return IntervalChoice(float(seconds), float(chosen))  # type: ignore[arg-type]

    async def clear_interval_choice(self, user: str) -> bool:
        return bool(await self.change(("DELETE FROM interval_choice WHERE user = ?", (user,))))


DURABLE = DurableKind(
    open=lambda settings, create: opened(SqliteDurableStore(settings.path, create=create)),
    snapshots=lambda settings: SqliteSnapshots(Path(settings.path), SCHEMA_VERSION),
    address=lambda settings: (settings.path, SqliteSnapshots.key),
)
