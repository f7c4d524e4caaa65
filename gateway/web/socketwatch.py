"""An open WebSocket held to what let it open (issue 16): a request is judged when it comes,
but a socket's frames are no requests, so the socket is judged again while it is open.

Before each frame the relay asks `check`: the clock against the socket's deadline (its
session's re-verification, a `fresh` path's factor, the session's idle or absolute end, as
gateway.signin.decision and the session book see them) and the administrator's revocations
this worker holds; no store is asked. Every LOOK_EVERY seconds (and at the deadline) the
relay asks `look`: the session's record is read again from the shared store (gone: signed
out, here or on another worker, or ended otherwise), the API token looked up again (revoked),
and the upgrade's question decided again under the policy in force, which gives the next
deadline.

A socket whose answer is no longer "go" is closed on both sides (web.websocket) with the
reason `check` or `look` gave: the page's script sees the close, connects again, and that
upgrade is a request like any other, asked for a code or sent to sign in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from aiohttp import web

from gateway.clock import Clock
from gateway.errors import HttpError
from gateway.model import Action
from gateway.signin.decision import Kind, Request, Who, still_verified, verified_until
from gateway.signin.session import Session, SessionBook
from gateway.web.guard import Guard

LOOK_EVERY = 2.0  # seconds between two looks at the store and the policy (as revocations)
# The reasons a socket is closed for, as audited (websocket.closed) and sent to the browser
# in the close frame: what still_verified asks for, and what ends a session or a token.
DUE = {"reverify": "reverify_due", "fresh": "fresh_due"}


class SocketWatch:
    """One open socket's question (who asks, from where, for what path) and its deadline."""

    def __init__(
        self,
        guard: Guard,
        clock: Clock,
        asked: Request,
        who: Who,
        *,
        gateway_login: bool,
        book: SessionBook | None = None,
        session: Session | None = None,
        credential: str | None = None,
        header_names: Iterable[str] = (),
        raw_query: str = "",
    ) -> None:
        self._guard = guard
        self.clock = clock
        self._asked = asked
        self._who = who
        self._gateway_login = gateway_login
        self._book = book
        self._session = session
        self._credential = credential
        self._header_names = tuple(header_names)
        self._raw_query = raw_query
        self.deadline, self._why = math.inf, ""
        self._decide()

    async def check(self) -> str:
        """Before a frame: why it may not pass ("": it passes). What this worker holds is
        asked first, without the store; a deadline passed or a revocation is looked at once
        more (the record may have moved on: a request in another tab puts the idle end
        later), and stands when the store does not answer."""
        reason = self.due()
        if not reason:
            return ""
        try:
            return await self.look()
        except HttpError:
            return reason

    def due(self) -> str:
        """Why the socket must close now, from what this worker holds ("": it goes on)."""
        if self.clock.now() >= self.deadline:
            return self._why
        session, book = self._session, self._book
        return "revoked" if session and book and book.revoked(session) else ""

    async def look(self) -> str:
        """Look again at the session's record and the token, and decide the socket's question
        again under the policy in force: why it must close ("": it goes on)."""
        if self._session is not None and self._book is not None:
            session = await self._book.look_at(self._session.sid)
            if session is None:  # timed out, signed out, or ended otherwise
                ends = self._book.ends_by_itself(self._session)
                return "session_expired" if self.clock.now() >= ends else "session_ended"
            self._session = session
            self._who = self._book.who(session, self._who.refused)
        elif self._who.kind is Kind.TOKEN and self._credential is not None:
            known = self._who.token_known
            self._who = self._guard.who_by(
                self._credential, self._header_names, self._asked.method, self._raw_query
            )
            if known and not self._who.token_known:
                return "token_revoked"
        return self._decide() or self.due()

    def _decide(self) -> str:
        """The socket's question decided again (the guard remembers the answers), and its
        deadline: "denied" when the policy in force no longer lets it go."""
        view = self._guard.view
        decided, _ = self._guard.decided(view, self._who, self._asked, self._gateway_login)
        decided = still_verified(view, self._who, decided, self.clock.now())
        if decided.action is Action.CHALLENGE:
            self.deadline, self._why = -math.inf, DUE.get(decided.reason, "reverify_due")
            return self._why
        if decided.action is not Action.FORWARD:  # refused, or to sign in first now
            return "denied"
        until, why = verified_until(view, self._who, decided)
        self.deadline, self._why = until, DUE.get(why, "")
        if self._session is not None and self._book is not None:
            ends = self._book.ends_by_itself(self._session)
            if ends < self.deadline:
                self.deadline, self._why = ends, "session_expired"
        return ""


WATCH = web.RequestKey("socket_watch", SocketWatch)  # set on a WebSocket upgrade that goes
