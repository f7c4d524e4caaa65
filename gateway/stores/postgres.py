"""PostgreSQL durable store, for several gateways on several hosts: `state.durable: {type:
postgres, url: …}`: API tokens, second factors, devices, session revocations and admin
requests here, the connections in gateway.stores.postgres_base, the schema and its versions in
gateway.stores.postgres_schema, the audit trail in gateway.stores.postgres_audit, backups in
gateway.stores.postgres_snapshot. `DURABLE` is its registry entry.

A change that touches two tables (a token and the tokens version) is one statement where it
can be (a data-modifying WITH), so a call is one round trip and whole or not at all."""

from __future__ import annotations

from gateway.config.model import StoreConfig
from gateway.stores.kinds import DurableKind, Migration, opened
from gateway.stores.postgres_audit import PostgresAudit
from gateway.stores.postgres_base import FAILURES, connect, finish, shown_url, translated
from gateway.stores.postgres_schema import NEWEST, Conn, prepare
from gateway.stores.postgres_snapshot import PostgresSnapshots
from gateway.stores.protocols import Authenticator, Device, IntervalChoice, LedgerRow


class PostgresDurableStore(PostgresAudit):
    # -- API tokens ---------------------------------------------------------------------

    async def add_token(
        self, token_id: str, user: str, token_digest: bytes, label: str, now: float
    ) -> None:
        await self.execute(
            "add_token",
            'WITH added AS (INSERT INTO api_tokens (id, "user", digest, label, created)'
            " VALUES ($1, $2, $3, $4, $5) RETURNING 1)"
            " UPDATE meta SET value = (value::bigint + 1)::text"
            " WHERE key = 'tokens_version' AND EXISTS (SELECT 1 FROM added)",
            token_id,
            user,
            token_digest,
            label,
            now,
        )

    async def revoke_token(self, token_id: str, now: float) -> bool:
        revoked = await self.fetchval(
            "revoke_token",
            "WITH revoked AS (UPDATE api_tokens SET revoked = $2"
            " WHERE id = $1 AND revoked IS NULL RETURNING 1),"
            " bumped AS (UPDATE meta SET value = (value::bigint + 1)::text"
            " WHERE key = 'tokens_version' AND EXISTS (SELECT 1 FROM revoked) RETURNING 1)"
            " SELECT count(*) FROM revoked",
            token_id,
            now,
        )
        return bool(revoked)

    async def tokens(self) -> list[tuple[str, str, str, float, float | None]]:
        return await self.fetch(
            "tokens",
            'SELECT id, "user", label, created, revoked FROM api_tokens ORDER BY created, id',
        )

    async def active_tokens(self) -> tuple[int, list[tuple[str, str, bytes]]]:
        # One statement, one snapshot: the list is exactly as new as its version.
        rows = await self.fetch(
            "active_tokens",
            'SELECT m.value, t.id, t."user", t.digest FROM meta m'
            " LEFT JOIN api_tokens t ON t.revoked IS NULL WHERE m.key = 'tokens_version'",
        )
        tokens = [(r[1], r[2], bytes(r[3])) for r in rows if r[1] is not None]
        return int(rows[0][0]), tokens

    async def tokens_version(self) -> int:
        value = await self.fetchval(
            "tokens_version", "SELECT value FROM meta WHERE key = 'tokens_version'"
        )
        return int(value)

    # -- second factors: authenticators, recovery codes, devices, session revocations -------

    async def add_authenticator(self, row: Authenticator) -> None:
        await self.execute(
            "add_authenticator",
            'INSERT INTO authenticators (id, "user", kind, name, sealed, key_id, created)'
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            *row[:7],
        )

    async def authenticators(self, user: str) -> list[Authenticator]:
        rows = await self.fetch(
            "authenticators",
            'SELECT id, "user", kind, name, sealed, key_id, created, last_used FROM authenticators'
            ' WHERE "user" = $1 ORDER BY created, id',
            user,
        )
        return [Authenticator(*r) for r in rows]

    async def all_authenticators(self) -> list[Authenticator]:
        rows = await self.fetch(
            "all_authenticators",
            'SELECT id, "user", kind, name, sealed, key_id, created, last_used FROM authenticators'
            ' ORDER BY "user", created, id',
        )
        return [Authenticator(*r) for r in rows]

    async def reseal_authenticator(
        self, auth_id: str, sealed: bytes, key_id: str, *, expected: bytes
    ) -> bool:
        """Compare and swap: an authenticator removed or re-enrolled since it was read is
        never brought back."""
        return bool(
            await self.execute(
                "reseal_authenticator",
                "UPDATE authenticators SET sealed = $1, key_id = $2 WHERE id = $3 AND sealed = $4",
                sealed,
                key_id,
                auth_id,
                expected,
            )
        )

    async def touch_authenticator(self, auth_id: str, now: float) -> None:
        await self.execute(
            "touch_authenticator",
            "UPDATE authenticators SET last_used = $1 WHERE id = $2",
            now,
            auth_id,
        )

    async def remove_authenticator(self, user: str, auth_id: str) -> bool:
        return bool(
            await self.execute(
                "remove_authenticator",
                'DELETE FROM authenticators WHERE "user" = $1 AND id = $2',
                user,
                auth_id,
            )
        )

    async def remove_authenticators(self, user: str) -> int:
        return await self.execute(
            "remove_authenticators", 'DELETE FROM authenticators WHERE "user" = $1', user
        )

    async def replace_recovery_codes(self, user: str, digests: list[bytes], now: float) -> None:
        async def replace(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute('DELETE FROM recovery_codes WHERE "user" = $1', user)
                await conn.execute(
                    'INSERT INTO recovery_codes ("user", digest, created)'
                    " SELECT $1, d, $3 FROM unnest($2::bytea[]) AS d",
                    user,
                    digests,
                    now,
                )

        await self._run("replace_recovery_codes", replace)

    async def use_recovery_code(self, user: str, digest: bytes, now: float) -> bool:
        """Atomic: of concurrent uses of one code, on any connection, exactly one succeeds
        (the second waits for the first's row lock, then finds it used)."""
        return bool(
            await self.execute(
                "use_recovery_code",
                "UPDATE recovery_codes SET used = $1"
                ' WHERE "user" = $2 AND digest = $3 AND used IS NULL',
                now,
                user,
                digest,
            )
        )

    async def recovery_codes_left(self, user: str) -> int:
        count = await self.fetchval(
            "recovery_codes_left",
            'SELECT count(*) FROM recovery_codes WHERE "user" = $1 AND used IS NULL',
            user,
        )
        return int(count)

    async def save_device(self, row: Device) -> None:
        await self.execute(
            "save_device",
            'INSERT INTO devices (id, "user", label, created, verified, remembered_until)'
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET"
            " verified = excluded.verified, remembered_until = excluded.remembered_until,"
            ' label = excluded.label WHERE devices."user" = excluded."user"'
            " AND devices.revoked IS NULL",
            *row[:6],
        )

    async def device(self, device_id: str) -> Device | None:
        rows = await self.fetch(
            "device",
            'SELECT id, "user", label, created, verified, remembered_until, revoked FROM devices'
            " WHERE id = $1",
            device_id,
        )
        return Device(*rows[0]) if rows else None

    async def devices(self, user: str) -> list[Device]:
        rows = await self.fetch(
            "devices",
            'SELECT id, "user", label, created, verified, remembered_until, revoked FROM devices'
            ' WHERE "user" = $1 AND revoked IS NULL'
            " ORDER BY created, id",
            user,
        )
        return [Device(*r) for r in rows]

    async def revoke_device(self, user: str, device_id: str, now: float) -> bool:
        return bool(
            await self.execute(
                "revoke_device",
                'UPDATE devices SET revoked = $1 WHERE "user" = $2 AND id = $3 AND revoked IS NULL',
                now,
                user,
                device_id,
            )
        )

    async def revoke_devices(self, user: str, now: float) -> int:
        return await self.execute(
            "revoke_devices",
            'UPDATE devices SET revoked = $1 WHERE "user" = $2 AND revoked IS NULL',
            now,
            user,
        )

    async def revoke_sessions(self, user: str, now: float) -> None:
        await self.execute(
            "revoke_sessions",
            'WITH kept AS (INSERT INTO session_revocations ("user", not_before) VALUES ($1, $2)'
            ' ON CONFLICT ("user") DO UPDATE SET not_before = excluded.not_before)'
            " UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'revocations_version'",
            user,
            now,
        )

    async def revocations(self) -> tuple[int, dict[str, float]]:
        rows = await self.fetch(
            "revocations",
            'SELECT m.value, r."user", r.not_before FROM meta m'
            " LEFT JOIN session_revocations r ON true WHERE m.key = 'revocations_version'",
        )
        return int(rows[0][0]), {r[1]: r[2] for r in rows if r[1] is not None}

    async def revocations_version(self) -> int:
        value = await self.fetchval(
            "revocations_version", "SELECT value FROM meta WHERE key = 'revocations_version'"
        )
        return int(value)

    async def known_users(self) -> list[str]:
        rows = await self.fetch(
            "known_users",
            'SELECT "user" FROM authenticators UNION SELECT "user" FROM recovery_codes'
            ' UNION SELECT "user" FROM devices ORDER BY 1',
        )
        return [r[0] for r in rows]

    # -- the ledger, factor choice, admin requests ---------------------------------------------

    async def record_message(self, row: LedgerRow) -> None:
        await self.execute(
            "record_message",
            'INSERT INTO message_ledger (time, "user", groups, channel, provider, status,'
            " attempts, cost, currency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            *row,
        )

    async def messages(self, since: float, until: float) -> list[LedgerRow]:
        rows = await self.fetch(
            "messages",
            'SELECT time, "user", groups, channel, provider, status, attempts, cost, currency'
            " FROM message_ledger WHERE time >= $1 AND time < $2 ORDER BY time",
            since,
            until,
        )
        return [LedgerRow(*r) for r in rows]

    async def set_factor_choice(self, user: str, factor: str) -> None:
        await self.execute(
            "set_factor_choice",
            'INSERT INTO factor_choice ("user", factor) VALUES ($1, $2)'
            ' ON CONFLICT ("user") DO UPDATE SET factor = excluded.factor',
            user,
            factor,
        )

    async def factor_choice(self, user: str) -> str:
        value = await self.fetchval(
            "factor_choice", 'SELECT factor FROM factor_choice WHERE "user" = $1', user
        )
        return "" if value is None else str(value)

    async def set_interval_choice(self, user: str, seconds: float, now: float) -> None:
        await self.execute(
            "set_interval_choice",
            'INSERT INTO interval_choice ("user", seconds, chosen) VALUES ($1, $2, $3)'
            ' ON CONFLICT ("user") DO UPDATE SET seconds = excluded.seconds,'
            " chosen = excluded.chosen",
            user,
            seconds,
            now,
        )

    async def interval_choice(self, user: str) -> IntervalChoice | None:
        rows = await self.fetch(
            "interval_choice",
            'SELECT seconds, chosen FROM interval_choice WHERE "user" = $1',
            user,
        )
        return IntervalChoice(float(rows[0][0]), float(rows[0][1])) if rows else None

    async def clear_interval_choice(self, user: str) -> bool:
        removed = await self.execute(
            "clear_interval_choice", 'DELETE FROM interval_choice WHERE "user" = $1', user
        )
        return removed > 0

    async def request_action(self, action: str, user: str, now: float) -> int:
        """An admin request the running gateway carries out (it holds the state): its id."""
        value = await self.fetchval(
            "request_action",
            'INSERT INTO admin_requests (action, "user", created) VALUES ($1, $2, $3) RETURNING id',
            action,
            user,
            now,
        )
        return int(value)

    async def pending_requests(self) -> list[tuple[int, str, str]]:
        return await self.fetch(
            "pending_requests",
            'SELECT id, action, "user" FROM admin_requests WHERE done IS NULL ORDER BY id',
        )

    async def claim_request(self, request_id: int, now: float) -> bool:
        """True for the one caller, of any worker or host, whose update found it unclaimed."""
        return bool(
            await self.execute(
                "claim_request",
                "UPDATE admin_requests SET done = $1 WHERE id = $2 AND done IS NULL",
                now,
                request_id,
            )
        )

    async def request_done(self, request_id: int) -> bool:
        done = await self.fetchval(
            "request_done", "SELECT done IS NOT NULL FROM admin_requests WHERE id = $1", request_id
        )
        return bool(done)


async def _migrate(settings: StoreConfig) -> Migration:
    """`store migrate`: one connection of its own, no statement timeout (a step may rewrite a
    big table), the schema lock held while it works."""
    name = shown_url(settings.url)
    conn = await connect(settings, statement_timeout=0, application="crm-gateway migrate")
    try:
        found, steps = await prepare(conn, name, create=True, migrate=True)
    except FAILURES as exc:
        raise translated(name, exc) from exc
    finally:
        await finish(conn)
    return Migration(before=found, after=NEWEST, steps=tuple(steps))


DURABLE = DurableKind(
    open=lambda settings, create: opened(PostgresDurableStore(settings, create=create)),
    snapshots=PostgresSnapshots,
    address=lambda settings: (shown_url(settings.url), PostgresSnapshots.key),
    migrate=_migrate,
)
