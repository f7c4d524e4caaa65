"""Why a user gets the answer they get: the Decision for one request (the running gateway's
own `decide`), the user's settings as resolved, and where their networks come from, each
with the policy lines that made it. `crm-gateway policy explain` prints it; the helpdesk
console shows it on a user's page. Plain values, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.fields import method_override
from gateway.model import Decision, Settings, format_fresh, format_interval
from gateway.paths import judged_path
from gateway.policy.model import Level, Policy, User
from gateway.policy.rules import resolve_settings
from gateway.policy.view import PolicyView
from gateway.signin.decision import Asks, Kind, Request, Rules, Who, decide


@dataclass(frozen=True)
class Explanation:
    method: str
    path: str  # normalised, as judged
    ip: str
    user: str  # canonical; "" for an anonymous request
    decision: Decision
    settings: Settings


@dataclass(frozen=True)
class NetworkRule:
    """What one level of the policy says of addresses: the named networks it allows from
    (None: it does not restrict) and those it denies, with where it is written."""

    level: str  # "organisation", "role admin", "user alice"
    allow: tuple[str, ...] | None
    deny: tuple[str, ...]
    where: str


def explain_request(
    view: PolicyView,
    name: str,
    ip: str,
    method: str = "GET",
    raw_target: str = "/",
    *,
    token: bool = False,
    unknown_token: bool = False,
    fold: bool = False,
) -> Explanation:
    """The decision for `method raw_target` from `ip` by the canonical user `name` ("" for
    nobody), as a session's request or (`token`, `unknown_token`) an API token's; `fold`: the
    CRM ignores case in paths (upstream.case_insensitive_paths). Raises BadRequest for a
    path the gateway refuses to read (400 path_ambiguous)."""
    method = method.upper()
    raw_path, _, raw_query = raw_target.partition("?")
    path = judged_path(raw_path, fold)
    refused = "method_ambiguous" if method_override((), method, raw_query) else ""
    if token or unknown_token:
        who = Who(Kind.TOKEN, name, token_known=not unknown_token, refused=refused)
    else:
        who = Who(Kind.SESSION if name else Kind.ANONYMOUS, name, refused=refused)
    decision = decide(view, who, Request(Asks.CRM, ip, method, path), rules=Rules(fold_paths=fold))
    settings = view.settings(name) if name else resolve_settings(view.policy, None)
    return Explanation(method, path, ip, name, decision, settings)


def settings_lines(settings: Settings) -> list[tuple[str, str]]:
    """(what, value) of each resolved setting, in `policy explain`'s words and order."""
    shown = (
        f"required from {settings.required_from}"
        if settings.required_from
        else settings.enforcement
    )
    remember = format_interval(settings.remember_device) if settings.remember_device else "never"
    return [
        ("interval", format_interval(settings.interval)),
        ("factors", ", ".join(settings.factors) or "none"),
        *(
            [("phishing-resistant only", "yes (codes a fake page could relay are refused)")]
            if settings.phishing_resistant
            else []
        ),
        ("enforcement", shown),
        ("remember device", remember),
        ("verify again within a session", format_interval(settings.reverify)),
    ]


def fresh_line(decision: Decision) -> str:
    """What a path rule adds for this request ("" when nothing)."""
    if not decision.fresh:
        return ""
    which = " or ".join(decision.fresh_factors) or "any factor"
    return f"{which} passed {format_fresh(decision.fresh)}"


def networks_of(policy: Policy, user: User) -> list[NetworkRule]:
    """Each level that says something of addresses for `user`, in the order they are
    judged: deny lists first win, then every restricting layer must pass
    (gateway.policy.rules, "Addresses")."""
    levels: list[Level] = [
        policy.organisation,
        *(policy.roles[r] for r in user.roles if r in policy.roles),
        *(policy.groups[g] for g in user.groups if g in policy.groups),
        user.level,
    ]
    return [
        NetworkRule(
            level.label,
            None if level.networks is None else tuple(sorted(level.networks)),
            tuple(sorted(level.deny or ())),
            f"{level.where.file}:{level.line_of('networks')}",
        )
        for level in levels
        if level.networks is not None or level.deny
    ]
