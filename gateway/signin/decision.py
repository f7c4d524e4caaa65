"""The one Decision: what happens to a request, or to a sign-in, computed in one place from
who asks (a session, an API token, nobody yet, a login form naming a user, a sign-in whose
password passed), where from, what for, the sign-in's state and the policy in force.

The standalone proxy, the gateway's own pages, `crm-gateway policy explain` (and the coming
forward-auth endpoint) all ask `decide`: a rule cannot decide one way in one mode and another
way in another. Plain functions over values: no I/O, no HTTP; the caller reads what a
sign-in needs (which factors are on file, the remembered device) before asking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from enum import Enum

from gateway.model import Action, Decision, Settings, Step, format_fresh, format_interval
from gateway.policy.model import User
from gateway.policy.rules import check_access, check_path
from gateway.policy.view import PolicyView
from gateway.signin.interval import with_choice


class Kind(Enum):
    """Who a request is, as far as the gateway knows."""

    ANONYMOUS = "anonymous"  # no session, no credential
    TOKEN = "token"  # noqa: S105 - a kind of request: an API credential, registered or not
    SESSION = "session"  # signed in: the second factor passed (or was not needed)
    LOGIN = "login"  # a login form naming a user, on its way to the password check
    SIGNING_IN = "signing_in"  # the password passed; the second factor is pending


class Asks(Enum):
    """What a decision is about."""

    CRM = "crm"  # a request bound for the CRM
    SIGN_IN = "sign_in"  # the end of a sign-in's password step: challenge, enrol or go in
    CHANGE = "change"  # a change to how the user signs in (add or remove a factor, new codes)


@dataclass(frozen=True)
class Who:
    kind: Kind
    user: str = ""  # the canonical name (sessions, login forms, a registered token's owner)
    token_known: bool = False  # TOKEN: registered (an unknown one is judged by api rules)
    verified: float = 0.0  # SESSION, SIGNING_IN: when a second factor last passed (0: never)
    refused: str = ""  # the request reads two ways (two credentials, a method override)
    # SESSION: when each factor last passed in it, for path rules that name their factors.
    verified_by: tuple[tuple[str, float], ...] = ()
    # SESSION, SIGNING_IN: the interval the user chose on the account page (None: the
    # policy's); it counts only where stricter than the policy (gateway.signin.interval).
    chosen_interval: float | None = None


@dataclass(frozen=True)
class Request:
    """What is asked for and from where (the path already normalised)."""

    asks: Asks
    ip: str
    method: str = ""
    path: str = ""


@dataclass(frozen=True)
class Device:
    """The remembered device a browser names, when it is this user's and not revoked."""

    verified: float  # when a factor last passed on it
    remembered_until: float  # "remember this device" ends; 0 when it was never ticked


@dataclass(frozen=True)
class Facts:
    """What a sign-in has on file, read by the caller before it asks."""

    offered: tuple[str, ...]  # the policy's factors this gateway can offer
    usable: tuple[str, ...]  # of those, the ones with what they need on file
    sends: frozenset[str] = frozenset()  # offered factors that send a code (SMS, e-mail)
    enrollable: tuple[str, ...] = ()  # offered factors a user adds themselves (an app, a key)
    device: Device | None = None
    # Factors a user added themselves that the policy does not offer (any more), on file: such
    # a user is not let to add a new one on the password alone (an app, when passkeys are
    # demanded now: IT resets them, or they add the passkey before the policy holds them).
    retired: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rules:
    """What the gateway's configuration adds to the policy."""

    gateway_login: bool = False  # login mode gateway: our login page before a closed path
    fold_paths: bool = False  # the CRM ignores case in paths (upstream.case_insensitive_paths)
    step_up_window: float = 300.0  # how fresh a factor must be to change the account


