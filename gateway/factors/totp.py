"""TOTP (RFC 6238) with pyotp, the authenticator-app factor: new keys and how they are
shown, which time step a code is, and TotpFactor, which keeps the apps a user added (their
keys sealed) and checks a code against them: counted against the limits before any key is
opened, and good once per user and time step. The time is always given explicitly.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

import pyotp

from gateway.clock import Clock
from gateway.crypto import Sealer
from gateway.errors import SealBroken
from gateway.factors.protocol import Answer, Prompt, Verdict
from gateway.signin.regulation import Regulator
from gateway.stores import Authenticator, DurableStore

STEP = 30  # seconds per code (RFC 6238 default; every authenticator app assumes it)
DIGITS = 6
DRIFT = 1  # steps accepted either side of now: at most ±30 s of clock skew
MAX_AUTHENTICATORS = 10
# A used step stays remembered until no clock could accept it again.
_REPLAY_TTL = float((2 * DRIFT + 2) * STEP)


def new_secret() -> str:
    """160 bits (RFC 4226 §4 recommends the HMAC-SHA1 output length), base32, no padding."""
    return pyotp.random_base32(32)


def grouped(secret: str) -> str:
    """`ABCD EFGH …`: groups of four, as people type it into an app by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The `otpauth://` URI (Google Authenticator key-uri format) every app reads from a QR."""
    label = quote(f"{issuer}:{account}", safe="@")
    return (
        f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer, safe='')}"
        f"&algorithm=SHA1&digits={DIGITS}&period={STEP}"
    )


def qr_svg(uri: str, title: str) -> str:
    """An inline SVG QR code (error correction M), drawn in Python: no image request.

    A viewBox and no fixed size, so the page's CSS scales the whole code (a fixed width and
    height would crop a long key URI to a shape no camera can read).

    segno is imported here, at the first enrolment page: with the xml.sax it writes SVG with,
    it is about 0.7 MB of every worker's memory, for a page a user sees once."""
    import segno

    return str(
        segno.make(uri, error="m", micro=False).svg_inline(
            scale=5, dark="#000000", light="#ffffff", border=4, title=title, omitsize=True
        )
    )


def counter(now: float) -> int:
    return int(now // STEP)


def code_at(secret: str, step: int, *, digits: int = DIGITS, digest: str = "sha1") -> str:
    return pyotp.HOTP(secret, digits=digits, digest=digest).at(step)


def matching_step(secret: str, code: str, now: float, *, drift: int = DRIFT) -> int | None:
    """The time step whose code this is (now, or `drift` steps either side), else None.

    Every candidate is computed and compared in constant time, so timing does not tell an
    attacker which step (if any) was close."""
    code = code.strip().replace(" ", "")
    # isascii: str.isdigit() also passes "１２３" and "²", which compare_digest cannot take.
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    here = counter(now)
    found = None
    for step in range(here - drift, here + drift + 1):
        if hmac.compare_digest(code_at(secret, step), code) and found is None:
            found = step
    return found


def totp_purpose(user: str, auth_id: str) -> str:
    # Bound into the seal: a secret copied to another user's row in the database won't open.
    return f"totp\x00{user}\x00{auth_id}"


class TotpFactor:
    """Codes from an authenticator app the user added on the enrolment page."""

    name = "totp"
    enrol_page = "enrol"
    sends = False
    wrong_answer = "challenge.wrong_code"
    preselect = True

    def __init__(
        self, durable: DurableStore, regulator: Regulator, sealer: Sealer, clock: Clock
    ) -> None:
        self._durable = durable
        self._regulator = regulator
        self._sealer = sealer
        self._clock = clock

    def offerable(self) -> bool:
        return True

    async def on_file(self, user: str) -> bool:
        return bool(await self.authenticators(user))

    async def prompt(self, user: str, sign_in: str) -> Prompt:
        return Prompt()

    async def authenticators(self, user: str) -> list[Authenticator]:
        return [a for a in await self._durable.authenticators(user) if a.kind == self.name]

    async def check(self, answer: Answer) -> Verdict:
        user, ip = answer.user, answer.ip
        rows = await self.authenticators(user)
        if not rows:
            return Verdict(False, "no_authenticator")
        until = await self._regulator.attempt(user, ip)
        if until:
            return Verdict(False, "locked", until)
        now = self._clock.now()
        for row in rows:
            try:
                secret = self._sealer.unseal(row.sealed, totp_purpose(user, row.id)).decode()
            except SealBroken:
                continue  # logged by keys verification; never a pass
            step = matching_step(secret, answer.code, now)
            if step is None:
                continue
            verdict = await self._right(user, ip, step)
            if verdict.ok:
                await self._durable.touch_authenticator(row.id, now)
            return verdict
        return Verdict.wrong(await self._regulator.failed(user, ip))

    async def check_new(self, user: str, secret: str, code: str, ip: str) -> Verdict:
        """An app being added counts only after a right code from it."""
        until = await self._regulator.attempt(user, ip)
        if until:
            return Verdict(False, "locked", until)
        step = matching_step(secret, code, self._clock.now())
        if step is None:
            return Verdict.wrong(await self._regulator.failed(user, ip))
        return await self._right(user, ip, step)

    async def _right(self, user: str, ip: str, step: int) -> Verdict:
        """A right code counts once per user and time step."""
        if not await self._regulator.first_use(user, step, _REPLAY_TTL):
            # The same code again (or a second tab): it counts as a failure, too.
            await self._regulator.failed(user, ip)
            return Verdict(False, "replayed")
        await self._regulator.succeeded(user, ip)
        return Verdict(True, "ok")

    async def add(self, user: str, secret: str, name: str) -> Authenticator:
        auth_id = secrets.token_hex(8)
        sealed = self._sealer.seal(secret.encode(), totp_purpose(user, auth_id))
        row = Authenticator(
            id=auth_id,
            user=user,
            kind=self.name,
            name=name.strip()[:64] or "Authenticator",
            sealed=sealed,
            key_id=self._sealer.key_id(sealed),
            created=self._clock.now(),
        )
        await self._durable.add_authenticator(row)
        return row

    async def remove(self, user: str, auth_id: str) -> bool:
        return await self._durable.remove_authenticator(user, auth_id)
