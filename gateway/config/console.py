"""`admin.console` in gateway.yaml: the helpdesk console (gateway.web.helpdesk): where it is
served, from which networks, which policy roles make an administrator of which rank, how
fresh their second factor must be, and how many pages a minute each may ask for. Parsed into
frozen values with every problem collected; what the console does is not here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gateway.config.networks import IPNetwork
from gateway.config.yaml_reader import Value

# The console's ranks, lowest first: an auditor reads; a helpdesk also acts on users; an
# admin also acts on helpdesk users. Nobody acts on a user of a higher rank than their own.
RANKS = ("auditor", "helpdesk", "admin")
# Where it is served: beside the metrics on `admin.listen`, or under {prefix}admin/ on `listen`.
PLACES = ("admin_listener", "prefix")


@dataclass(frozen=True)
class Console:
    at: str = "prefix"
    networks: tuple[str, ...] = ()  # names of the policy's networks
    cidrs: tuple[IPNetwork, ...] = ()  # and networks written here
    # rank → the policy roles that give it (by default each rank's own name)
    roles: tuple[tuple[str, tuple[str, ...]], ...] = tuple((r, (r,)) for r in RANKS)
    fresh: float = 15 * 60.0  # a second factor passed within this long to read the console
    reads_per_minute: int = 120  # pages one administrator may ask for in a minute
    actions_per_minute: int = 10  # and changes they may make
    max_query: int = field(default=2048)  # bytes of query string a console page reads

    def rank_of(self, roles: tuple[str, ...]) -> int:
        """0 for none; else 1 + the index of the highest rank one of `roles` gives."""
        found = 0
        for position, (_, givers) in enumerate(self.roles, start=1):
            if set(givers) & set(roles):
                found = max(found, position)
        return found


def read_console(value: Value) -> Console | None:
    keys = value.mapping({"at", "networks", "roles", "fresh", "rate"})
    if keys is None:
        return None
    default = Console()
    at = keys["at"].choice(PLACES) if "at" in keys else default.at
    names: list[str] = []
    cidrs: list[IPNetwork] = []
    if "networks" not in keys:
        value.fail(
            "networks: is required (policy network names or CIDRs the console may be reached from)"
        )
    else:
        for item in keys["networks"].sequence() or []:
            text = item.text()
            if text is None:
                continue
            if any(c in text for c in "./:"):
                try:
                    cidrs.append(ipaddress.ip_network(text.strip(), strict=False))
                except ValueError:
                    item.fail(f"must be a network such as 10.0.0.0/8 but it's {text!r}")
            else:
                names.append(text.strip())
    roles = default.roles
    if "roles" in keys:
        given = keys["roles"].mapping(set(RANKS))
        if given is not None:
            chosen = dict(default.roles)
            for rank, listed in given.items():
                chosen[rank] = tuple(t for v in listed.sequence() or [] if (t := v.text()))
            roles = tuple((rank, chosen[rank]) for rank in RANKS)
    fresh = keys["fresh"].duration(minimum=30.0) if "fresh" in keys else default.fresh
    reads, actions = default.reads_per_minute, default.actions_per_minute
    if "rate" in keys:
        rate = keys["rate"].mapping({"read", "act"})
        if rate is not None:
            if "read" in rate:
                reads = rate["read"].integer(minimum=1, maximum=100_000) or reads
            if "act" in rate:
                actions = rate["act"].integer(minimum=1, maximum=10_000) or actions
    return Console(
        at=at or default.at,
        networks=tuple(names),
        cidrs=tuple(cidrs),
        roles=roles,
        fresh=default.fresh if fresh is None else fresh,
        reads_per_minute=reads,
        actions_per_minute=actions,
    )
