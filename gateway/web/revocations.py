"""What administrators ask of every worker through the durable store: revoked sessions
(`sessions revoke`, `users reset-2fa`) and requests for state only the gateway holds (`users
unlock`: lockouts live in the shared store, which may be a worker's own memory; `users
reset-interval`: the user's open sessions carry the interval they chose). Each worker
looks every few seconds, so an admin command reaches all of them within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.admin.accounts import FOLLOW_INTERVAL
from gateway.clock import Clock
from gateway.errors import HttpError
from gateway.signin.regulation import Regulator
from gateway.signin.session import SessionBook
from gateway.stores import DurableStore

log = logging.getLogger("gateway.signin")

LOOK_EVERY = 2.0  # seconds between two looks at the store


# A notice an administrator's command asked for: (kind, user) → sent by the gateway.
Notify = Callable[[str, str], Awaitable[None]]
NOTICE = "notice:"  # the action of such a request: notice:reset_by_admin


async def read_revocations(durable: DurableStore, book: SessionBook) -> int:
    """The store's revocations into the session book now; the version read. Called before
    the gateway serves: a session revoked while this worker was stopped (sessions outlive it
    in Redis or in the sessions file) would pass until the watcher's first look, and for as
    long as the store stayed down if it went down first. StoreUnavailable stops the start."""
    version, book.revocations = await durable.revocations()
    return version


async def watch_revocations(
    durable: DurableStore,
    book: SessionBook,
    regulator: Regulator,
    clock: Clock,
    notify: Notify | None = None,
    version: int = -1,
) -> None:
    """Runs until cancelled: the session book follows the store's revocations (`version`:
    the one read_revocations read at start), and pending admin requests are claimed (by one
    worker) and carried out."""
    while True:
        with contextlib.suppress(HttpError):
            found = await durable.revocations_version()
            if found != version:
                version, book.revocations = await durable.revocations()
            await carry_out_requests(durable, regulator, clock, notify, book=book)
        await asyncio.sleep(LOOK_EVERY)


async def carry_out_requests(
    durable: DurableStore,
    regulator: Regulator,
    clock: Clock,
    notify: Notify | None = None,
    *,
    book: SessionBook | None = None,
) -> None:
    for request_id, action, user in await durable.pending_requests():
        known = (
            action == "unlock"
            or (action.startswith(NOTICE) and notify is not None)
            or (action == FOLLOW_INTERVAL and book is not None)
        )
        if not known or not await durable.claim_request(request_id, clock.now()):
            continue  # another worker's, or one for a gateway that can act on it
        if action == "unlock":
            await regulator.unlock(user)
            log.info("admin request %d: %s unlocked", request_id, user)
        elif action == FOLLOW_INTERVAL and book is not None:
            found = await durable.interval_choice(user)  # read now: the newest choice holds
            changed = await book.follow_choice(user, None if found is None else found.seconds)
            log.info("admin request %d: %d sessions of %s follow", request_id, changed, user)
        elif notify is not None:
            await notify(action.removeprefix(NOTICE), user)
            log.info("admin request %d: %s notice to %s", request_id, action, user)
