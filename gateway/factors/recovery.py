"""Recovery codes, the last-resort factor: a set of ten, shown once, kept only as digests,
each good once. They come with a user's first app (or from an administrator)."""

from __future__ import annotations

from gateway.clock import Clock
from gateway.crypto import new_recovery_code, normalize_recovery_code, recovery_digest
from gateway.factors.protocol import Answer, Prompt, Verdict
from gateway.signin.regulation import Regulator
from gateway.stores import DurableStore

COUNT = 10


def new_codes() -> list[str]:
    codes: set[str] = set()
    while len(codes) < COUNT:
        codes.add(new_recovery_code())
    return sorted(codes)


def digests(user: str, codes: list[str]) -> list[bytes]:
    return [recovery_digest(user, code) for code in codes]


def looks_like_code(text: str) -> bool:
    return len(normalize_recovery_code(text)) == 10


class RecoveryFactor:
    name = "recovery"
    enrol_page = ""  # issued with the first app, or regenerated from the account page
    sends = False
    wrong_answer = "challenge.wrong_recovery"
    preselect = False  # a last resort is never what the next sign-in offers first

    def __init__(self, durable: DurableStore, regulator: Regulator, clock: Clock) -> None:
        self._durable = durable
        self._regulator = regulator
        self._clock = clock

    def offerable(self) -> bool:
        return True

    async def on_file(self, user: str) -> bool:
        return await self.left(user) > 0

    async def prompt(self, user: str, sign_in: str) -> Prompt:
        return Prompt()

    async def left(self, user: str) -> int:
        return await self._durable.recovery_codes_left(user)

    async def new_codes(self, user: str) -> list[str]:
        """A new set: the old codes stop working."""
        codes = new_codes()
        await self._durable.replace_recovery_codes(user, digests(user, codes), self._clock.now())
        return codes

    async def check(self, answer: Answer) -> Verdict:
        user, ip = answer.user, answer.ip
        until = await self._regulator.attempt(user, ip)
        if until:
            return Verdict(False, "locked", until)
        if looks_like_code(answer.code) and await self._durable.use_recovery_code(
            user, recovery_digest(user, answer.code), self._clock.now()
        ):
            await self._regulator.succeeded(user, ip)
            return Verdict(True, "ok")
        return Verdict.wrong(await self._regulator.failed(user, ip))
