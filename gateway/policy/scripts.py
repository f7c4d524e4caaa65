"""Which scripts a web server runs for a path besides the path itself, for the path rules
(gateway.policy.rules.check_path): a script's path info (`/admin.php/x` runs `/admin.php`),
nginx's unanchored `.php` split, a folder's index script; and how two rules that both hold
for one request combine their fresh factors."""

from __future__ import annotations

from gateway.model import PHISHING_RESISTANT, Decision
from gateway.paths import (
    AMBIGUOUS_SCRIPT,
    INDEX_FILE,
    INDEX_NAMES,
    fold_case,
    folded_glob,
    script_paths,
)
from gateway.policy.model import PathRule, Policy


def scripts_run_for(
    policy: Policy, plain: str, fold: bool, deciding: PathRule
) -> list[tuple[str, bool]]:
    """The scripts a web server may run for `plain` besides itself, each with whether it is
    a folder's index: those of its path info (gateway.paths.script_paths) and its index,
    with or without the folder's slash (`/admin/` and `/admin`, which nginx's usual
    `try_files $uri $uri/` and `index` run as `/admin/index.php` without a redirect), by the
    usual names and by any `index.`/`default.` file a rule names.

    An index is judged only where a rule speaks of it: an index rule (Policy.index_rules)
    that names the index (`/admin/index.php`, `/**/index.php`) or is written for that very
    folder (`/admin/*.php`, `/admin/i*`), or, for a path with its slash, the folder's own
    rule (`deciding`, say `/admin/ anyone`) where it does not match the index. A rule on
    scripts anywhere (`/**/*.php`) does not hold every path to an index it may not have
    (`/contacts/7/index.php`: a front controller's pretty URL)."""
    scripts = [(script, False) for script in script_paths(plain)]
    if "." in plain.rpartition("/")[2]:
        return scripts  # a file's name (`/index.php`, `/style.css`), taken for no folder
    if not policy.index_rules and not (plain.endswith("/") and deciding.pattern.endswith("/")):
        return scripts  # no rule can tell an index from its folder (most policies)
    folder = plain if plain.endswith("/") else plain + "/"
    here = fold_case(folder) if fold else folder
    speaking: list[PathRule] = []  # the index rules that name an index or this folder
    names = set(INDEX_NAMES)
    for rule in policy.index_rules:
        head, _, name = rule.pattern.rpartition("/")
        named = "*" not in name
        # written for this folder's scripts (`/admin/*.php`, `/admin/i*`); not `/settings/*`,
        # its items, which a pretty URL's list page (`/settings`) is not held to
        mine = name.strip("*") != "" and "*" not in head
        mine = mine and (fold_case(head) if fold else head) + "/" == here
        if named and ("*" in head or mine) and INDEX_FILE.match(name):
            names.add(name)
        if named or mine:
            speaking.append(rule)
    decides = folded_glob(deciding.pattern, fold) if folder == plain else None
    for name in sorted(names):
        index = folder + name
        probe = fold_case(index) if fold else index
        if (decides is not None and not decides.match(probe)) or any(
            folded_glob(rule.pattern, fold).match(probe) for rule in speaking
        ):
            scripts.append((index, True))  # its rule may differ from the folder's: judged
    return scripts


def holds(rule: PathRule | None, plain: str, script: str, indexed: bool) -> bool:
    """Whether `rule`, the first for a script the server may run for `plain`, holds the
    request too. A script's path info (`/admin.php/x`) is held to any rule, the default
    refusal included, but for a segment that may be a domain (`firma.pl`, `shop.com.py`),
    held only by a rule for such scripts (`/**/*.pl`, `/awstats.pl`); nginx's unanchored
    split (`/admin.php.bak`) only by a rule that names the script, not by one on scripts
    anywhere (`/**/*.php` would refuse `report.php.txt`); an index only where a rule
    matches it (the folder may have none)."""
    if rule is None:
        return not indexed and not AMBIGUOUS_SCRIPT.search(script) and _path_info(plain, script)
    if indexed:
        return True
    last = rule.pattern.rpartition("/")[2].lower()
    if not _path_info(plain, script):
        return "*" not in last
    if AMBIGUOUS_SCRIPT.search(script):
        return last.endswith(script[script.rfind(".") :].lower())
    return True


def _path_info(plain: str, script: str) -> bool:
    """`script` runs with `plain`'s rest as its path info (a slash after it), not by nginx's
    unanchored split of one segment (`/admin.php.bak`)."""
    return plain[len(script) : len(script) + 1] in ("/", "")


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