def decide(
    view: PolicyView,
    who: Who,
    request: Request,
    *,
    facts: Facts | None = None,
    now: float | None = None,
    rules: Rules = Rules(),
) -> Decision:
    """The Decision for `who` asking `request`. Deny wins; the default is deny.

    `facts` and `now` are needed for a sign-in (Asks.SIGN_IN) and a change (Asks.CHANGE); a
    request for the CRM given `now` is also held to how long a verification lasts."""
    if who.refused:
        return Decision(Action.DENY, who.refused, (Step("", "the request reads two ways"),))
    if request.asks is Asks.CRM:
        decided = crm_decision(view, who, request, rules)
        return decided if now is None else still_verified(view, who, decided, now)
    assert facts is not None, "a sign-in or a change is decided on its facts"
    assert now is not None, "a sign-in or a change is decided at a time"
    if request.asks is Asks.SIGN_IN:
        return _sign_in(view, who, facts, now)
    return _change(who, facts, now, rules)


def crm_decision(view: PolicyView, who: Who, request: Request, rules: Rules) -> Decision:
    """A request for the CRM: the address and path rules, for the user it comes as."""
    policy = view.policy
    user: User | None = None
    if who.kind is Kind.TOKEN and who.token_known:
        user = policy.users.get(who.user)
        if user is None:
            # The owner was removed from the policy: the token goes with them.
            step = Step("", f"the token's owner {who.user} is in no policy file")
            return Decision(Action.DENY, "token_owner_unknown", (step,))
    elif who.kind in (Kind.SESSION, Kind.LOGIN):
        user = view.user_for(who.user)
    elif who.kind is Kind.ANONYMOUS and rules.gateway_login:
        anyone = check_path(policy, None, request.method, request.path, fold=rules.fold_paths)
        if not anyone.allowed:
            # Not open to anyone: who it is must be known first (not "denied" yet).
            return Decision(Action.SIGN_IN, "signin_required", anyone.steps)
    token = who.kind is Kind.TOKEN
    decided = check_access(
        policy,
        view.index,
        user=user,
        ip=request.ip,
        method=request.method,
        path=request.path,
        unknown_token=token and not who.token_known,
        token=token,
        fold=rules.fold_paths,
    )
    if decided.allowed and who.kind is Kind.SESSION:
        return replace(decided, user=who.user)
    return decided


def still_verified(view: PolicyView, who: Who, decided: Decision, now: float) -> Decision:
    """A signed-in user's request that may go, unless a verification is due: the user's
    `reverify` time has passed since a factor last passed in the session, or the path rule
    asks for a fresher one (`fresh`, of the factors it names). A session in which no factor
    ever passed (none required, none on file) has nothing to verify with: `reverify` does
    not apply to it; a `fresh` path asks for a factor all the same."""
    if who.kind is Kind.TOKEN and decided.allowed and decided.fresh:
        # The rule asks for a factor passed lately, which an API credential never passes.
        step = Step("", "a fresh factor is asked here, which an API credential cannot give")
        return Decision(Action.DENY, "fresh_factor_required", (*decided.steps, step))
    if who.kind is not Kind.SESSION or not decided.allowed:
        return decided
    policy = view.settings(who.user)
    settings = with_choice(policy, who.chosen_interval)
    if who.verified and now - who.verified >= settings.reverify:
        ago = format_interval(round(now - who.verified))
        lasts = format_interval(settings.reverify)
        if settings.reverify < policy.reverify:
            lasts += " (the user's own choice)"
        step = Step("", f"a factor passed {ago} ago; a verification lasts {lasts}")
        return Decision(Action.CHALLENGE, "reverify", (*decided.steps, step), user=who.user)
    if decided.fresh:
        counted = decided.fresh_factors
        last = _last_passed(who, counted)
        if not last or now - last >= decided.fresh:
            which = " or ".join(counted) or "a factor"
            step = Step("", f"{which} not passed {format_fresh(decided.fresh)}")
            return Decision(
                Action.CHALLENGE, "fresh", (*decided.steps, step), user=who.user, factors=counted
            )
    return decided


def _last_passed(who: Who, counted: tuple[str, ...]) -> float:
    """When `who` last passed one of the `counted` factors (any factor when none are named);
    0.0: never in this session."""
    if not counted:
        return who.verified
    return max((t for f, t in who.verified_by if f in counted), default=0.0)


