"""What a sign-in keeps for a later page, sealed to its session (a TOTP key being enrolled,
recovery codes to save, where to go after them), and recovery codes never confirmed, kept
sealed to the user and shown again at the next sign-in that passes a factor.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

from gateway.crypto import Sealer
from gateway.errors import SealBroken
from gateway.signin.session import Session, SessionBook
from gateway.stores import SharedStore

CODES_WAIT = 30 * 86400.0  # recovery codes never confirmed are shown again for this long


class Pending:
    def __init__(
        self,
        sealer: Sealer,
        shared: SharedStore,
        book: SessionBook,
        codes_left: Callable[[str], Awaitable[int]],
    ) -> None:
        self._sealer = sealer
        self._shared = shared
        self._book = book
        self._codes_left = codes_left  # (user) → recovery codes they have left

    def seal(self, session: Session, name: str, value: str) -> None:
        sealed = self._sealer.seal(value.encode(), f"pending\x00{name}\x00{session.sid}")
        session.pending[name] = base64.b64encode(sealed).decode()

    def unsealed(self, session: Session, name: str) -> str | None:
        raw = session.pending.get(name)
        if not raw:
            return None
        try:
            data = base64.b64decode(raw)
            return self._sealer.unseal(data, f"pending\x00{name}\x00{session.sid}").decode()
        except (SealBroken, ValueError):
            return None

    async def offer_codes(self, session: Session, codes: list[str]) -> None:
        """New recovery codes to show: in this session now, and again at each sign-in until
        the user confirms they saved them (a closed tab must not lose the only copy)."""
        text = "\n".join(codes)
        self.seal(session, "recovery", text)
        sealed = self._sealer.seal(text.encode(), f"codes-waiting\x00{session.user}")
        await self._shared.put(f"codes-waiting:{session.user}", sealed, CODES_WAIT)

    async def codes_saved(self, session: Session) -> None:
        session.pending.pop("recovery", None)
        session.pending.pop("after_codes", None)
        await self._book.save(session)
        await self._shared.delete(f"codes-waiting:{session.user}")

    async def codes_waiting(self, user: str) -> str | None:
        """Codes shown once and not yet confirmed, while they are still this user's."""
        data = await self._shared.get(f"codes-waiting:{user}")
        if data is None:
            return None
        try:
            text = self._sealer.unseal(data, f"codes-waiting\x00{user}").decode()
        except SealBroken:
            return None
        return text if await self._codes_left(user) else None
