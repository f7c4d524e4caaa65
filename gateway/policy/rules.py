"""Who may pass, from where, on which path, and how they verify: plain functions over a Policy.

The resolution rules, in one place (docs/policies.md "Resolution" repeats them for operators):

Addresses
  1. Deny wins. An address in a deny list of the organisation, or of the user, any of their
     roles or any of their groups, is refused (`ip_denied`).
  2. Allow lists come in layers: organisation, roles, groups, user. A layer restricts only if
     one of its members writes `networks`; the lists within a layer are united (a user in two
     groups may come from either group's networks). The address must pass every layer that
     restricts (`ip_not_allowed`, naming the layer). `networks: []` allows nowhere.
  3. A request whose user is not known is judged by the organisation layer only; a request
     with an unregistered API token also by `api.unknown_tokens`.
Paths
  4. Rules are tried in order; the first whose pattern and methods match decides (`anyone`,
     `authenticated` (a known user), `token` (any API credential that passed the address
     checks, registered or not), `role:`, `group:`, `user:`). When rules exist and none matches, the
     request is refused (`path_no_rule`). Without rules every path passes. A path below a
     script (`/admin.php/x`, which PHP runs as `/admin.php`) must pass the script's rule too,
     unless the rule that decided it is written below the script (`/admin.php/**`).
Settings (interval, factors, enforcement, remember-device)
  5. User over groups over roles over defaults: the first level that says it decides. Where
     several groups (or roles) say it, the strictest wins: the shortest interval and
     remember-device time, the factors all of them allow, the strictest enforcement.
  6. Caps (`max_interval` of the user's roles and groups): an inherited default above a cap is
     lowered to it; an explicit value above a cap is a policy error (gateway.policy.checks).
  7. `phishing_resistant: true` on the user, any of their groups or roles, or the defaults
     holds them to phishing-resistant factors (passkeys): their factors are those of the list
     that are (or all of them, when none is). A demand, like a deny list: no other level
     lifts it, `false` included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache

from gateway.model import (
    PHISHING_RESISTANT,
    Action,
    Decision,
    Settings,
    Step,
    format_fresh,
    format_interval,
)
from gateway.paths import fold_case, folded_glob, match_form
from gateway.policy.model import Level, PathRule, Policy, User
from gateway.policy.networks import NetworkIndex
from gateway.policy.scripts import both_fresh, holds, scripts_run_for, written_below

_ENFORCEMENT_RANK = {"optional": 0, "required_from": 1, "required": 2}


def _step(level: Level, key: str, text: str) -> Step:
    return Step(f"{level.where.file}:{level.line_of(key)}", f"{level.label}: {text}")


def _levels(policy: Policy, user: User) -> tuple[list[Level], list[Level]]:
    return [policy.roles[r] for r in user.roles], [policy.groups[g] for g in user.groups]


def _deny(levels: Iterable[Level], matched: frozenset[str]) -> Decision | None:
    for level in levels:
        if level.deny and level.deny & matched:
            hit = sorted(level.deny & matched)[0]
            step = _step(level, "deny", f"deny list contains {hit}")
            return Decision(Action.DENY, "ip_denied", (step,))
    return None


def _layer(name: str, members: list[Level], matched: frozenset[str]) -> tuple[bool, Step | None]:
    restricting = [m for m in members if m.networks is not None]
    if not restricting:
        return True, None
    allowed = frozenset().union(*(m.networks or frozenset() for m in restricting))
    hit = allowed & matched
    others = [m.label for m in restricting[1:]]
    united = f" (united with {', '.join(others)})" if others else ""
    first = restricting[0]
    if hit:
        return True, _step(first, "networks", f"allow list{united} contains {sorted(hit)[0]}")
    return False, _step(first, "networks", f"allow list{united} does not contain the address")


def check_address(
    policy: Policy, index: NetworkIndex, user: User | None, ip: str, *, unknown_token: bool = False
) -> Decision:
    matched = index.match(ip)
    members = [policy.organisation]
    roles: list[Level] = []
    groups: list[Level] = []
    if user is not None:
        roles, groups = _levels(policy, user)
        members = [policy.organisation, user.level, *roles, *groups]
    denied = _deny(members, matched)
    if denied is not None:
        return denied
    steps: list[Step] = []
    layers = [("organisation", [policy.organisation])]
    if user is not None:
        layers += [("role", roles), ("group", groups), ("user", [user.level])]
    for name, layer in layers:
        passed, step = _layer(name, layer, matched)
        if step is not None:
            steps.append(step)
        if not passed:
            return Decision(Action.DENY, "ip_not_allowed", tuple(steps))
    if unknown_token:
        api = policy.api
        where = f"{api.where.file}:{api.where.line}"
        if api.unknown_tokens == "deny":
            steps.append(Step(where, "api.unknown_tokens: deny"))
            return Decision(Action.DENY, "token_unknown", tuple(steps))
        if not api.unknown_networks & matched:
            steps.append(Step(where, "api.unknown_tokens networks do not contain the address"))
            return Decision(Action.DENY, "token_ip_not_allowed", tuple(steps))
        steps.append(Step(where, "api.unknown_tokens networks contain the address"))
    return Decision(Action.FORWARD, "ok", tuple(steps))


def check_path(
    policy: Policy,
    user: User | None,
    method: str,
    path: str,
    *,
    token: bool = False,
    fold: bool = False,
) -> Decision:
    """Path rules on the normalised path (gateway.paths.normalize_path), matched in
    its match_form: its escapes decoded, and in Windows's one case when `fold` (a CRM whose
    web server ignores case: `upstream.case_insensitive_paths`).

    A path under a script (`/admin.php/x`: its path info, which PHP, a CGI or ASP.NET hand to
    `/admin.php`) is held to the script's own rule too, unless the rule that decided it was
    written for that script's path info (`/admin.php/**`, `/admin.php/api/*`): the CRM runs
    the script, so a rule on `/admin.php` cannot be passed by adding to the path."""
    if not policy.paths:
        return Decision(Action.FORWARD, "ok")
    plain = match_form(path)
    rule = _first_rule(policy, method, plain, fold)
    decided = _path_decision(policy, rule, user, token)
    if rule is None or not decided.allowed:
        return decided
    for script, indexed in scripts_run_for(policy, plain, fold, rule):
        by = _first_rule(policy, method, script, fold)
        if by is rule or written_below(rule.pattern, script, fold):
            continue  # the same rule, or the policy's word for this path
        if not holds(by, plain, script, indexed):
            continue  # an index that may not exist, `firma.pl`, `report.php.txt`
        own = _path_decision(policy, by, user, token)
        runs = "may run its folder's index" if indexed else "runs the script"
        said = Step("", f"{plain} {runs} {script}: the rule for {script} holds too")
        if not own.allowed:
            return replace(own, steps=(*decided.steps, said, *own.steps))
        if own.fresh:
            fresh, factors = both_fresh(decided, own)
            steps = (*decided.steps, said, *own.steps)
            decided = replace(decided, steps=steps, fresh=fresh, fresh_factors=factors)
    return decided


def _first_rule(policy: Policy, method: str, plain: str, fold: bool) -> PathRule | None:
    """The first rule whose methods and pattern match (`plain`: a path's unfolded match_form)."""
    path = fold_case(plain) if fold else plain
    for rule in policy.paths:
        if rule.methods is not None and method not in rule.methods:
            continue
        glob, start = _glob_and_start(rule.pattern, fold)
        if path.startswith(start) and glob.match(path):
            return rule
    return None


@lru_cache(maxsize=16384)
def _glob_and_start(pattern: str, fold: bool) -> tuple[re.Pattern[str], str]:
    """A pattern's glob, and what every path it matches starts with: its text up to the
    first wildcard (`/admin` for `/admin/**`, which matches `/admin` itself), tried first
    because most rules do not match most paths and `startswith` costs a tenth of a match."""
    start = pattern[:-3] if pattern.endswith("/**") else pattern
    start = start.partition("*")[0]
    return folded_glob(pattern, fold), fold_case(start) if fold else start


def _path_decision(
    policy: Policy, rule: PathRule | None, user: User | None, token: bool
) -> Decision:
    if rule is None:
        files = ", ".join(sorted({r.where.file for r in policy.paths}))
        step = Step(files, "no path rule matches: denied by default")
        return Decision(Action.DENY, "path_no_rule", (step,))
    source = f"{rule.where}"
    if _admits(rule.allow, user, token):
        said = f"{rule.label} allows it"
        if rule.fresh:
            which = " or ".join(rule.fresh_factors) or "a factor"
            said += f" with {which} passed {format_fresh(rule.fresh)}"
        return Decision(
            Action.FORWARD,
            "ok",
            (Step(source, said),),
            fresh=rule.fresh,
            fresh_factors=rule.fresh_factors,
        )
    who = "an anonymous request" if user is None else f"user {user.name}"
    allowed = ", ".join(sorted(rule.allow)) or "nobody"
    text = f"{rule.label} allows {allowed}, not {who}"
    return Decision(Action.DENY, "path_not_allowed", (Step(source, text),))


def _admits(allow: frozenset[str], user: User | None, token: bool) -> bool:
    if "anyone" in allow or (token and "token" in allow):
        return True
    if user is None:
        return False
    return (
        "authenticated" in allow
        or f"user:{user.name}" in allow
        or any(f"role:{r}" in allow for r in user.roles)
        or any(f"group:{g}" in allow for g in user.groups)
    )


def check_access(
    policy: Policy,
    index: NetworkIndex,
    *,
    user: User | None,
    ip: str,
    method: str,
    path: str,
    unknown_token: bool = False,
    token: bool = False,
    fold: bool = False,
) -> Decision:
    """Address first (deny wins), then path; the decision carries every rule that took part.

    `token`: the request carries an API credential (registered, or unknown and admitted by
    `api.unknown_tokens`); path rules may admit such requests with the subject `token`.
    `fold`: the CRM ignores case in paths (check_path).
    """
    address = check_address(policy, index, user, ip, unknown_token=unknown_token)
    if not address.allowed:
        return address
    route = check_path(policy, user, method, path, token=token or unknown_token, fold=fold)
    return replace(route, steps=address.steps + route.steps)


def resolve_settings(policy: Policy, user: User | None) -> Settings:
    defaults = policy.defaults
    if user is None:
        tiers: list[list[Level]] = [[defaults]]
        caps: list[Level] = []
    else:
        roles, groups = _levels(policy, user)
        tiers = [[user.level], groups, roles, [defaults]]
        caps = [lv for lv in [*roles, *groups] if lv.max_interval is not None]
    steps: list[Step] = []

    def first(key: str) -> list[Level]:
        for tier in tiers:
            said = [lv for lv in tier if getattr(lv, key) is not None]
            if said:
                return said
        return [defaults]

    interval_levels = first("interval")
    interval = min(lv.interval or 0.0 for lv in interval_levels)
    chosen = min(interval_levels, key=lambda lv: lv.interval or 0.0)
    steps.append(_step(chosen, "interval", f"interval {format_interval(interval)}"))
    if caps:
        cap_level = min(caps, key=lambda lv: lv.max_interval or 0.0)
        cap = cap_level.max_interval or 0.0
        if interval > cap:
            interval = cap
            steps.append(
                _step(cap_level, "max_interval", f"caps the interval at {format_interval(cap)}")
            )

    factor_levels = first("factors")
    factors = [
        f
        for f in (factor_levels[0].factors or ())
        if all(f in (lv.factors or ()) for lv in factor_levels)
    ]
    steps.append(_step(factor_levels[0], "factors", f"factors {', '.join(factors) or 'none'}"))
    demanding = [lv for tier in tiers for lv in tier if lv.phishing_resistant]
    if demanding:
        factors = [f for f in factors if f in PHISHING_RESISTANT] or list(PHISHING_RESISTANT)
        said = f"phishing-resistant factors only: {', '.join(factors)}"
        steps.append(_step(demanding[0], "phishing_resistant", said))

    enforcement_levels = first("enforcement")
    strictest = max(
        enforcement_levels,
        key=lambda lv: (_ENFORCEMENT_RANK[lv.enforcement or "required"], -_day(lv.required_from)),
    )
    enforcement = strictest.enforcement or "required"
    since = strictest.required_from if enforcement == "required_from" else ""
    shown = f"required from {since}" if since else enforcement
    steps.append(_step(strictest, "enforcement", f"second factor {shown}"))

    remember_levels = first("remember_device")
    remember = min(lv.remember_device or 0.0 for lv in remember_levels)
    chosen = min(remember_levels, key=lambda lv: lv.remember_device or 0.0)
    shown = f"for {format_interval(remember)}" if remember else "never offered"
    steps.append(_step(chosen, "remember_device", f"remember this device {shown}"))
    reverify_levels = first("reverify")
    reverify = min(math.inf if lv.reverify is None else lv.reverify for lv in reverify_levels)
    chosen = min(reverify_levels, key=lambda lv: math.inf if lv.reverify is None else lv.reverify)
    if reverify < math.inf:
        steps.append(_step(chosen, "reverify", f"verify again every {format_interval(reverify)}"))
    if caps:
        cap_level = min(caps, key=lambda lv: lv.max_interval or 0.0)
        cap = cap_level.max_interval or 0.0
        if 0 < cap < reverify:
            # A verification lasts at most the cap within a session too ("at least daily").
            reverify = cap
            steps.append(
                _step(cap_level, "max_interval", f"verify again every {format_interval(cap)}")
            )
    return Settings(
        interval,
        tuple(factors),
        enforcement,
        since,
        remember,
        tuple(steps),
        reverify=reverify,
        phishing_resistant=bool(demanding),
    )


def _day(iso: str) -> int:
    return int(iso.replace("-", "")) if iso else 0
