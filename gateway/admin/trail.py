"""Audit-search criteria read from what a person types: a user name, event names and
prefixes, an address, an outcome, and moments (`1d` back from now, or a UTC date or time).
`crm-gateway audit` and the console's activity page read them the same way. Each function
raises BadArgument with a sentence about the value when it cannot be understood; the caller
names the option or field it came from."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime

from gateway.errors import BadArgument
from gateway.model import canonical_user

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WHEN = (
    "a duration back from now such as 30m, 12h, 1d or 2w, or a UTC date or time such as "
    "2026-11-22 or 2026-11-22T08:30"
)
OUTCOMES = ("ok", "failed", "refused", "denied", "locked")


def parse_moment(text: str, now: float) -> float | None:
    """Seconds since the epoch from `1d` (that long before `now`) or an ISO date or date and
    time (UTC unless it names an offset); None when it is neither."""
    cleaned = text.strip()
    match = _DURATION.match(cleaned.lower())
    if match:
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def moment(text: str, now: float) -> float:
    found = parse_moment(text, now)
    if found is None:
        raise BadArgument(f"must be {WHEN}, but it's {text[:100]!r}")
    return found


def event_names(events: list[str]) -> tuple[str, ...]:
    """Exact names and prefixes ending in `*`; () for every event (`*` alone)."""
    names = []
    for raw in events:
        name = raw.strip()
        if not name or "*" in name[:-1]:
            raise BadArgument(
                "must be a name or a prefix ending in *, such as challenge.* "
                f"but it's {raw[:100]!r}"
            )
        if name == "*":
            return ()  # every event
        names.append(name)
    return tuple(names)


def user_name(text: str) -> str:
    user = canonical_user(text)
    if not user:
        raise BadArgument("the user name is empty")
    return user


def address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise BadArgument(f"must be an IP address but it's {text[:100]!r}") from None
