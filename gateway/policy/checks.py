"""Checks of a whole policy once it is loaded: path rules that another rule before them hides
or undercuts (warnings for `check-config`), settings above an organisation cap (errors), and
factors named that the gateway's configuration cannot offer (errors, checked with it).
"""

from __future__ import annotations

from gateway.errors import Problem
from gateway.model import PHISHING_RESISTANT, format_interval
from gateway.paths import folded_glob
from gateway.policy.model import Level, PathRule, Policy


def path_rule_warnings(paths: tuple[PathRule, ...]) -> list[Problem]:
    """Rules that are valid but probably not meant, in order (first match wins):
    - shadowed: an earlier rule matches every path and method of a later one, which is never
      used (`/** anyone` before `/admin/** role:admin` opens the admin area);
    - undercut: a rule limited to some methods, whose other methods fall through to a later,
      wider rule that admits someone the narrow rule does not (`/reports/** GET admin` before
      `/** anyone` leaves POST, PROPFIND and OPTIONS on /reports to anyone).
    Whether one pattern covers another is judged on sample paths, so it errs on the side
    of saying nothing."""
    found: list[Problem] = []
    for index, rule in enumerate(paths):
        for earlier in paths[:index]:
            methods_covered = earlier.methods is None or (
                rule.methods is not None and rule.methods <= earlier.methods
            )
            if methods_covered and _covers(earlier.pattern, rule.pattern):
                found.append(
                    _warning(
                        rule,
                        f"is never used: {earlier.label} ({earlier.where}) matches every "
                        "request it would, first",
                    )
                )
                break
        if rule.methods is None:
            continue
        for later in paths[index + 1 :]:
            if not _covers(later.pattern, rule.pattern):
                continue
            if later.methods is not None and later.methods <= rule.methods:
                continue  # only methods the narrow rule already decides
            if beyond := _admits_beyond(later, rule):
                others = ", ".join(sorted(beyond))
                found.append(
                    _warning(
                        rule,
                        f"decides only {','.join(sorted(rule.methods))}: other methods on "
                        f"{rule.pattern} fall through to {later.label} ({later.where}), "
                        f"which also admits {others}; add a rule for {rule.pattern} without "
                        "`methods` after it to decide the rest",
                    )
                )
            if later.methods is None:
                break
    return found


def _admits_beyond(other: PathRule, rule: PathRule) -> frozenset[str]:
    """Whom `other` admits that `rule` does not: nobody past `anyone`, and no signed-in
    user's role, group or name past `authenticated` (as gateway.policy.rules admits)."""
    if "anyone" in rule.allow:
        return frozenset()
    beyond = other.allow - rule.allow
    if "authenticated" in rule.allow:
        beyond = frozenset(a for a in beyond if not a.startswith(("role:", "group:", "user:")))
    return beyond


def _warning(rule: PathRule, message: str) -> Problem:
    return Problem(rule.where.file, rule.where.line, f"paths[{rule.index}]", message)


def _covers(wide: str, narrow: str) -> bool:
    """Every path `narrow` matches, `wide` matches too (on sample paths of `narrow`)."""
    pattern = folded_glob(wide, False)  # compiled once per pattern, not once per pair
    return all(pattern.match(sample) for sample in _samples(narrow))


def _samples(pattern: str) -> list[str]:
    """Paths a glob matches, each wildcard filled in a few ways (a trailing `/**` is the
    tree itself and below, as gateway.paths.compile_glob reads it)."""
    tail: tuple[str, ...] = ("",)
    if pattern.endswith("/**"):
        pattern, tail = pattern[:-3], ("", "/s", "/s/t")
    samples = [pattern + end for end in tail]
    for token, fills in (("**", ("", "s", "s/t")), ("*", ("", "s"))):
        while any(token in s for s in samples) and len(samples) < 256:
            samples = [
                filled
                for s in samples
                for filled in ([s.replace(token, f, 1) for f in fills] if token in s else [s])
            ]
    return [s for s in samples if "*" not in s]


def unavailable_factors(policy: Policy, unavailable: dict[str, str]) -> list[Problem]:
    """Every place the policy names a factor that the gateway cannot offer (`unavailable`:
    name → why, from gateway.yaml: passkeys without a usable public_url), an error at its
    line: whoever it holds to that factor could not sign in."""
    found: list[Problem] = []

    def said(where: str, line: int, key: str, names: tuple[str, ...]) -> None:
        for name in names:
            if name in unavailable:
                message = f"names {name}, which this gateway cannot offer: {unavailable[name]}"
                found.append(Problem(where, line, key, message))

    levels: list[Level] = [policy.defaults, *policy.roles.values(), *policy.groups.values()]
    levels += [user.level for user in policy.users.values()]
    for level in levels:
        if level.where.line == 0:
            continue  # the built-in defaults name only what every gateway offers
        label = "defaults" if level.kind == "defaults" else f"{level.kind}s.{level.name}"
        file = level.where.file
        said(file, level.line_of("factors"), f"{label}.factors", level.factors or ())
        if level.phishing_resistant:
            line = level.line_of("phishing_resistant")
            said(file, line, f"{label}.phishing_resistant", PHISHING_RESISTANT)
    for rule in policy.paths:
        said(rule.where.file, rule.where.line, f"paths[{rule.index}]", rule.fresh_factors)
    return found


def check_caps(policy: Policy) -> list[Problem]:
    """An explicit interval (or reverify) longer than a cap of the user's roles or groups is
    an error: the cap says how long a verification may last, at sign-in and within a session."""
    problems: list[Problem] = []
    for level in [*policy.roles.values(), *policy.groups.values()]:
        for key in ("interval", "reverify"):
            own, cap = getattr(level, key), level.max_interval
            if own is not None and cap is not None and own > cap:
                problems.append(
                    Problem(
                        level.where.file,
                        level.line_of(key),
                        f"{level.kind}s.{level.name}.{key}",
                        f"{format_interval(own)} is longer than its own "
                        f"max_interval {format_interval(cap)}",
                    )
                )
    for user in policy.users.values():
        caps = [
            (level.max_interval, level)
            for level in [
                *(policy.roles[r] for r in user.roles),
                *(policy.groups[g] for g in user.groups),
            ]
            if level.max_interval is not None
        ]
        if not caps:
            continue
        cap, capper = min(caps, key=lambda c: c[0])
        for key in ("interval", "reverify"):
            for level in [
                user.level,
                *(policy.groups[g] for g in user.groups),
                *(policy.roles[r] for r in user.roles),
            ]:
                own = getattr(level, key)
                if own is not None and own > cap:
                    problems.append(
                        Problem(
                            level.where.file,
                            level.line_of(key),
                            f"{level.kind}s.{level.name}.{key}",
                            f"{format_interval(own)} is longer than the "
                            f"{format_interval(cap)} cap of {capper.label} "
                            f"({capper.where.file}:{capper.line_of('max_interval')})"
                            + (f" for user {user.name}" if level.kind != "user" else ""),
                        )
                    )
                    break
    return problems