def verified_until(view: PolicyView, who: Who, decided: Decision) -> tuple[float, str]:
    """When still_verified first asks `who` for a verification on what `decided` let
    through, and why ("reverify" or "fresh"); (inf, "") when it never does. An open WebSocket
    is closed then (gateway.web.socketwatch): its frames are no requests to be asked at."""
    if who.kind is not Kind.SESSION or not decided.allowed:
        return math.inf, ""
    until, why = math.inf, ""
    settings = with_choice(view.settings(who.user), who.chosen_interval)
    if who.verified and math.isfinite(settings.reverify):
        until, why = who.verified + settings.reverify, "reverify"
    if decided.fresh:
        last = _last_passed(who, decided.fresh_factors)
        fresh_until = last + decided.fresh if last else -math.inf
        if fresh_until < until:
            until, why = fresh_until, "fresh"
    return until, why


def _sign_in(view: PolicyView, who: Who, facts: Facts, now: float) -> Decision:
    """The password passed: straight in, challenged, or sent to add a first factor.

    A user with any factor on file answers it (an app, recovery codes, or a phone or
    e-mail address the policy lets them use); only a user with none may enrol in its place
    or, where the policy allows, go in without. The interval the user chose counts where
    it is stricter than the policy's."""
    settings = with_choice(view.settings(who.user), who.chosen_interval)
    steps = settings.steps
    if not facts.usable and settings.enforcement == "optional":
        return Decision(Action.FORWARD, "no_factor_required", steps, user=who.user)
    if facts.usable and _trusted(facts.device, settings, now):
        return Decision(Action.FORWARD, "device_trusted", steps, user=who.user)
    if facts.usable:
        return Decision(Action.CHALLENGE, "second_factor", steps, factors=facts.usable)
    if facts.enrollable and facts.retired:
        held = ", ".join(facts.retired)
        said = f"{held} on file, which the policy no longer accepts: none added on a password"
        step = Step("", said)
        return Decision(Action.DENY, "factor_retired", (*steps, step))
    if facts.enrollable:
        return Decision(Action.CHALLENGE, "enrol", steps, factors=facts.enrollable)
    missing = tuple(f for f in facts.offered if f in facts.sends)
    if missing:
        # SMS or e-mail allowed but nothing on file: the page says whom to ask.
        return Decision(Action.CHALLENGE, "nothing_on_file", steps, factors=missing)
    return Decision(Action.DENY, "no_factor", steps)


def _change(who: Who, facts: Facts, now: float, rules: Rules) -> Decision:
    """Adding or replacing a factor, or skipping enrolment: a factor on file passes first.
    Enrolling counts as the second factor only for a user who has none."""
    if facts.usable and who.kind is Kind.SIGNING_IN:
        step = Step("", "a factor on file passes before another is added")
        return Decision(Action.CHALLENGE, "factor_on_file", (step,), factors=facts.usable)
    if facts.retired and who.kind is Kind.SIGNING_IN:
        step = Step("", f"{', '.join(facts.retired)} on file, which the policy no longer accepts")
        return Decision(Action.DENY, "factor_retired", (step,))
    if facts.usable and now - who.verified > rules.step_up_window:
        step = Step("", "no factor passed within sessions.step_up_window")
        return Decision(Action.STEP_UP, "not_fresh", (step,), factors=facts.usable)
    return Decision(Action.FORWARD, "ok")


def _trusted(device: Device | None, settings: Settings, now: float) -> bool:
    """A remembered device within its time, or a factor passed on it within the interval;
    never one whose factor passed longer ago than a verification lasts (`reverify`): the
    session it would open would ask at once."""
    if device is None or now - device.verified >= settings.reverify:
        return False
    remembered = min(device.remembered_until, device.verified + settings.remember_device)
    fresh = settings.interval > 0 and now - device.verified < settings.interval
    return remembered > now or fresh


def mandatory(settings: Settings, now: float) -> bool:
    """A second factor is required now (`required`, or `required_from` a date passed)."""
    if settings.enforcement == "required":
        return True
    if settings.enforcement == "required_from":
        today = datetime.fromtimestamp(now, UTC).date()
        return today >= date.fromisoformat(settings.required_from)
    return False
