"""policies/*.yaml: loaded, validated (every problem at once) and merged into a frozen Policy.

Sections: `networks`, `organisation`, `defaults`, `roles`, `groups`, `users`, `paths`, `api`.
Names may be defined in any file but only once; `paths` rules are concatenated in file-name
order; `organisation`, `defaults` and `api` may appear in one file only. The resolution rules
that use all this are in gateway/access.py and README ("Policy resolution").
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import phonenumbers
from yaml.nodes import MappingNode

from gateway.errors import ConfigError, Problem
from gateway.factors.names import FACTOR_NAMES
from gateway.loader import Source, Value, read_file, read_network_list
from gateway.pathrules import compile_glob

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METHOD = re.compile(r"^[A-Z][A-Z0-9-]{0,31}$")
_PHONE = re.compile(r"^\+?[0-9 ()\-.]{6,24}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

SETTING_KEYS = {
    "networks",
    "deny",
    "interval",
    "max_interval",
    "factors",
    "enforcement",
    "remember_device",
}


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

    @property
    def empty(self) -> bool:
        return not self.files


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


def _e164(text: str) -> str:
    """A phone number in E.164 (`+31612345678`), or `!` and the problem."""
    if not _PHONE.match(text) or not text.strip().startswith("+"):
        example = "+31 6 1234 5678"
        return f"!must be a phone number with its country code such as {example} but it's {text!r}"
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return f"!must be a phone number such as +31 6 1234 5678 but it's {text!r}"
    if not phonenumbers.is_possible_number(number):
        return f"!is not a possible phone number: {text!r}"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def policy_files(directory: str | Path) -> list[Path]:
    folder = Path(directory)
    return sorted(p for p in [*folder.glob("*.yaml"), *folder.glob("*.yml")] if p.is_file())


def load_policies(directory: str | Path) -> Policy:
    """Every *.yaml in the directory, merged and checked; ConfigError lists all problems."""
    files = policy_files(directory)
    builder = _Builder()
    sources = []
    for path in files:
        source = Source(str(path))
        sources.append(source)
        root = read_file(path, source)
        if root is not None:
            builder.add_file(root, source)
    policy = builder.finish(tuple(str(p) for p in files))
    warnings = [w for source in sources for w in source.warnings]
    for source in sources:  # values report to their file's Source, during finish() too
        builder.problems.extend(source.problems)
    if builder.problems:
        raise ConfigError(builder.problems)
    return replace(policy, warnings=tuple(warnings + path_rule_warnings(policy.paths)))


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
            if not later.allow <= rule.allow:
                others = ", ".join(sorted(later.allow - rule.allow))
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


def _warning(rule: PathRule, message: str) -> Problem:
    return Problem(rule.where.file, rule.where.line, f"paths[{rule.index}]", message)


def _covers(wide: str, narrow: str) -> bool:
    """Every path `narrow` matches, `wide` matches too (on sample paths of `narrow`)."""
    pattern = compile_glob(wide)
    return all(pattern.match(sample) for sample in _samples(narrow))


def _samples(pattern: str) -> list[str]:
    """Paths a glob matches, each wildcard filled in a few ways (a trailing `/**` is the
    tree itself and below, as gateway.pathrules.compile_glob reads it)."""
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


NAMED_SECTIONS = (
    ("networks", "network"),
    ("roles", "role"),
    ("groups", "group"),
    ("users", "user"),
)


class _Builder:
    TOP = frozenset(
        {"networks", "organisation", "defaults", "roles", "groups", "users", "paths", "api"}
    )

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.networks: dict[str, tuple[IPNetwork, ...]] = {}
        self.inline: dict[str, tuple[IPNetwork, ...]] = {}
        # kind ("network", "role", "group", "user") -> name -> (its YAML, where defined)
        self.defined: dict[str, dict[str, tuple[Value, Where]]] = {k: {} for _, k in NAMED_SECTIONS}
        self.singles: dict[str, tuple[Value, Where]] = {}
        self.paths: list[Value] = []

    def _network_list(self, value: Value) -> tuple[IPNetwork, ...]:
        """`[cidr, …]` inline, or `{file: list.txt}` (relative to the policy file)."""
        if isinstance(value.node, MappingNode):
            keys = value.mapping({"file"})
            if keys is None or "file" not in keys:
                value.fail("must be a list of networks or {file: PATH}")
                return ()
            text = keys["file"].text()
            if text is None:
                return ()
            path = Path(text) if Path(text).is_absolute() else Path(value.source.file).parent / text
            return tuple(read_network_list(path, value.source, value.path))
        found = (item.network() for item in value.sequence() or [])
        return tuple(n for n in found if n is not None)

    def fail(self, value: Value, message: str) -> None:
        self.problems.append(Problem(value.source.file, value.line, value.path, message))

    # -- collecting ------------------------------------------------------------------------

    def add_file(self, root: Value, source: Source) -> None:
        keys = root.mapping(self.TOP)
        if keys is None:
            return
        for section, kind in NAMED_SECTIONS:
            if section in keys:
                for name, value in keys[section].items():
                    seen = self.defined[kind]
                    if name in seen:
                        self.fail(
                            value, f"{kind} {name} is defined twice (first at {seen[name][1]})"
                        )
                    else:
                        seen[name] = (value, Where(source.file, value.line))
        for single in ("organisation", "defaults", "api"):
            if single in keys:
                if single in self.singles:
                    first = self.singles[single][1]
                    self.fail(keys[single], f"may be written in one file only (first at {first})")
                else:
                    self.singles[single] = (keys[single], Where(source.file, keys[single].line))
        if "paths" in keys:
            self.paths.extend(keys["paths"].sequence() or [])

    # -- building --------------------------------------------------------------------------

    def finish(self, files: tuple[str, ...]) -> Policy:
        for name, (value, _) in self.defined["network"].items():
            self.networks[name] = self._network_list(value)
        defined = self.defined
        roles = {n: self._level(v, "role", n, w) for n, (v, w) in defined["role"].items()}
        groups = {n: self._level(v, "group", n, w) for n, (v, w) in defined["group"].items()}
        users = {n: self._user(v, n, w, roles, groups) for n, (v, w) in defined["user"].items()}
        base = empty_policy()
        organisation = base.organisation
        if "organisation" in self.singles:
            value, where = self.singles["organisation"]
            organisation = self._level(
                value, "organisation", "", where, allowed={"networks", "deny"}
            )
        defaults = base.defaults
        if "defaults" in self.singles:
            value, where = self.singles["defaults"]
            said = self._level(
                value,
                "defaults",
                "",
                where,
                allowed=SETTING_KEYS - {"networks", "deny", "max_interval"},
            )
            defaults = _fill(said, base.defaults)
        api = self._api(*self.singles["api"]) if "api" in self.singles else Api()
        paths = tuple(
            r
            for r in (self._path(i, v, roles, groups, users) for i, v in enumerate(self.paths))
            if r
        )
        policy = Policy(
            files=files,
            networks={**self.networks, **self.inline},
            organisation=organisation,
            defaults=defaults,
            roles=roles,
            groups=groups,
            users=users,
            paths=paths,
            api=api,
        )
        self._check_caps(policy)
        return policy

    def _network_refs(self, value: Value, owner: str) -> frozenset[str] | None:
        items = value.sequence()
        if items is None:
            return None
        names: set[str] = set()
        for position, item in enumerate(items):
            text = item.text()
            if text is None:
                continue
            if text in self.networks:
                names.add(text)
                continue
            try:
                net = ipaddress.ip_network(text, strict=True)
            except ValueError:
                self.fail(
                    item, f"must name a network from `networks` or be a CIDR but it's {text!r}"
                )
                continue
            inline = f"{owner}#{position}"
            self.inline[inline] = (net,)
            names.add(inline)
        return frozenset(names)

    def _level(
        self,
        value: Value,
        kind: str,
        name: str,
        where: Where,
        *,
        allowed: set[str] | None = None,
        keys: dict[str, Value] | None = None,
    ) -> Level:
        if keys is None:
            keys = value.mapping(allowed if allowed is not None else SETTING_KEYS)
        if keys is None:
            return Level(kind, name, where)
        owner = f"{kind}:{name}" if name else kind
        said: dict[str, Any] = {}
        if "networks" in keys:
            said["networks"] = self._network_refs(keys["networks"], owner)
        if "deny" in keys:
            said["deny"] = self._network_refs(keys["deny"], owner + ":deny")
        for key in ("interval", "max_interval"):
            if key in keys:
                said[key] = _interval(keys[key])
        if "remember_device" in keys:
            said["remember_device"] = _interval(keys["remember_device"], word="off")
        if "factors" in keys:
            said["factors"] = _factors(keys["factors"])
        if "enforcement" in keys:
            enforcement, since = _enforcement(keys["enforcement"])
            said["enforcement"] = enforcement
            said["required_from"] = since
        lines = tuple((k, v.line) for k, v in keys.items())
        return Level(
            kind,
            name,
            where,
            setting_lines=lines,
            **{k: v for k, v in said.items() if v is not None},
        )

    def _user(
        self,
        value: Value,
        name: str,
        where: Where,
        roles: dict[str, Level],
        groups: dict[str, Level],
    ) -> User:
        keys = value.mapping(
            (SETTING_KEYS - {"max_interval"}) | {"roles", "groups", "phone", "email"}
        )
        if keys is None:
            return User(name, Level("user", name, where))
        member: dict[str, tuple[str, ...]] = {}
        for key, known in (("roles", roles), ("groups", groups)):
            names: list[str] = []
            for item in keys[key].sequence() or [] if key in keys else []:
                text = item.text()
                if text is not None and text not in known:
                    self.fail(item, f"names {key[:-1]} {text!r}, which no policy file defines")
                elif text is not None:
                    names.append(text)
            member[key] = tuple(names)
        phone = keys["phone"].text() if "phone" in keys else None
        if phone is not None:
            phone = _e164(phone)
            if phone.startswith("!"):
                keys["phone"].fail(phone[1:])
                phone = None
        email = keys["email"].text() if "email" in keys else None
        if email is not None and not _EMAIL.match(email):
            keys["email"].fail(f"must be an e-mail address but it's {email!r}")
        settings = {k: v for k, v in keys.items() if k in SETTING_KEYS}
        level = self._level(value, "user", name, where, keys=settings)
        return User(name, level, member["roles"], member["groups"], phone or "", email or "")

    def _path(
        self,
        index: int,
        value: Value,
        roles: dict[str, Level],
        groups: dict[str, Level],
        users: dict[str, User],
    ) -> PathRule | None:
        keys = value.mapping({"path", "methods", "allow"})
        if keys is None:
            return None
        if "path" not in keys or "allow" not in keys:
            self.fail(value, "needs `path` and `allow`")
            return None
        pattern = keys["path"].text()
        # A pattern must be in the normalised form requests are judged in, or it never matches.
        odd = ("//", "/./", "/../", "%", ";", "#", "?", "\\")
        if pattern is not None and (
            not pattern.startswith("/")
            or any(t in pattern for t in odd)
            or pattern.endswith(("/.", "/.."))
        ):
            keys["path"].fail(f"must be a path pattern such as /admin/** but it's {pattern!r}")
            pattern = None
        methods: frozenset[str] | None = None
        if "methods" in keys:
            found = set()
            for item in keys["methods"].sequence() or []:
                text = item.text()
                if text is not None and not METHOD.match(text):
                    item.fail(f"must be an HTTP method in capitals such as GET but it's {text!r}")
                elif text is not None:
                    found.add(text)
            # A rule that names GET covers HEAD: Django, Flask, Rails and PHP answer HEAD
            # with the GET view, so a HEAD must not fall through to a wider rule.
            methods = frozenset(found | ({"HEAD"} if "GET" in found else set()))
        allow: set[str] = set()
        known: dict[str, set[str]] = {"role": set(roles), "group": set(groups), "user": set(users)}
        for item in keys["allow"].sequence() or []:
            text = item.text()
            if text is None:
                continue
            kind, _, name = text.partition(":")
            if text in ("anyone", "authenticated", "token"):
                allow.add(text)
            elif kind in known and name:
                if name not in known[kind]:
                    item.fail(f"names {kind} {name!r}, which no policy file defines")
                allow.add(text)
            else:
                item.fail(
                    "must be anyone, authenticated, token, role:NAME, group:NAME or user:NAME "
                    f"but it's {text!r}"
                )
        if pattern is None:
            return None
        return PathRule(
            index, Where(value.source.file, value.line), pattern, methods, frozenset(allow)
        )

    def _api(self, value: Value, where: Where) -> Api:
        keys = value.mapping({"tokens", "unknown_tokens"})
        if keys is None:
            return Api()
        locations: list[TokenLocation] = []
        for item in keys["tokens"].sequence() or [] if "tokens" in keys else []:
            spec = item.mapping({"header", "schemes", "query"})
            if spec is None:
                continue
            if ("header" in spec) == ("query" in spec):
                item.fail("must name exactly one of header or query")
                continue
            schemes = (
                tuple(
                    t
                    for t in (
                        s.choice(("Bearer", "Token", "JWT", "Basic"))
                        for s in spec["schemes"].sequence() or []
                    )
                    if t
                )
                if "schemes" in spec
                else ()
            )
            if "header" in spec:
                locations.append(TokenLocation(header=spec["header"].text() or "", schemes=schemes))
            else:
                locations.append(TokenLocation(query=spec["query"].text() or ""))
        unknown, networks = "deny", frozenset[str]()
        if "unknown_tokens" in keys:
            node = keys["unknown_tokens"]
            if node.node.tag.endswith(":str"):
                if node.text() != "deny":
                    node.fail(f"must be deny or {{networks: [...]}} but it's {node.text()!r}")
            else:
                spec = node.mapping({"networks"})
                if spec is not None and "networks" in spec:
                    unknown, networks = (
                        "networks",
                        self._network_refs(spec["networks"], "api:unknown_tokens") or frozenset(),
                    )
                elif spec is not None:
                    node.fail("networks: is required")
        if "tokens" in keys and keys["tokens"].sequence() == []:
            keys["tokens"].fail("must list at least one place (header or query) to find tokens")
        return Api(tuple(locations) or Api().locations, unknown, networks, where)

    def _check_caps(self, policy: Policy) -> None:
        """An explicit interval longer than a cap of the user's roles or groups is an error."""
        for level in [*policy.roles.values(), *policy.groups.values()]:
            own, cap = level.interval, level.max_interval
            if own is not None and cap is not None and own > cap:
                self.problems.append(
                    Problem(
                        level.where.file,
                        level.line_of("interval"),
                        f"{level.kind}s.{level.name}.interval",
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
            for level in [
                user.level,
                *(policy.groups[g] for g in user.groups),
                *(policy.roles[r] for r in user.roles),
            ]:
                if level.interval is not None and level.interval > cap:
                    self.problems.append(
                        Problem(
                            level.where.file,
                            level.line_of("interval"),
                            f"{level.kind}s.{level.name}.interval",
                            f"{format_interval(level.interval)} is longer than the "
                            f"{format_interval(cap)} cap of {capper.label} "
                            f"({capper.where.file}:{capper.line_of('max_interval')})"
                            + (f" for user {user.name}" if level.kind != "user" else ""),
                        )
                    )
                    break


def _fill(said: Level, base: Level) -> Level:
    return Level(
        said.kind,
        said.name,
        said.where,
        interval=said.interval if said.interval is not None else base.interval,
        factors=said.factors if said.factors is not None else base.factors,
        enforcement=said.enforcement if said.enforcement is not None else base.enforcement,
        required_from=said.required_from if said.enforcement is not None else base.required_from,
        remember_device=said.remember_device
        if said.remember_device is not None
        else base.remember_device,
        setting_lines=said.setting_lines,
    )


def _interval(value: Value, word: str = "always") -> float | None:
    if value.node.tag.endswith(":str") and value.node.value == word:
        return 0.0
    if value.node.tag.endswith(":bool") and word == "off":
        # YAML 1.1 reads off/Off/OFF/no/false as a boolean.
        if str(value.node.value).lower() in ("off", "false", "no"):
            return 0.0
        value.fail(f"must be off or a duration such as 30d but it's {value.node.value!r}")
        return None
    return value.duration()


def _factors(value: Value) -> tuple[str, ...] | None:
    items = value.sequence()
    if items is None:
        return None
    found = [item.choice(FACTOR_NAMES) for item in items]
    if not items:
        value.fail("must list at least one factor (totp, sms, email, recovery)")
        return None
    return tuple(f for f in found if f is not None)


def _enforcement(value: Value) -> tuple[str | None, str]:
    if not value.node.tag.endswith(":map"):
        return value.choice(("required", "optional")), ""
    keys = value.mapping({"required_from"})
    if keys is None or "required_from" not in keys:
        value.fail("must be required, optional or {required_from: YYYY-MM-DD}")
        return None, ""
    raw = str(keys["required_from"].node.value)
    try:
        day = datetime.date.fromisoformat(raw)
    except ValueError:
        keys["required_from"].fail(f"must be a date such as 2026-12-01 but it's {raw!r}")
        return None, ""
    return "required_from", day.isoformat()


def format_interval(seconds: float) -> str:
    if seconds == 0:
        return "always"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"
