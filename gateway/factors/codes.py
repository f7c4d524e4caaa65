"""One-time codes sent by SMS or e-mail, and the two factors made of them (SentCodeFactor):
issued with a resend cooldown and hourly caps (per user and per address, so nobody can run
up the bill), kept only as a keyed hash, void after their time or too many wrong entries,
and good once.

No I/O beyond the shared store: sending is the caller's (gateway.senders), so a code is
issued, then sent, then recorded in the ledger by the web layer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.config.messaging import Codes
from gateway.factors.contact import mask_email, mask_phone
from gateway.factors.protocol import Answer, Prompt, Verdict
from gateway.signin.regulation import Regulator
from gateway.stores import SharedStore


@dataclass(frozen=True)
class Issued:
    ok: bool
    reason: str  # "ok", "cooldown", "hourly_cap", "ip_cap"
    code: str = ""  # only when ok: for the message, never stored or logged
    wait: float = 0.0  # seconds until a new code may be asked for (cooldown, caps)


class CodeBook:
    def __init__(
        self, shared: SharedStore, regulator: Regulator, clock: Clock, rules: Codes, pepper: bytes
    ) -> None:
        self._shared = shared
        self.regulator = regulator
        self._clock = clock
        self.rules = rules
        # A keyed hash: a dump of the store does not give the codes away to a brute force of
        # a million candidates.
        self._pepper = pepper

    def _digest(self, user: str, channel: str, code: str, salt: str, bound: str) -> str:
        # The sign-in (session) that asked is part of the digest: the code works only there.
        data = f"{channel}\x00{user}\x00{bound}\x00{salt}\x00{code}".encode()
        return hmac.new(self._pepper, data, hashlib.sha256).hexdigest()

    async def issue(self, user: str, channel: str, ip: str, destination: str, bound: str) -> Issued:
        """A new code for `user`, to be sent to `destination` for the sign-in `bound` (the
        session id); refused within the cooldown or over a cap (user, address, destination)."""
        rules = self.rules
        cooldown_key = f"otp-cooldown:{channel}:{user}"
        now = repr(self._clock.now()).encode()
        if not await self._shared.add(cooldown_key, now, rules.resend_cooldown):
            found = await self._shared.get(cooldown_key)
            since = float(found) if found is not None else self._clock.now()
            wait = max(1.0, rules.resend_cooldown - (self._clock.now() - since))
            return Issued(False, "cooldown", wait=wait)
        for key, cap, reason in (
            (f"otp-hour:user:{user}", rules.hourly_cap, "hourly_cap"),
            (f"otp-hour:ip:{ip}", rules.ip_hourly_cap, "ip_cap"),
            # One number shared by several accounts is still one phone to flood.
            (f"otp-hour:to:{destination}", rules.hourly_cap, "hourly_cap"),
        ):
            if await self._shared.incr(key, 3600.0) > cap:
                return Issued(False, reason, wait=3600.0)
        code = "".join(secrets.choice("0123456789") for _ in range(rules.length))
        salt = secrets.token_hex(8)
        record = {
            "digest": self._digest(user, channel, code, salt, bound),
            "salt": salt,
            "bound": _tag(bound),
        }
        await self._shared.put(f"otp:{channel}:{user}", json.dumps(record).encode(), rules.ttl)
        return Issued(True, "ok", code=code)

    async def withdraw(self, user: str, channel: str) -> None:
        """The message could not be sent: the code is void and may be asked for again."""
        await self._shared.delete(f"otp:{channel}:{user}")
        await self._shared.delete(f"otp-cooldown:{channel}:{user}")

    async def pending(self, user: str, channel: str, bound: str) -> bool:
        """A code is waiting for this sign-in (not one asked for by another browser)."""
        raw = await self._shared.get(f"otp:{channel}:{user}")
        if raw is None:
            return False
        return bool(json.loads(raw).get("bound") == _tag(bound))

    async def check(self, user: str, channel: str, code: str, ip: str, bound: str) -> Verdict:
        until = await self.regulator.attempt(user, ip)
        if until:
            return Verdict(False, "locked", until)
        key = f"otp:{channel}:{user}"
        raw = await self._shared.get(key)
        if raw is None:
            await self.regulator.failed(user, ip)
            return Verdict(False, "code_expired")
        record = json.loads(raw)
        salt = str(record["salt"])
        typed = code.replace(" ", "")
        well_formed = len(typed) == self.rules.length and typed.isascii() and typed.isdigit()
        expected = str(record["digest"])
        if well_formed and hmac.compare_digest(
            self._digest(user, channel, typed, salt, bound), expected
        ):
            # Good once: of two right answers at the same time, one takes the code.
            if await self._shared.take(key) is None:
                await self.regulator.failed(user, ip)
                return Verdict(False, "code_expired")
            await self.regulator.succeeded(user, ip)
            return Verdict(True, "ok")
        # Wrong entries are counted atomically per issued code (its salt names it): too many
        # and the code is void. The record itself is never rewritten, so a guess racing a
        # resend cannot put an old code back.
        tries = await self._shared.incr(f"otp-tries:{channel}:{user}:{salt}", self.rules.ttl)
        if tries >= self.rules.attempts:
            current = await self._shared.get(key)
            if current is not None and json.loads(current).get("salt") == salt:
                await self._shared.delete(key)
        return Verdict.wrong(await self.regulator.failed(user, ip))


def _tag(bound: str) -> str:
    """A short digest of the session id: enough to tell sign-ins apart, nothing to replay."""
    return hashlib.sha256(bound.encode()).hexdigest()[:16]


class SentCodeFactor:
    """A code sent to the phone number or e-mail address on file (`name`: "sms" or
    "email"); offered only where a provider is configured."""

    enrol_page = ""  # the number or address is the administrator's to put on file
    sends = True
    wrong_answer = "challenge.wrong_sent_code"  # a texted code has no phone clock to check
    preselect = True

    def __init__(
        self, name: str, codes: CodeBook | None, contact: Callable[[str, str], str]
    ) -> None:
        self.name = name
        self._codes = codes  # None: no provider configured for this channel
        self._contact = contact  # (user, channel) → E.164 number or address, "" when none

    def offerable(self) -> bool:
        return self._codes is not None

    async def on_file(self, user: str) -> bool:
        return self.offerable() and bool(self._contact(user, self.name))

    async def prompt(self, user: str, sign_in: str) -> Prompt:
        found = self._contact(user, self.name)
        if self._codes is None or not found:
            return Prompt(missing=True)
        return Prompt(
            to=mask_phone(found) if self.name == "sms" else mask_email(found),
            pending=await self._codes.pending(user, self.name, sign_in),
            minutes=max(1, math.ceil(self._codes.rules.ttl / 60)),
        )

    async def check(self, answer: Answer) -> Verdict:
        if self._codes is None:
            return Verdict(False, "code_expired")
        return await self._codes.check(
            answer.user, self.name, answer.code, answer.ip, answer.sign_in
        )
