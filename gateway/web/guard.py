"""The guard: every request for the CRM judged against the policy in force before it goes:
who it is by its API credential (or nobody yet), the one Decision (gateway.signin.decision),
and a denial audited, counted and answered. The policy it judges with is kept current by
gateway.policy.live, which the guard extends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import NoReturn

from aiohttp import web

from gateway.audit import AuditTrail
from gateway.bounded import remember
from gateway.errors import AccessDenied, AmbiguousCredential
from gateway.fields import method_override
from gateway.metrics import DENIALS
from gateway.model import Action, Decision
from gateway.paths import judged_path
from gateway.policy.change import DEFAULT_HOLD_SHARE
from gateway.policy.live import LivePolicy
from gateway.policy.load import load_policies
from gateway.policy.model import Policy, empty_policy
from gateway.policy.tokens import find_credential
from gateway.policy.view import PolicyView
from gateway.signin.decision import (
    Asks,
    Kind,
    Request,
    Rules,
    Who,
    decide,
    still_verified,
    verified_until,
)
from gateway.stores import DurableStore
from gateway.web.audit import audit_event
from gateway.web.keys import CREDENTIAL, DECISION, USER, VIEW

OVERRIDABLE = ("PUT", "PATCH", "DELETE")  # the methods a POST form may stand for
# Decisions remembered per worker, by who asks, from where, what and how (the policy in force
# is part of it: a reload starts afresh). Deciding is plain functions over values, so the
# same question always gets the same answer; a denial is still audited every time.
MEMO = 4096
# Paths longer than this are decided every time, not remembered: 4,096 of the longest lines
# the parser takes would hold tens of MB per worker.
MEMO_PATH = 1024
AMBIGUOUS = "\x00ambiguous"  # CREDENTIAL's value once a credential was found to read two ways

_NOBODY = Who(Kind.ANONYMOUS)  # no credential (the caller looks for a session then)
_OVERRIDING = Who(Kind.ANONYMOUS, refused="method_ambiguous")


@dataclass(frozen=True)
class Judged:
    """A request for the CRM, decided: the Decision, and the path that goes (the one judged)."""

    decision: Decision
    target: str
    overridable: bool = False  # a `_method` in its body would meet a rule that refuses it


class Guard(LivePolicy):
    """The live policy (gateway.policy.live), judging requests for the CRM with it."""

    def __init__(
        self,
        folder: str,
        policy: Policy,
        durable: DurableStore,
        trail: AuditTrail,
        *,
        hold_share: float = DEFAULT_HOLD_SHARE,
        fold_paths: bool = False,
    ) -> None:
        super().__init__(folder, policy, durable, trail, hold_share=hold_share)
        # The CRM ignores case in paths (upstream.case_insensitive_paths): rules match in any
        # case, and a Windows alias of a name is refused (gateway.paths).
        self.fold_paths = fold_paths
        self._memo: dict[tuple[str | bool, ...], tuple[Decision, bool]] = {}
        # (id of a Who, id of a Decision) → both (kept alive: their ids stay theirs) and when
        # still_verified first asks for a verification on that decision (_still_verified).
        self._until: dict[tuple[int, int], tuple[Who, Decision, float]] = {}
        self._memo_view: PolicyView | None = None

    def who(self, request: web.Request) -> Who:
        """Who a request for the CRM is by what it carries: its API credential (one that reads
        two ways is refused), else nobody yet (the caller looks for a session then). A
        method override refuses the request whoever sends it: the rule would be judged on
        one method and the CRM would run another."""
        raw_query = request.raw_path.partition("?")[2]
        try:
            credential = self.credential(request)
        except AmbiguousCredential:
            return Who(Kind.TOKEN, refused="credential_ambiguous")
        who = self.who_by(credential, request.headers.keys(), request.method, raw_query)
        if who.token_known:
            request[USER] = who.user
        return who

    def who_by(
        self, credential: str | None, header_names: Iterable[str], method: str, raw_query: str
    ) -> Who:
        """`who` from the request's parts: its credential (found already), the names of its
        headers, its method and raw query (the forward-auth endpoint gives the original's)."""
        overridden = method_override(header_names, method, raw_query)
        refused = "method_ambiguous" if overridden else ""
        if credential is None:  # most requests: one of two values, made once
            return _OVERRIDING if overridden else _NOBODY
        try:
            record = self.tokens.lookup(credential)
        except AmbiguousCredential:
            return Who(Kind.TOKEN, refused="credential_ambiguous")
        if record is None:
            return Who(Kind.TOKEN, refused=refused)
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

    def judge(
        self,
        request: web.Request,
        who: Who,
        *,
        gateway_login: bool = False,
        now: float | None = None,
    ) -> Judged:
        """The Decision for a request to the CRM, with the path to forward (normalised, with
        the raw query); a denial is refused here (AccessDenied, audited and counted), a
        path that reads two ways is a BadRequest. `now`: a session's request is also held
        to how long a verification lasts (that part is never remembered: time moves)."""
        raw_path, sep, raw_query = request.raw_path.partition("?")
        path = judged_path(raw_path, self.fold_paths)
        view = self.view
        decision, overridable = self._recalled(
            view, who, Asks.CRM, request[VIEW].ip, request.method, path, gateway_login
        )
        if now is not None:  # before the refusal: it may refuse too (a token on a fresh path)
            decision = self._still_verified(view, who, decision, now)
        if decision.action is Action.DENY:
            self.refuse(request, decision, api=who.kind is Kind.TOKEN)
        return Judged(decision, path + sep + raw_query, overridable)

    def decided(
        self, view: PolicyView, who: Who, asked: Request, gateway_login: bool
    ) -> tuple[Decision, bool]:
        """`_decide`'s answer under `view`, remembered per worker (MEMO)."""
        return self._recalled(
            view, who, asked.asks, asked.ip, asked.method, asked.path, gateway_login, asked
        )

    def _recalled(
        self,
        view: PolicyView,
        who: Who,
        asks: Asks,
        ip: str,
        method: str,
        path: str,
        gateway_login: bool,
        asked: Request | None = None,
    ) -> tuple[Decision, bool]:
        """`decided` from the request's parts: the Request made only when not remembered."""
        if self._memo_view is not view:  # a reload: decisions start again
            self._memo, self._until, self._memo_view = {}, {}, view
        # What `decide` reads of who asks for the CRM (crm_decision): not when a factor passed,
        # which only still_verified reads, after. Plain strings (an Enum's `_value_`, not its
        # `value` property): hashed and compared in C.
        key = (
            who.kind._value_,
            who.user,
            who.token_known,
            who.refused,
            asks._value_,
            ip,
            method,
            path,
            gateway_login,
        )
        found = self._memo.get(key)
        if found is None:
            rules = Rules(gateway_login=gateway_login, fold_paths=self.fold_paths)
            found = self._decide(view, who, asked or Request(asks, ip, method, path), rules)
            if len(path) > MEMO_PATH:
                return found
            remember(self._memo, key, found, MEMO)
        return found

    def _still_verified(
        self, view: PolicyView, who: Who, decision: Decision, now: float
    ) -> Decision:
        """still_verified, with when a session's verification is first asked for on what
        `decision` let through (verified_until) remembered per (who, decision): both are
        made once and kept (gateway.signin.session's Who, the memo's Decision), so a
        signed-in request whose verification holds is one comparison. Decided afresh from
        that time on, and for anyone else than a session."""
        if who.kind is not Kind.SESSION:
            return still_verified(view, who, decision, now)
        key = (id(who), id(decision))
        found = self._until.get(key)
        if found is None or found[0] is not who or found[1] is not decision:
            found = (who, decision, verified_until(view, who, decision)[0])
            remember(self._until, key, found, MEMO)
        if now < found[2]:
            return decision
        return still_verified(view, who, decision, now)

    @staticmethod
    def _decide(view: PolicyView, who: Who, asked: Request, rules: Rules) -> tuple[Decision, bool]:
        """The Decision, and whether a form field could turn this POST into another method
        (`_method`) whose rule refuses it: then its body must be looked at before it goes."""
        decision = decide(view, who, asked, rules=rules)
        overridable = (
            asked.method == "POST"
            and view.by_method
            and any(
                decide(view, who, replace(asked, method=other), rules=rules).action is Action.DENY
                for other in OVERRIDABLE
            )
        )
        return decision, overridable

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


GUARD = web.AppKey("guard", Guard)  # present when policies or login are configured


async def open_guard(
    folder: str,
    durable: DurableStore,
    trail: AuditTrail,
    policy: Policy | None = None,
    *,
    hold_share: float = DEFAULT_HOLD_SHARE,
    fold_paths: bool = False,
) -> Guard:
    if policy is None:
        policy = await asyncio.to_thread(load_policies, folder) if folder else empty_policy()
    guard = Guard(folder, policy, durable, trail, hold_share=hold_share, fold_paths=fold_paths)
    await guard.start()
    return guard
