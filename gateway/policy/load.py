"""policies/*.yaml: loaded, validated (every problem at once) and merged into a frozen Policy.

Sections: `networks`, `organisation`, `defaults`, `roles`, `groups`, `users`, `paths`, `api`.
Names may be defined in any file but only once; `paths` rules are concatenated in file-name
order; `organisation`, `defaults` and `api` may appear in one file only. The resolution rules
that use all this are gateway.policy.rules and docs/policies.md ("Resolution").
"""

from __future__ import annotations

import gc
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode

from gateway.config.networks import IPNetwork
from gateway.config.process import files_signature, policy_files
from gateway.config.yaml_reader import Source, Value, read_file, read_network_list
from gateway.errors import ConfigError, Problem
from gateway.policy.checks import check_caps, path_rule_warnings
from gateway.policy.model import (
    Api,
    Level,
    Policy,
    TokenLocation,
    User,
    Where,
    empty_policy,
)
from gateway.policy.path_rules import read_path_rule
from gateway.policy.values import (
    EMAIL,
    e164,
    enforcement_value,
    factors_value,
    fill_defaults,
    interval_value,
    reverify_value,
)

SETTING_KEYS = {
    "networks",
    "deny",
    "interval",
    "max_interval",
    "factors",
    "enforcement",
    "remember_device",
    "reverify",
    "phishing_resistant",
}


def load_policies(directory: str | Path, *, shown_as: str | Path | None = None) -> Policy:
    """Every *.yaml in the directory, merged and checked; ConfigError lists all problems.
    `shown_as`: the folder the files are named in (problems, rules' sources), when they were
    copied out of it (gateway.policy.inforce)."""
    with collection_paused():
        return _load(directory, shown_as)


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cycle collector held off while a policy is built: it would walk the growing
    YAML tree and policy over and over (60 % of loading 10,000 users and 50,000 networks:
    2.1 s against 0.8 s); what a load leaves behind is freed by reference counting as usual.
    Left as it was found (off stays off; a load in another thread may turn it on early)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(directory: str | Path, shown_as: str | Path | None) -> Policy:
    signature = files_signature(directory)
    files = policy_files(directory)
    shown = [Path(shown_as) / path.name for path in files] if shown_as else files
    builder = _Builder()
    sources = []
    for path, name in zip(files, shown, strict=True):
        source = Source(str(name))
        sources.append(source)
        root = read_file(path, source)
        if root is not None:
            builder.add_file(root, source)
    policy = builder.finish(tuple(str(name) for name in shown))
    warnings = [w for source in sources for w in source.warnings]
    for source in sources:  # values report to their file's Source, during finish() too
        builder.problems.extend(source.problems)
    if builder.problems:
        raise ConfigError(builder.problems)
    warnings += path_rule_warnings(policy.paths)
    return replace(policy, warnings=tuple(warnings), signature=signature)


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
            defaults = fill_defaults(said, base.defaults)
        api = self._api(*self.singles["api"]) if "api" in self.singles else Api()
        paths = tuple(
            r
            for r in (read_path_rule(i, v, roles, groups, users) for i, v in enumerate(self.paths))
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
        self.problems.extend(check_caps(policy))
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
                said[key] = interval_value(keys[key])
        if "remember_device" in keys:
            said["remember_device"] = interval_value(keys["remember_device"], word="off")
        if "reverify" in keys:
            said["reverify"] = reverify_value(keys["reverify"])
        if "factors" in keys:
            said["factors"] = factors_value(keys["factors"])
        if "phishing_resistant" in keys:
            said["phishing_resistant"] = keys["phishing_resistant"].boolean()
        if "enforcement" in keys:
            enforcement, since = enforcement_value(keys["enforcement"])
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
            phone = e164(phone)
            if phone.startswith("!"):
                keys["phone"].fail(phone[1:])
                phone = None
        email = keys["email"].text() if "email" in keys else None
        if email is not None and not EMAIL.match(email):
            keys["email"].fail(f"must be an e-mail address but it's {email!r}")
        settings = {k: v for k, v in keys.items() if k in SETTING_KEYS}
        level = self._level(value, "user", name, where, keys=settings)
        return User(name, level, member["roles"], member["groups"], phone or "", email or "")

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
