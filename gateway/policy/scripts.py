"""Which scripts a web server runs for a path besides the path itself, for the path rules
(gateway.policy.rules.check_path): a script's path info (`/admin.php/x` runs `/admin.php`),
nginx's unanchored `.php` split, a folder's index script; and how two rules that both hold
for one request combine their fresh factors."""

from __future__ import annotations

from gateway.model import PHISHING_RESISTANT, Decision
from gateway.paths import INDEX_NAMES, INDEX_SCRIPT, fold_case, folded_glob, script_paths
from gateway.policy.model import PathRule, Policy


def scripts_run_for(
    policy: Policy, plain: str, fold: bool, deciding: PathRule
) -> list[tuple[str, bool]]:
    """The scripts a web server may run for `plain` besides itself, each with whether it is
    a folder's index: those of its path info (gateway.paths.script_paths) and, for a folder,
    its index scripts by the usual names and by those a rule names (`/admin/index.php`).
    An index is judged only where its rule may differ from the folder's (`deciding`): a rule
    whose last segment is only wildcards matches a folder and its index alike, so only a
    rule with a literal last segment (Policy.index_rules) can single the index out, or a
    folder decided by such a rule (`/admin/` itself) leave the index to another."""
    scripts = [(script, False) for script in script_paths(plain)]
    if not plain.endswith("/"):
        return scripts
    alike = not deciding.pattern.endswith("/") and deciding not in policy.index_rules
    if alike and not policy.index_rules:
        return scripts
    names = set(INDEX_NAMES)
    folder = fold_case(plain) if fold else plain
    for rule in policy.index_rules:
        head, _, name = rule.pattern.rpartition("/")
        here = "*" in head or (fold_case(head) if fold else head) + "/" == folder
        if here and "*" not in name and INDEX_SCRIPT.match(name):
            names.add(name)
    for name in sorted(names):
        index = plain + name
        probe = fold_case(index) if fold else index
        if not alike or any(
            folded_glob(rule.pattern, fold).match(probe) for rule in policy.index_rules
        ):
            scripts.append((index, True))  # its rule may differ from the folder's: judged
    return scripts


def both_fresh(decided: Decision, own: Decision) -> tuple[float, tuple[str, ...]]:
    """One fresh-factor requirement for two rules that both hold: the shorter time, and the
    factors both count (any factor counts where a rule names none). Two rules that count no
    factor in common ask for the phishing-resistant ones, where one of them asks only for
    those, else for the script's, which is what runs."""
    if not decided.fresh:
        return own.fresh, own.fresh_factors
    fresh = min(decided.fresh, own.fresh)
    if not decided.fresh_factors or not own.fresh_factors:
        return fresh, decided.fresh_factors or own.fresh_factors
    common = tuple(f for f in decided.fresh_factors if f in own.fresh_factors)
    if common:
        return fresh, common
    if set(decided.fresh_factors) <= set(PHISHING_RESISTANT):
        return fresh, decided.fresh_factors
    return fresh, own.fresh_factors


def written_below(pattern: str, script: str, fold: bool) -> bool:
    """A rule's pattern that names paths below `script` (its literal start, up to the first
    wildcard, is the script's path and a slash): the policy says what its path info may do."""
    literal = pattern.partition("*")[0]
    if fold:
        literal, script = fold_case(literal), fold_case(script)
    return literal.startswith(script + "/")
