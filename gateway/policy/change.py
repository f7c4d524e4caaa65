"""What a policy reload changes, said for an operator, and whether a change seen by the file
watcher must wait for a person to confirm it.

A policy file saved in two steps, or truncated to a valid prefix, is still valid YAML: read
at the wrong moment it can open the doors (`paths: [{path: /**, allow: [anyone]}]`). The
watcher waits for files to stay unchanged; this module says what would change, and holds
back a change that takes protection away: deny entries, an allow list removed whole,
unknown API tokens let in, or a large share of the path rules. Adding a network to a list,
or a rule, is an edit, and loads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gateway.config.networks import IPNetwork
from gateway.policy.model import Level, Policy, User

MAX_NAMED = 10  # users or rules named in one log line; the rest are counted
DEFAULT_HOLD_SHARE = 0.5  # a watched change removing more of the path rules waits
# The durable store's note where `crm-gateway policy reload` leaves the digest of the files it
# confirmed: every worker and instance reads it, so each loads the same confirmed files.
CONFIRMED_NOTE = "policy-confirmed"


@dataclass(frozen=True)
class Change:
    """A reload's effect: what was added and removed, whose access widened, and a reason to
    hold it back ("" when none)."""

    rules_added: tuple[str, ...]
    rules_removed: tuple[str, ...]
    networks_added: tuple[str, ...]
    networks_removed: tuple[str, ...]
    networks_changed: tuple[str, ...]
    denies_removed: tuple[str, ...]
    users_added: tuple[str, ...]
    users_removed: tuple[str, ...]
    widened: tuple[str, ...]  # users who may now reach more (addresses or paths)
    hold: str

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.rules_added,
                self.rules_removed,
                self.networks_added,
                self.networks_removed,
                self.networks_changed,
                self.denies_removed,
                self.users_added,
                self.users_removed,
                self.widened,
            )
        )

    def lines(self) -> list[str]:
        """One line for each kind of change, for the log."""
        found = []
        for label, names in (
            ("path rules added", self.rules_added),
            ("path rules removed", self.rules_removed),
            ("networks added", self.networks_added),
            ("networks removed", self.networks_removed),
            ("networks changed", self.networks_changed),
            ("deny entries removed", self.denies_removed),
            ("users added", self.users_added),
            ("users removed", self.users_removed),
            ("users whose access widened", self.widened),
        ):
            if names:
                shown = ", ".join(names[:MAX_NAMED])
                more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
                found.append(f"{label} ({len(names)}): {shown}{more}")
        return found


def _rule_key(rule_label: str) -> str:
    # "paths[3] GET,HEAD /reports/**" → "GET,HEAD /reports/**": positions shift on every edit.
    return rule_label.split(" ", 1)[1]


def _rules(policy: Policy) -> Counter[str]:
    return Counter(
        f"{_rule_key(rule.label)} allow {','.join(sorted(rule.allow)) or 'nobody'}"
        for rule in policy.paths
    )


def _levels(policy: Policy) -> list[Level]:
    return [
        policy.organisation,
        *policy.roles.values(),
        *policy.groups.values(),
        *(user.level for user in policy.users.values()),
    ]


def _denies(policy: Policy) -> set[str]:
    """Every deny entry as `who: network`, the network by its addresses."""
    return {
        f"{level.label}: {net}"
        for level in _levels(policy)
        for name in sorted(level.deny or ())
        for net in policy.networks.get(name, ())
    }


def _lifted(old: Policy, new: Policy) -> list[str]:
    """Levels whose address rules a change takes away whole (a `networks` list gone): what
    a file cut short loses, and never a small edit."""
    before = {level.label: level for level in _levels(old)}
    return sorted(
        level.label
        for level in _levels(new)
        if level.networks is None
        and level.label in before
        and before[level.label].networks is not None
    )


def _resolve(policy: Policy, names: frozenset[str] | None) -> frozenset[IPNetwork] | None:
    if names is None:
        return None
    return frozenset(net for name in names for net in policy.networks.get(name, ()))


def _access(policy: Policy, user: User) -> tuple[list[frozenset[IPNetwork] | None], set[str]]:
    """A user's allow layers (networks, None where a layer does not restrict) and the path
    rules that admit them."""
    roles = [policy.roles[r] for r in user.roles if r in policy.roles]
    groups = [policy.groups[g] for g in user.groups if g in policy.groups]
    layers: list[frozenset[IPNetwork] | None] = []
    for members in ([policy.organisation], roles, groups, [user.level]):
        restricting = [m for m in members if m.networks is not None]
        if not restricting:
            layers.append(None)
        else:
            layers.append(
                frozenset().union(*(_resolve(policy, m.networks) or () for m in restricting))
            )
    subjects = {
        "anyone",
        "authenticated",
        f"user:{user.name}",
        *(f"role:{r}" for r in user.roles),
        *(f"group:{g}" for g in user.groups),
    }
    admitted = {_rule_key(rule.label) for rule in policy.paths if rule.allow & subjects}
    return layers, admitted


def _wider(old: frozenset[IPNetwork] | None, new: frozenset[IPNetwork] | None) -> bool:
    if new is None:
        return old is not None  # a layer that restricted no longer does
    return old is not None and not new <= old


def _widened(old: Policy, new: Policy) -> list[str]:
    found = []
    old_denies, new_denies = _denies(old), _denies(new)
    fewer_denies = bool(old_denies - new_denies)
    for name, user in sorted(new.users.items()):
        before = old.users.get(name)
        if before is None:
            continue
        old_layers, old_paths = _access(old, before)
        new_layers, new_paths = _access(new, user)
        # Without path rules every path passes: rules added to none narrow, never widen.
        paths_wider = (not new.paths and bool(old.paths)) or (
            bool(old.paths) and bool(new_paths - old_paths)
        )
        if (
            fewer_denies
            or paths_wider
            or any(_wider(a, b) for a, b in zip(old_layers, new_layers, strict=True))
        ):
            found.append(name)
    return found


def compare(old: Policy, new: Policy, *, hold_share: float) -> Change:
    """The change from `old` to `new`; `hold_share`: the share of path rules (0–1) whose
    removal holds a watched reload back."""
    old_rules, new_rules = _rules(old), _rules(new)
    removed_rules = sorted((old_rules - new_rules).elements())
    old_nets = {name: frozenset(nets) for name, nets in old.networks.items() if "#" not in name}
    new_nets = {name: frozenset(nets) for name, nets in new.networks.items() if "#" not in name}
    old_denies, new_denies = _denies(old), _denies(new)
    hold = ""
    lifted = _lifted(old, new)
    if old_denies and not new_denies:
        hold = f"it removes every deny list ({len(old_denies)} entries)"
    elif old_denies - new_denies and not new_denies - old_denies:
        # Deny entries only taken away (not one moved to another address): what a file cut
        # short does, and an unblocking worth a person's confirmation.
        hold = f"it removes deny entries ({', '.join(sorted(old_denies - new_denies)[:3])})"
    elif lifted:
        hold = f"it lifts the address rules of {', '.join(lifted[:3])}"
    elif old.api.unknown_tokens == "deny" and new.api.unknown_tokens != "deny":
        hold = "it lets unknown API tokens in"
    elif old.paths and len(removed_rules) > hold_share * len(old.paths):
        hold = (
            f"it removes {len(removed_rules)} of {len(old.paths)} path rules "
            f"(more than {hold_share:.0%})"
        )
    return Change(
        rules_added=tuple(sorted((new_rules - old_rules).elements())),
        rules_removed=tuple(removed_rules),
        networks_added=tuple(sorted(new_nets.keys() - old_nets.keys())),
        networks_removed=tuple(sorted(old_nets.keys() - new_nets.keys())),
        networks_changed=tuple(
            sorted(n for n in old_nets.keys() & new_nets.keys() if old_nets[n] != new_nets[n])
        ),
        denies_removed=tuple(sorted(old_denies - new_denies)),
        users_added=tuple(sorted(new.users.keys() - old.users.keys())),
        users_removed=tuple(sorted(old.users.keys() - new.users.keys())),
        widened=tuple(_widened(old, new)),
        hold=hold,
    )
