"""The guard: every request judged against the policy in force before it reaches the CRM.

Owns the live Policy (swapped whole on reload: SIGHUP or a changed file; a broken edit keeps
the running policy and logs every problem) and the table of API tokens (refreshed when the
durable store's token version changes). Decisions themselves are gateway.access functions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import NoReturn

from aiohttp import web

from gateway.audit import AuditTrail
from gateway.errors import ConfigError, HttpError, StoreUnavailable
from gateway.fields import method_override
from gateway.metrics import DENIALS
from gateway.model import Action, Decision, Settings
from gateway.policy.change import CONFIRMED_NOTE, DEFAULT_HOLD_SHARE, Change, compare, files_digest
from gateway.policy.load import load_policies, policy_files
from gateway.policy.model import Policy, User, empty_policy
from gateway.policy.paths import normalize_path
from gateway.policy.tokens import (
    AmbiguousCredential,
    TokenTable,
    credential_places,
    find_credential,
)
from gateway.signin.decision import Asks, Kind, PolicyView, Request, Rules, Who, decide
from gateway.stores import DurableStore
from gateway.web.keys import AUDIT, CREDENTIAL, DECISION, USER, VIEW

log = logging.getLogger("gateway.policy")

WATCH_EVERY = 2.0  # seconds between looks at the policy files and the token version
OVERRIDABLE = ("PUT", "PATCH", "DELETE")  # the methods a POST form may stand for
AMBIGUOUS = "\x00ambiguous"  # CREDENTIAL's value once a credential was found to read two ways


@dataclass(frozen=True)
class Judged:
    """A request for the CRM, decided: the Decision, and the path that goes (the one judged)."""

    decision: Decision
    target: str
    overridable: bool = False  # a `_method` in its body would meet a rule that refuses it


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
        self.view = PolicyView.of(policy)
        self.places = credential_places(policy.api.locations)
        self.tokens = TokenTable()
        self._durable = durable
        self.trail = trail
        self.hold_share = hold_share
        self._signature = self._files_signature()  # the files the running policy came from
        self._seen = self._signature  # what the watcher's last look found
        self._held = ""  # digest of files whose change waits for a person to confirm it

    @property
    def policy(self) -> Policy:
        return self.view.policy

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
        return self.view.user_for(name)

    def settings(self, name: str) -> Settings:
        return self.view.settings(name)

    def who(self, request: web.Request) -> Who:
        """Who a request for the CRM is by what it carries: its API credential (one that reads
        two ways is refused), else nobody yet (the caller looks for a session then). A
        method override refuses the request whoever sends it: the rule would be judged on
        one method and the CRM would run another."""
        raw_query = request.raw_path.partition("?")[2]
        overridden = method_override(request.headers.keys(), request.method, raw_query)
        refused = "method_ambiguous" if overridden else ""
        try:
            credential = self.credential(request)
        except AmbiguousCredential:
            return Who(Kind.TOKEN, refused="credential_ambiguous")
        if credential is None:
            return Who(Kind.ANONYMOUS, refused=refused)
        try:
            record = self.tokens.lookup(credential)
        except AmbiguousCredential:
            return Who(Kind.TOKEN, refused="credential_ambiguous")
        if record is None:
            return Who(Kind.TOKEN, refused=refused)
        request[USER] = record.user
        return Who(Kind.TOKEN, record.user, token_known=True, refused=refused)

    def credential(self, request: web.Request) -> str | None:
        """The request's API credential, looked for once per request (sign-in asks first,
        the checks after it ask again); AmbiguousCredential when it reads two ways."""
        if CREDENTIAL not in request:
            raw_query = request.raw_path.partition("?")[2]
            try:
                found = find_credential(request.headers, raw_query, self.places)
            except AmbiguousCredential:
                request[CREDENTIAL] = AMBIGUOUS
                raise
            request[CREDENTIAL] = found or ""
        if request[CREDENTIAL] == AMBIGUOUS:
            raise AmbiguousCredential("two credentials")
        return request[CREDENTIAL] or None

    def judge(self, request: web.Request, who: Who, *, gateway_login: bool = False) -> Judged:
        """The Decision for a request to the CRM, with the path to forward (normalised, with
        the raw query); a denial is refused here (AccessDenied, audited and counted), a
        path that reads two ways is a BadRequest."""
        raw_path, sep, raw_query = request.raw_path.partition("?")
        path = normalize_path(raw_path)
        asked = Request(Asks.CRM, request[VIEW].ip, request.method, path)
        rules = Rules(gateway_login=gateway_login)
        decision = decide(self.view, who, asked, rules=rules)
        if decision.action is Action.DENY:
            self.refuse(request, decision, api=who.kind is Kind.TOKEN)
        # A POST that a form field could turn into another method (`_method`) whose rule
        # refuses it: its body must be looked at before it goes.
        overridable = (
            request.method == "POST"
            and self.view.by_method
            and any(
                decide(self.view, who, replace(asked, method=other), rules=rules).action
                is Action.DENY
                for other in OVERRIDABLE
            )
        )
        return Judged(decision, path + sep + raw_query, overridable)

    def refuse(self, request: web.Request, decision: Decision, *, api: bool) -> NoReturn:
        """Audit and count a denial, and end the request with it."""
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
