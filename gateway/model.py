"""Values every layer passes around: a Decision and the steps that explain it, a user's
Settings, an AuditEvent, how user names compare, the factor names a policy may use, how an
interval is written. No I/O."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from enum import Enum

# The second factors as policies name them (gateway.factors.registry builds each one; a test
# holds the two together).
FACTOR_NAMES = ("totp", "sms", "email", "recovery", "webauthn")
# Those a fake page cannot relay: the browser binds the answer to the gateway's own origin
# (WebAuthn). What `phishing_resistant: true` holds a user or a path to, and what the
# challenge page offers first.
PHISHING_RESISTANT = ("webauthn",)


class Action(Enum):
    """What is done with a request (gateway.signin.decision.decide says which)."""

    FORWARD = "forward"  # to the CRM, as `Decision.user` when set; for a sign-in: straight in
    SIGN_IN = "sign_in"  # the gateway's own login page first (login mode gateway)
    CHALLENGE = "challenge"  # a second factor first: `factors` on offer, `reason` says why
    STEP_UP = "step_up"  # a signed-in user passes a factor again before a change
    DENY = "deny"


@dataclass(frozen=True)
class Step:
    """One rule that took part in a decision, and where it is written."""

    source: str  # "policies/staff.yaml:12" or "policies/staff.yaml paths[2]"
    text: str

    def __str__(self) -> str:
        return f"{self.text}  ({self.source})" if self.source else self.text


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str  # stable code: "ok", "ip_denied", "ip_not_allowed", "path_not_allowed", …
    steps: tuple[Step, ...] = field(default=())  # the rules that took part, the decider last
    user: str = ""  # FORWARD: the identity the CRM is told (gateway mode), "" for none
    factors: tuple[str, ...] = ()  # CHALLENGE, STEP_UP: the factors on offer, in order
    # FORWARD by a path rule that asks for a fresh factor: passed within `fresh` seconds, one
    # of `fresh_factors` (any the user has, when empty). 0: the rule asks for nothing more.
    fresh: float = 0.0
    fresh_factors: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action is Action.FORWARD


@dataclass(frozen=True)
class Settings:
    """How a user verifies: resolved user > group > role > defaults, with the chain."""

    interval: float  # seconds a completed second factor stays valid; 0 = at every sign-in
    factors: tuple[str, ...]
    enforcement: str  # "required", "optional" or "required_from"
    required_from: str  # ISO date when enforcement is "required_from", else ""
    remember_device: float  # seconds a device may be remembered; 0 = never offered
    steps: tuple[Step, ...] = field(default=())
    # Seconds a verification lasts within a session: once they have passed since a factor
    # last passed, the next request asks for one again. inf: never within a session.
    reverify: float = math.inf
    # Held to phishing-resistant factors (`phishing_resistant: true` on one of its levels):
    # `factors` holds only those.
    phishing_resistant: bool = False


# Detail keys an audit event may never carry: what they name must not reach a log or the store.
FORBIDDEN_DETAILS = ("code", "password", "secret", "cookie", "token", "otp")


@dataclass(frozen=True)
class AuditEvent:
    """One security-relevant thing that happened, as written to the audit trail.

    `name` is a stable dotted name ("challenge.failed"); `outcome` one of ok, failed,
    refused, denied, locked; `reason` a stable code. `details` holds small extra facts
    (a rule's source, a factor, a count) and never a secret: keys that name one are refused."""

    time: float
    name: str
    outcome: str
    user: str = ""
    ip: str = ""
    user_agent: str = ""
    path: str = ""
    method: str = ""
    request_id: str = ""
    reason: str = ""
    details: tuple[tuple[str, str | int | float], ...] = ()

    def __post_init__(self) -> None:
        for key, _ in self.details:
            lowered = key.lower()
            if any(word in lowered for word in FORBIDDEN_DETAILS):
                raise ValueError(f"audit detail {key!r} could carry a secret")


def canonical_user(name: str) -> str:
    """How user names compare everywhere: compatibility forms unified (NFKC), accents
    removed, trimmed, case-folded. CRMs often compare names case- and accent-insensitively
    (MySQL's default collations do), so `ALICE` or `alíce` must never become a second,
    unenrolled identity of `alice`. Merging names is the safe direction: at worst two CRM
    accounts share one set of authenticators."""
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", bare).strip().casefold()


def format_fresh(seconds: float) -> str:
    """How fresh a path rule wants a factor: `within 15m`, or (math.inf) `in this session`."""
    return "in this session" if seconds == math.inf else f"within {format_interval(seconds)}"


def format_interval(seconds: float) -> str:
    if seconds == 0:
        return "always"
    if seconds == math.inf:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"
