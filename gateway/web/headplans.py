"""Which headers of a request or response head never cross the proxy, worked out once per
head. The answer depends only on the head's names, its `Connection` lines and what the
configuration drops, which browsers and API clients repeat request after request; the head
itself is then copied in C and the names popped (gateway.web.forwarding adds and rewrites).

A plan is remembered for heads of at most PLANNED_NAMES names adding up to PLANNED_LENGTH
characters, at most PLANNED of them per worker (the oldest go first): about 3 MB at worst
(tests/web/test_forwarding.py measures it), tens of KB for the few heads browsers and API
clients send. Other heads are planned every time, the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.bounded import remember
from gateway.headers import fold

PLANNED = 256
PLANNED_NAMES = 32
PLANNED_LENGTH = 768

Names = tuple[str, ...]
Headers = CIMultiDictProxy[str] | CIMultiDict[str]
# The names to remove (as sent), and the names left, lower case.
Plan = tuple[Names, frozenset[str]]


def _tokens(lines: Iterable[str]) -> frozenset[str]:
    """Header names listed in `Connection` lines, folded."""
    names: set[str] = set()
    for line in lines:
        names.update(fold(token.strip()) for token in line.split(",") if token.strip())
    return frozenset(names)


def _request_plan(names: Names, connection: Names, drop: frozenset[str]) -> Plan:
    """Request headers are compared folded (case, and `_` as `-`: CGI reads X_Forwarded_For
    as X-Forwarded-For). Dropping a name drops every header of that name: names equal but
    for case fold alike."""
    named = _tokens(connection)
    removed = tuple(n for n in names if fold(n) in drop or fold(n) in named)
    return removed, frozenset()


def _response_plan(names: Names, connection: Names, drop: frozenset[str]) -> Plan:
    """Response headers are compared in lower case."""
    named = _tokens(connection)
    removed = tuple(n for n in names if n.lower() in drop or n.lower() in named)
    return removed, frozenset(n.lower() for n in names) - {n.lower() for n in removed}


Make = Callable[[Names, Names, frozenset[str]], Plan]


class _Plans:
    """Plans already worked out, by the function that makes them, the head's names, its
    `Connection` lines and what is dropped."""

    def __init__(self) -> None:
        self.known: dict[tuple[Make, Names, Names, frozenset[str]], Plan] = {}

    def __call__(self, make: Make, headers: Headers, drop: frozenset[str]) -> Plan:
        names = tuple(headers.keys())
        connection = tuple(headers.getall("Connection", ()))
        key = (make, names, connection, drop)
        known = self.known.get(key)
        if known is not None:
            return known
        plan = make(names, connection, drop)
        small = len(names) + len(connection) <= PLANNED_NAMES
        if small and sum(map(len, names)) + sum(map(len, connection)) <= PLANNED_LENGTH:
            remember(self.known, key, plan, PLANNED)
        return plan


_plans = _Plans()  # a memo of pure functions, as functools.lru_cache would keep


def request_removals(headers: Headers, drop: frozenset[str]) -> Names:
    """The request headers never relayed: `drop` (folded names) and those its `Connection`
    lines name."""
    return _plans(_request_plan, headers, drop)[0]


def response_plan(headers: Headers, drop: frozenset[str]) -> Plan:
    """The response headers the client never gets (`drop`, lower case, and those named in
    `Connection`), and the names of those it gets."""
    return _plans(_response_plan, headers, drop)
