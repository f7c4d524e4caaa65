"""What a user has enrolled and whether a code they typed is right: authenticators (sealed
TOTP secrets), recovery codes, and the regulation every check goes through.

No HTTP here: the web layer turns a Verdict into a page. Every check is rate limited per user
and per address before any secret is opened, and a right TOTP code counts once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.crypto import SealBroken, Sealer, recovery_digest
from gateway.factors import recovery, totp
from gateway.regulation import Regulator
from gateway.stores import Authenticator, DurableStore

# A used step stays remembered until no clock could accept it again.
_REPLAY_TTL = float((2 * totp.DRIFT + 2) * totp.STEP)
MAX_AUTHENTICATORS = 10


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # "ok", "wrong_code", "replayed", "locked", "no_authenticator"
    locked_until: float = 0.0

    @classmethod
    def wrong(cls, until: float) -> Verdict:
        return cls(False, "locked" if until else "wrong_code", until)


def totp_purpose(user: str, auth_id: str) -> str:
    # Bound into the seal: a secret copied to another user's row in the database won't open.
    return f"totp\x00{user}\x00{auth_id}"


class FactorBook:
    def __init__(
        self, durable: DurableStore, regulator: Regulator, sealer: Sealer, clock: Clock
    ) -> None:
        self._durable = durable
        self.regulator = regulator
        self.sealer = sealer
        self._clock = clock

    async def authenticators(self, user: str) -> list[Authenticator]:
        return await self._durable.authenticators(user)

    # -- TOTP ----------------------------------------------------------------------------

    async def check_new_totp(self, user: str, secret: str, code: str, ip: str) -> Verdict:
        """An authenticator being added counts only after a right code from it."""
        until = await self.regulator.attempt(user, ip)
        if until:
            return Verdict(False, "locked", until)
        step = totp.matching_step(secret, code, self._clock.now())
        if step is None:
            return Verdict.wrong(await self.regulator.failed(user, ip))
        return await self._right_totp(user, ip, step)

    async def _right_totp(self, user: str, ip: str, step: int) -> Verdict:
        """A right code counts once per user and time step."""
        if not await self.regulator.first_use(user, step, _REPLAY_TTL):
            # The same code again (or a second tab): it counts as a failure, too.
            await self.regulator.failed(user, ip)
            return Verdict(False, "replayed")
        await self.regulator.succeeded(user, ip)
        return Verdict(True, "ok")

    async def add_totp(self, user: str, secret: str, name: str) -> Authenticator:
        auth_id = secrets.token_hex(8)
        sealed = self.sealer.seal(secret.encode(), totp_purpose(user, auth_id))
        row = Authenticator(
            id=auth_id,
            user=user,
            kind="totp",
            name=name.strip()[:64] or "Authenticator",
            sealed=sealed,
            key_id=self.sealer.key_id(sealed),
            created=self._clock.now(),
        )
        await self._durable.add_authenticator(row)
        return row

    async def check_totp(self, user: str, code: str, ip: str) -> Verdict:
        rows = [a for a in await self._durable.authenticators(user) if a.kind == "totp"]
        if not rows:
            return Verdict(False, "no_authenticator")
        until = await self.regulator.attempt(user, ip)
        if until:
            return Verdict(False, "locked", until)
        now = self._clock.now()
        for row in rows:
            try:
                secret = self.sealer.unseal(row.sealed, totp_purpose(user, row.id)).decode()
            except SealBroken:
                continue  # logged by keys verification; never a pass
            step = totp.matching_step(secret, code, now)
            if step is None:
                continue
            verdict = await self._right_totp(user, ip, step)
            if verdict.ok:
                await self._durable.touch_authenticator(row.id, now)
            return verdict
        return Verdict.wrong(await self.regulator.failed(user, ip))

    async def remove(self, user: str, auth_id: str) -> bool:
        return await self._durable.remove_authenticator(user, auth_id)

    # -- recovery codes ------------------------------------------------------------------

    async def new_recovery_codes(self, user: str) -> list[str]:
        codes = recovery.new_codes()
        await self._durable.replace_recovery_codes(
            user, recovery.digests(user, codes), self._clock.now()
        )
        return codes

    async def check_recovery(self, user: str, code: str, ip: str) -> Verdict:
        until = await self.regulator.attempt(user, ip)
        if until:
            return Verdict(False, "locked", until)
        if recovery.looks_like_code(code) and await self._durable.use_recovery_code(
            user, recovery_digest(user, code), self._clock.now()
        ):
            await self.regulator.succeeded(user, ip)
            return Verdict(True, "ok")
        return Verdict.wrong(await self.regulator.failed(user, ip))

    async def recovery_left(self, user: str) -> int:
        return await self._durable.recovery_codes_left(user)
