"""Which named networks contain an address, without scanning networks per request.

Networks are kept in one dict per (IP version, prefix length), keyed by the network's integer
prefix; a lookup is one dict probe per prefix length in use (at most 33 for IPv4 and 129 for
IPv6, in practice a handful), and answers are cached per address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache

from gateway.config.networks import IPNetwork


class NetworkIndex:
    def __init__(self, named: Mapping[str, Iterable[IPNetwork]]) -> None:
        tables: dict[tuple[int, int], dict[int, set[str]]] = {}
        for name, networks in named.items():
            for net in networks:
                key = (net.version, net.prefixlen)
                bits = net.max_prefixlen - net.prefixlen
                tables.setdefault(key, {}).setdefault(int(net.network_address) >> bits, set()).add(
                    name
                )
        frozen = {key: {k: frozenset(v) for k, v in table.items()} for key, table in tables.items()}
        self._v4 = [(32 - plen, frozen[(4, plen)]) for (v, plen) in sorted(frozen) if v == 4]
        self._v6 = [(128 - plen, frozen[(6, plen)]) for (v, plen) in sorted(frozen) if v == 6]
        self.match = lru_cache(maxsize=65536)(self._match)

    def _match(self, address: str) -> frozenset[str]:
        """Names of every network containing `address`; empty for an unparsable address."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return frozenset()
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        value = int(ip)
        found: set[str] = set()
        for shift, table in self._v4 if ip.version == 4 else self._v6:
            names = table.get(value >> shift)
            if names:
                found.update(names)
        return frozenset(found)
