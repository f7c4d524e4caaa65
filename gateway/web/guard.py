"""The guard: every request judged against the policy in force before it reaches the CRM.

Owns the live Policy (swapped whole on reload: SIGHUP or a changed file; a broken edit keeps
the running policy and logs every problem) and the table of API tokens (refreshed when the
durable store's token version changes). Decisions themselves are gateway.access functions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

from aiohttp import web

from gateway.access import check_path, decide, resolve_settings
from gateway.audit import AuditTrail
from gateway.errors import ConfigError, HttpError, StoreUnavailable
from gateway.fields import method_override
from gateway.identity import canonical_user
from gateway.metrics import DENIALS
from gateway.model import Action, Decision, Settings, Step
from gateway.netindex import NetworkIndex
from gateway.pathrules import normalize_path
from gateway.policy import Level, Policy, User, Where, empty_policy, load_policies, policy_files
from gateway.policychange import (
    CONFIRMED_NOTE,
    DEFAULT_HOLD_SHARE,
    Change,
    compare,
    files_digest,
)
from gateway.stores import DurableStore
from gateway.tokens import AmbiguousCredential, TokenTable, credential_places, find_credential
from gateway.web.keys import AUDIT, CREDENTIAL, DECISION, USER, VIEW

log = logging.getLogger("gateway.policy")

WATCH_EVERY = 2.0  # seconds between looks at the policy files and the token version


class AccessDenied(HttpError):
    status = 403
    reason = "access_denied"

    def __init__(self, decision: Decision, *, api: bool) -> None:
        super().__init__(decision.reason, reason=decision.reason)
        self.decision = decision
        self.api = api
        if decision.reason == "token_unknown":
            self.status = 401
        elif decision.reason in ("credential_ambiguous", "method_ambiguous"):
            self.status = 400


class Guard:
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
        self.policy = policy
        self.index = NetworkIndex(policy.networks)
        self.users = _by_canonical_name(policy)
        self.places = credential_places(policy.api.locations)
        self.tokens = TokenTable()
        self._durable = durable
        self.trail = trail
        self.hold_share = hold_share
        self._signature = self._files_signature()  # the files the running policy came from
        self._seen = self._signature  # what the watcher's last look found
        self._held = ""  # digest of files whose change waits for a person to confirm it

    # -- keeping current -------------------------------------------------------------------

    def _files_signature(self) -> tuple[tuple[str, int, int], ...]:
        if not self.folder:
            return ()
        found = []
        for path in policy_files(self.folder):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    async def reload(self, why: str, *, watched: bool = False) -> bool:
        """Load the files again; keep the running policy when they are broken. `watched`: the
        file watcher asks, not a person (SIGHUP, `policy reload`): a change that removes every
        deny list or more than `hold_share` of the path rules waits for a person."""
        if not self.folder:
            return False
        self._signature = self._files_signature()
        try:
            digest = await asyncio.to_thread(files_digest, self.folder)
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
        change = compare(self.policy, policy, hold_share=self.hold_share)
        if watched and change.hold and not await self._confirmed(digest):
            self._hold(why, digest, change)
            return False
        self._held = ""
        index = await asyncio.to_thread(NetworkIndex, policy.networks)
        _log_warnings(policy)
        self.policy, self.index, self.users = policy, index, _by_canonical_name(policy)
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

    # -- judging ---------------------------------------------------------------------------

    def user_for(self, name: str) -> User:
        """The policy's user, or one with no roles or groups: a CRM user nobody listed is
        judged by the organisation rules and the defaults."""
        found = self.users.get(name)
        if found is not None:
            return found
        return User(name, Level("user", name, Where("(not in any policy file)", 0)))

    def settings(self, name: str) -> Settings:
        return resolve_settings(self.policy, self.user_for(name))

    def anyone_may(self, method: str, path: str) -> bool:
        return check_path(self.policy, None, method, path).allowed

    def credential(self, request: web.Request) -> str | None:
        """The request's API credential, looked for once per request (sign-in asks first,
        the checks after it ask again). One that reads two ways is refused: the CRM must use
        the credential that was judged."""
        if CREDENTIAL not in request:
            raw_query = request.raw_path.partition("?")[2]
            try:
                found = find_credential(request.headers, raw_query, self.places)
            except AmbiguousCredential as exc:
                request[CREDENTIAL] = ""
                step = Step("", str(exc))
                denied = Decision(Action.DENY, "credential_ambiguous", (step,))
                self._refuse(request, denied, api=True)
            request[CREDENTIAL] = found or ""
        return request[CREDENTIAL] or None

    def check(self, request: web.Request, user_name: str | None = None) -> str:
        """The path to forward (normalised, with the raw query), or AccessDenied/BadRequest.

        `user_name`: the signed-in user (or the one a login form names); API credentials are
        looked for only without one."""
        raw_path, sep, raw_query = request.raw_path.partition("?")
        path = normalize_path(raw_path)
        overridden = method_override(request.headers.keys(), request.method, raw_query)
        if overridden:
            # The rule is judged on this request's method: the CRM must run that one.
            step = Step("", f"{overridden} asks the CRM for another method than {request.method}")
            denied = Decision(Action.DENY, "method_ambiguous", (step,))
            self._refuse(request, denied, api=bool(self.credential(request)))
        policy = self.policy
        credential = self.credential(request) if user_name is None else None
        view = request[VIEW]
        user = self.user_for(user_name) if user_name is not None else None
        unknown = False
        if credential is not None:
            record = self.tokens.lookup(credential)
            if record is None:
                unknown = True
            else:
                user = policy.users.get(record.user)
                request[USER] = record.user
                if user is None:
                    # The owner was removed from the policy: the token goes with them.
                    step = Step("", f"the token's owner {record.user} is in no policy file")
                    self._refuse(
                        request, Decision(Action.DENY, "token_owner_unknown", (step,)), api=True
                    )
        decision = decide(
            policy,
            self.index,
            user=user,
            ip=view.ip,
            method=request.method,
            path=path,
            unknown_token=unknown,
            token=credential is not None,
        )
        if not decision.allowed:
            self._refuse(request, decision, api=credential is not None)
        return path + sep + raw_query

    def _refuse(self, request: web.Request, decision: Decision, *, api: bool) -> NoReturn:
        event = (
            "token.denied"
            if api
            else ("ip.denied" if decision.reason.startswith("ip_") else "path.denied")
        )
        request[DECISION] = "deny"
        DENIALS.labels(decision.reason).inc()
        audit_event(
            request,
            event,
            outcome="denied",
            reason=decision.reason,
            rule=decision.steps[-1].source if decision.steps else "",
        )
        raise AccessDenied(decision, api=api)


def _log_warnings(policy: Policy) -> None:
    for warning in policy.warnings:
        log.warning("policy: %s", warning)


def _by_canonical_name(policy: Policy) -> dict[str, User]:
    return {canonical_user(name): user for name, user in policy.users.items()}


def audit_event(request: web.Request, event: str, *, outcome: str, **fields: object) -> None:
    """An audit event about a request: who, from where, on what, with which request id."""
    view = request[VIEW]
    fields.setdefault("user", request.get(USER, ""))
    request.app[AUDIT].record(
        event,
        outcome,
        ip=view.ip,
        path=request.path[:512],
        method=request.method,
        request_id=view.request_id,
        user_agent=request.headers.get("User-Agent", "")[:256],
        **fields,
    )


async def open_guard(
    folder: str,
    durable: DurableStore,
    trail: AuditTrail,
    policy: Policy | None = None,
    *,
    hold_share: float = DEFAULT_HOLD_SHARE,
) -> Guard:
    if policy is None:
        policy = await asyncio.to_thread(load_policies, folder) if folder else empty_policy()
    guard = Guard(folder, policy, durable, trail, hold_share=hold_share)
    _log_warnings(policy)
    await guard.refresh_tokens()
    log.info(
        "policy loaded from %s: %d users, %d path rules; %d API tokens",
        folder,
        len(policy.users),
        len(policy.paths),
        len(guard.tokens),
    )
    return guard
