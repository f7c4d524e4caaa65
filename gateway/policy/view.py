"""The policy in force, ready to decide with: the loaded Policy with its network index and
its users by canonical name, swapped whole when the files reload (gateway.policy.live)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.model import Settings, canonical_user
from gateway.policy.model import Level, Policy, User, Where
from gateway.policy.networks import NetworkIndex
from gateway.policy.rules import resolve_settings

SETTINGS_KEPT = 10_000


@dataclass(frozen=True)
class PolicyView:
    """The policy in force, ready to decide with: swapped whole when it reloads."""

    policy: Policy
    index: NetworkIndex
    users: Mapping[str, User]  # canonical name → user
    by_method: bool = False  # some path rule names methods (the method can change a Decision)
    # Settings resolved once per user for this policy (asked on every signed-in request):
    # the view is replaced whole on reload, and its cache with it. Bounded by SETTINGS_KEPT.
    _settings: dict[str, Settings] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, policy: Policy) -> PolicyView:
        users = {canonical_user(name): user for name, user in policy.users.items()}
        by_method = any(rule.methods is not None for rule in policy.paths)
        return cls(policy, NetworkIndex(policy.networks), users, by_method)

    def user_for(self, name: str) -> User:
        """The policy's user, or one with no roles or groups: a CRM user nobody listed is
        judged by the organisation rules and the defaults."""
        found = self.users.get(name)
        if found is not None:
            return found
        return User(name, Level("user", name, Where("(not in any policy file)", 0)))

    def settings(self, name: str) -> Settings:
        found = self._settings.get(name)
        if found is None:
            found = resolve_settings(self.policy, self.user_for(name))
            if len(self._settings) >= SETTINGS_KEPT:
                self._settings.clear()  # a flood of unknown names: start again, never grow
            self._settings[name] = found
        return found
