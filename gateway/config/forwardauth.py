"""The `forward_auth` part of gateway.yaml: the endpoint nginx (`auth_request`), Caddy
(`forward_auth`) and Traefik (`ForwardAuth`) ask for the Decision (gateway.web.forwardauth).
Without the section the endpoint does not exist. Parsed with every problem collected, like
the other sections (gateway.config.load calls `read_forward_auth`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.config.yaml_reader import Value
from gateway.headers import MANAGED, fold

_HEADER = re.compile(r"^[!#$%&'*+.^`|~0-9A-Za-z-]+$")  # an RFC 9110 token, no `_`
_LONGEST_REUSE = 60.0  # a session read reused longer than a minute is a typo, not a plan


@dataclass(frozen=True)
class ForwardAuth:
    # The response headers naming a signed-in user and their groups (comma-separated), which
    # the front proxy copies onto the request it sends to the CRM.
    user_header: str = "Remote-User"
    groups_header: str = "Remote-Groups"
    # Seconds a worker answers a signed-in request from the session it read last, without
    # asking the shared store again (0: every request reads it). A logout or a revocation on
    # another worker counts here within this time; on this worker at once.
    session_cache: float = 2.0


def read_forward_auth(keys: dict[str, Value], identity_header: str = "") -> ForwardAuth | None:
    """`identity_header`: gateway login's (login.identity_header), the default user header
    then: the CRM reads the user from the one header whichever mode carries the traffic."""
    if "forward_auth" not in keys:
        return None
    found = keys["forward_auth"].mapping({"user_header", "groups_header", "session_cache"})
    default = ForwardAuth(user_header=identity_header or ForwardAuth.user_header)
    if found is None:
        return default
    user = _header(found, "user_header", default.user_header)
    groups = _header(found, "groups_header", default.groups_header)
    if fold(user) == fold(groups):
        found["groups_header"].fail(f"must differ from user_header but both are {user!r}")
    reuse = default.session_cache
    if "session_cache" in found:
        seconds = found["session_cache"].duration(minimum=0.0)
        if seconds is not None and seconds > _LONGEST_REUSE:
            found["session_cache"].fail("must be at most 1m")
        elif seconds is not None:
            reuse = seconds
    return ForwardAuth(user_header=user, groups_header=groups, session_cache=reuse)


def _header(keys: dict[str, Value], name: str, default: str) -> str:
    if name not in keys:
        return default
    text = keys[name].text()
    if text is None:
        return default
    if not _HEADER.match(text):
        keys[name].fail(f"must be a header name (letters, digits, -) but it's {text!r}")
        return default
    if fold(text) in MANAGED:
        keys[name].fail(f"must not be a header the gateway manages: {text!r}")
        return default
    return text
