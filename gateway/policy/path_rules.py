"""One entry of a policy's `paths` list read into a PathRule: its pattern (in the normalised
form requests are judged in), the methods it covers (GET brings HEAD), who it allows, and
whether it asks for a fresh factor (`fresh`, of the `factors` it names, or a phishing-resistant
one: `phishing_resistant: true`)."""

from __future__ import annotations

import math
import re

from gateway.config.yaml_reader import Value
from gateway.model import PHISHING_RESISTANT
from gateway.policy.model import Level, PathRule, User, Where
from gateway.policy.values import factors_value

METHOD = re.compile(r"^[A-Z][A-Z0-9-]{0,31}$")


def read_path_rule(
    index: int,
    value: Value,
    roles: dict[str, Level],
    groups: dict[str, Level],
    users: dict[str, User],
) -> PathRule | None:
    keys = value.mapping({"path", "methods", "allow", "fresh", "factors", "phishing_resistant"})
    if keys is None:
        return None
    if "path" not in keys or "allow" not in keys:
        value.fail("needs `path` and `allow`")
        return None
    pattern = keys["path"].text()
    # A pattern is written as rules read a path (gateway.paths.match_form: normalised,
    # its escapes decoded): no escapes, dot segments, doubled slashes or what is refused.
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
    fresh = 0.0
    if "fresh" in keys:
        seconds = keys["fresh"].duration()
        if seconds is not None and seconds < 60:
            keys["fresh"].fail(f"must be a duration of at least 1m but it's {seconds:g}s")
        elif seconds is not None:
            fresh = seconds
    fresh_factors: tuple[str, ...] = ()
    if "factors" in keys:
        fresh_factors = factors_value(keys["factors"]) or ()
    if "phishing_resistant" in keys and keys["phishing_resistant"].boolean():
        others = [f for f in fresh_factors if f not in PHISHING_RESISTANT]
        if others:
            keys["factors"].fail(
                f"names {', '.join(others)}, which phishing_resistant does not count (only "
                f"{', '.join(PHISHING_RESISTANT)})"
            )
        fresh_factors = tuple(f for f in fresh_factors if f not in others) or PHISHING_RESISTANT
    if fresh_factors and not fresh:
        # `factors` without `fresh`: one of them passed at any time in this session (a sign-in
        # by another factor, one a fake page could have relayed, does not count).
        fresh = math.inf
    if allow & {"anyone", "token"} and fresh:
        asked = "fresh" if "fresh" in keys else "phishing_resistant"
        keys[asked].fail(
            "asks a signed-in user for a fresh factor: it cannot go with anyone or token "
            "(who has no session to verify)"
        )
    if pattern is None:
        return None
    return PathRule(
        index,
        Where(value.source.file, value.line),
        pattern,
        methods,
        frozenset(allow),
        fresh=fresh,
        fresh_factors=fresh_factors,
    )
