"""The policy in force and the API token table, kept current while the gateway runs.

The Policy is swapped whole on reload (SIGHUP, `crm-gateway policy reload`, or a changed
file once it stayed unchanged for a whole look); a broken edit keeps the running policy and
logs every problem; a change that takes protection away waits for a person
(gateway.policy.change). The token table is read again when the durable store's token
version changes. gateway.web.guard judges requests with what this keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.audit import AuditTrail
from gateway.config.process import files_signature
from gateway.errors import ConfigError, Problem, StoreUnavailable
from gateway.model import Settings
from gateway.policy.change import CONFIRMED_NOTE, DEFAULT_HOLD_SHARE, Change, compare
from gateway.policy.inforce import IN_FORCE_NOTE, decode, read_snapshot
from gateway.policy.load import load_policies
from gateway.policy.model import Policy, User
from gateway.policy.tokens import TokenTable, credential_places
from gateway.policy.view import PolicyView
from gateway.stores import DurableStore

log = logging.getLogger("gateway.policy")

WATCH_EVERY = 2.0  # seconds between looks at the policy files and the token version


class LivePolicy:
    def __init__(
        self,
        folder: str,
        policy: Policy,
        durable: DurableStore,
        trail: AuditTrail,
        *,
        hold_share: float = DEFAULT_HOLD_SHARE,
    ) -> None:
        self.folder = folder  # "" = no policy files: the built-in defaults, nothing to watch
        self.view = PolicyView.of(policy)
        self.places = credential_places(policy.api.locations)
        self.tokens = TokenTable()
        self._durable = durable
        self.trail = trail
        self.hold_share = hold_share
        # The files the running policy came from, as they were when it was read: a worker
        # forked (or replaced) long after the files were read sees at start that they moved.
        self._signature = policy.signature if folder else ()
        self._seen = self._signature  # what the watcher's last look found
        self._held = ""  # digest of files whose change waits for a person to confirm it

    @property
    def policy(self) -> Policy:
        return self.view.policy

    def _files_signature(self) -> tuple[tuple[str, int, int], ...]:
        return files_signature(self.folder) if self.folder else ()

    # -- keeping current -------------------------------------------------------------------

    async def reload(self, why: str, *, watched: bool = False) -> bool:
        """Load the files again; keep the running policy when they are broken. `watched`: the
        file watcher asks, not a person (SIGHUP, `policy reload`): a change that removes every
        deny list or more than `hold_share` of the path rules waits for a person."""
        if not self.folder:
            return False
        self._signature = self._files_signature()
        try:
            snapshot = await asyncio.to_thread(read_snapshot, self.folder)
            digest = snapshot.digest
            policy = await asyncio.to_thread(load_policies, self.folder)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("policy not reloaded (%s): %s", why, problem)
            log.error(
                "policy reload failed with %d problems; the previous policy stays in force",
                len(exc.problems),
            )
            self.trail.record(
                "policy.reload_failed", "failed", reason=why, problems=len(exc.problems)
            )
            return False
        change = compare(self.view.policy, policy, hold_share=self.hold_share)
        if watched and change.hold and not await self._confirmed(digest):
            self._hold(why, digest, change)
            return False
        self._held = ""
        view = await asyncio.to_thread(PolicyView.of, policy)
        _log_warnings(policy)
        self.view = view
        self.places = credential_places(policy.api.locations)
        log.info(
            "policy reloaded (%s): %d users, %d networks, %d path rules",
            why,
            len(policy.users),
            len(policy.networks),
            len(policy.paths),
        )
        for line in change.lines():
            log.info("policy reloaded: %s", line)
        self.trail.record("policy.reloaded", "ok", reason=why, widened=len(change.widened))
        with contextlib.suppress(StoreUnavailable):
            if not watched:
                # A person asked (SIGHUP): these files are confirmed, as by `policy reload`,
                # so a worker that starts later loads them too instead of holding them back.
                await self._durable.set_note(CONFIRMED_NOTE, digest)
            await self._durable.set_note(IN_FORCE_NOTE, snapshot.encode())
        return True

    def _hold(self, why: str, digest: str, change: Change) -> None:
        if self._held == digest:
            return  # said once for these files
        self._held = digest
        log.error(
            "policy change held back (%s): %s. The previous policy stays in force; if the "
            "change is meant, confirm it with `crm-gateway policy reload -c CONFIG` or SIGHUP",
            why,
            change.hold,
        )
        for line in change.lines():
            log.error("policy change held back: it would make %s", line)
        self.trail.record(
            "policy.reload_held", "refused", reason=change.hold, widened=len(change.widened)
        )

    async def _confirmed(self, digest: str) -> bool:
        """A person confirmed these very files (`crm-gateway policy reload`)."""
        return await self._durable.note(CONFIRMED_NOTE) == digest

    async def refresh_tokens(self) -> None:
        version = await self._durable.tokens_version()
        if version != self.tokens.version:
            version, rows = await self._durable.active_tokens()
            self.tokens.replace(version, rows)

    async def watch(self) -> None:
        """Background: a look at the files and the token table every WATCH_EVERY seconds."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            try:
                await self.look()
            except StoreUnavailable as exc:
                log.warning("token table not refreshed: %s", exc.detail)
            except Exception:  # never the end of the watch: later edits and tokens still count
                log.exception("policy and token look failed; trying again in %s s", WATCH_EVERY)

    async def look(self) -> None:
        """Reload files that changed and then stayed unchanged for a whole look (a file
        caught half written, or saved in two steps, is never read), or a held-back change a
        person confirmed; refresh the tokens when the store says they changed."""
        signature = self._files_signature()
        if signature != self._signature and signature == self._seen:
            await self.reload("file changed", watched=True)
        elif self._held and await self._confirmed(self._held):
            await self.reload("confirmed", watched=True)
        self._seen = signature
        await self.refresh_tokens()

    # -- reading it --------------------------------------------------------------------------

    def user_for(self, name: str) -> User:
        return self.view.user_for(name)

    def settings(self, name: str) -> Settings:
        return self.view.settings(name)

    async def start(self) -> None:
        """Before the first request: the policy's warnings said, the token table read. A
        policy read before the files last changed (a worker replaced hours after the start,
        forked with the supervisor's copy) is read again first, as the watcher would; and
        files that differ from those in force elsewhere (gateway.policy.inforce) are held to
        them, as the running gateways' watchers hold them."""
        reloaded = False
        in_force = await self._in_force_elsewhere() if self.folder else None
        if in_force is not None:
            self.view = await asyncio.to_thread(PolicyView.of, in_force)
            reloaded = await self.reload("started after an edit", watched=True)
        elif self.folder and self._files_signature() != self._signature:
            reloaded = await self.reload("changed since it was read", watched=True)
        if not reloaded:  # a reload says the warnings of what it loaded
            _log_warnings(self.policy)
        await self.refresh_tokens()
        log.info(
            "policy loaded from %s: %d users, %d path rules; %d API tokens",
            self.folder or "(built-in defaults)",
            len(self.policy.users),
            len(self.policy.paths),
            len(self.tokens),
        )

    async def _in_force_elsewhere(self) -> Policy | None:
        """The policy of the files in force as the durable store last heard, when the files
        on disk differ from them; None when they are the same, or unknown (a store that does
        not answer: the disk's are taken; no note yet: the disk's are noted, in force now).
        ConfigError when those files no longer load here (a network list they name removed
        since) and nobody confirmed the files on disk: what they would change cannot be
        judged, so nothing is served."""
        try:
            note = decode(await self._durable.note(IN_FORCE_NOTE))
        except StoreUnavailable as exc:
            log.warning("policy in force elsewhere not read: %s", exc.detail)
            return None
        disk = await asyncio.to_thread(read_snapshot, self.folder)
        if note is None:
            with contextlib.suppress(StoreUnavailable):
                await self._durable.set_note(IN_FORCE_NOTE, disk.encode())
            return None
        if note.digest == disk.digest:
            return None
        try:
            return await asyncio.to_thread(note.load, self.folder)
        except ConfigError as exc:
            if await self._confirmed(disk.digest):
                return None
            why = "; ".join(str(problem) for problem in exc.problems[:3])
            raise ConfigError(
                [
                    Problem(
                        self.folder,
                        0,
                        "policies",
                        "the policy files differ from those in force (the durable store's "
                        f"note), which no longer load ({why}): what the change would open "
                        "cannot be judged. If the files on disk are meant, confirm them with "
                        "`crm-gateway policy reload -c CONFIG` and start again",
                    )
                ]
            ) from None


def _log_warnings(policy: Policy) -> None:
    for warning in policy.warnings:
        log.warning("policy: %s", warning)
