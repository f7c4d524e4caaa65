"""The policy as frozen values: levels (organisation, defaults, role, group, user) with the
settings each sets and where it was written, users, path rules, the API section, and the
whole Policy. Loaded by gateway.policy.load; the rules that resolve them are
gateway.policy.rules, and docs/policies.md ("Resolution") says them for operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from gateway.config.networks import IPNetwork
from gateway.errors import Problem
from gateway.paths import may_name_an_index


@dataclass(frozen=True)
class Where:
    """Where something is written, for explanations and messages."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Level:
    """What a user, role, group, the organisation or the defaults say. None = not said."""

    kind: str  # "user", "role", "group", "organisation", "defaults"
    name: str
    where: Where
    networks: frozenset[str] | None = None  # names in the NetworkIndex (inline CIDRs named)
    deny: frozenset[str] | None = None
    interval: float | None = None
    max_interval: float | None = None
    factors: tuple[str, ...] | None = None
    enforcement: str | None = None
    required_from: str = ""
    remember_device: float | None = None
    reverify: float | None = None  # math.inf: never within a session
    # True: only phishing-resistant factors (gateway.model.PHISHING_RESISTANT) for this level's
    # users, whatever another level says (a demand, like a deny list: nothing lifts it).
    phishing_resistant: bool | None = None
    setting_lines: tuple[tuple[str, int], ...] = ()  # (key, line) for explanations

    def line_of(self, key: str) -> int:
        return dict(self.setting_lines).get(key, self.where.line)

    @property
    def label(self) -> str:
        return (
            self.kind if self.kind in ("organisation", "defaults") else f"{self.kind} {self.name}"
        )


@dataclass(frozen=True)
class User:
    name: str
    level: Level
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    phone: str = ""
    email: str = ""


@dataclass(frozen=True)
class PathRule:
    index: int  # position in the merged list
    where: Where
    pattern: str
    methods: frozenset[str] | None  # None = every method
    allow: frozenset[str]  # "anyone", "authenticated", "token", "role:x", "group:x", "user:x"
    fresh: float = 0.0  # a factor passed within this many seconds (0: nothing more asked)
    fresh_factors: tuple[str, ...] = ()  # the factors that count for `fresh` (all, when empty)
    # `phishing_resistant: true`: fresh_factors are those, and without `fresh` (math.inf) one
    # passed at any time in the session counts.

    @property
    def label(self) -> str:
        methods = ",".join(sorted(self.methods)) if self.methods else "any method"
        return f"paths[{self.index}] {methods} {self.pattern}"


@dataclass(frozen=True)
class TokenLocation:
    header: str = ""  # a header name (Authorization, X-API-Key)
    schemes: tuple[str, ...] = ()  # for Authorization-style headers: Bearer, Token, JWT, Basic
    query: str = ""  # or a query parameter name


@dataclass(frozen=True)
class Api:
    locations: tuple[TokenLocation, ...] = (
        TokenLocation(header="Authorization", schemes=("Bearer", "Token", "JWT")),
    )
    unknown_tokens: str = "deny"  # "deny" or "networks"
    unknown_networks: frozenset[str] = frozenset()
    where: Where = Where("(default)", 0)


@dataclass(frozen=True)
class Policy:
    files: tuple[str, ...]
    networks: dict[str, tuple[IPNetwork, ...]]  # every named network, inline ones included
    organisation: Level
    defaults: Level
    roles: dict[str, Level]
    groups: dict[str, Level]
    users: dict[str, User]
    paths: tuple[PathRule, ...]
    api: Api = field(default_factory=Api)
    warnings: tuple[Problem, ...] = ()  # not wrong, but likely not meant (check-config)
    # The files as they were just before they were read (config.sections.files_signature):
    # a process given this policy later (a worker forked or replaced) can tell it is stale.
    signature: tuple[tuple[str, int, int], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.files

    @cached_property
    def index_rules(self) -> tuple[PathRule, ...]:
        """The rules that may tell a folder's index (`/admin/index.php`) from the folder
        (`/admin/`, `/admin`): those not ending in `/**` (which matches a folder and what is
        in it alike) whose last segment may be an index's name (gateway.policy.scripts)."""
        return tuple(
            rule
            for rule in self.paths
            if not rule.pattern.endswith("/**")
            and may_name_an_index(rule.pattern.rpartition("/")[2])
        )


def empty_policy() -> Policy:
    nowhere = Where("(built in)", 0)
    return Policy(
        files=(),
        networks={},
        organisation=Level("organisation", "", nowhere),
        defaults=Level(
            "defaults",
            "",
            nowhere,
            interval=0.0,
            factors=("totp", "recovery"),
            enforcement="required",
            remember_device=0.0,
        ),
        roles={},
        groups={},
        users={},
        paths=(),
    )
