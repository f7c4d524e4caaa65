"""NetworkIndex: which named networks contain an address, checked against ipaddress itself."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from gateway.config.networks import IPNetwork
from gateway.policy.networks import NetworkIndex


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def index(**named: list[str]) -> NetworkIndex:
    """NetworkIndex from keyword names (underscores become dashes) and CIDR strings."""
    return NetworkIndex(
        {n.replace("_", "-"): [net(t) for t in cidrs] for n, cidrs in named.items()}
    )


# -- IPv4 and IPv6 ---------------------------------------------------------------------------


def test_ipv4_address_inside_a_network_is_reported_by_name() -> None:
    found = index(office=["203.0.113.0/24"], vpn=["198.51.100.0/25"])

    assert found.match("203.0.113.7") == {"office"}
    assert found.match("198.51.100.127") == {"vpn"}


def test_ipv4_network_bounds_are_inclusive_and_exact() -> None:
    found = index(vpn=["198.51.100.0/25"])

    assert found.match("198.51.100.0") == {"vpn"}
    assert found.match("198.51.100.127") == {"vpn"}
    assert found.match("198.51.100.128") == frozenset()
    assert found.match("198.51.99.255") == frozenset()


def test_ipv6_address_inside_a_network_is_reported_by_name() -> None:
    found = index(office=["2001:db8:10::/48"])

    assert found.match("2001:db8:10::1") == {"office"}
    assert found.match("2001:db8:10:ffff:ffff:ffff:ffff:ffff") == {"office"}
    assert found.match("2001:db8:11::") == frozenset()


def test_ipv6_address_in_any_spelling_is_matched() -> None:
    found = index(office=["2001:db8:10::/48"])

    assert found.match("2001:0DB8:0010:0000:0000:0000:0000:0001") == {"office"}
    assert found.match("2001:db8:10:0::1") == {"office"}


def test_scoped_ipv6_address_is_matched_on_its_address() -> None:
    assert index(link=["fe80::/10"]).match("fe80::1%eth0") == {"link"}


def test_one_name_may_hold_ipv4_and_ipv6_networks() -> None:
    found = index(loopback=["127.0.0.0/8", "::1/128"])

    assert found.match("127.0.0.1") == {"loopback"}
    assert found.match("127.255.0.9") == {"loopback"}
    assert found.match("::1") == {"loopback"}
    assert found.match("::2") == frozenset()


def test_ipv4_network_never_matches_an_ipv6_address_with_the_same_bits() -> None:
    # 10.0.0.1 as an integer is ::a00:1; the versions are kept apart.
    found = index(ten=["10.0.0.0/8"], v6=["::a00:0/104"])

    assert found.match("::a00:1") == {"v6"}
    assert found.match("10.0.0.1") == {"ten"}


# -- overlaps, hosts and everything ------------------------------------------------------------


def test_overlapping_networks_are_all_reported() -> None:
    found = index(campus=["10.1.0.0/16"], lab=["10.1.2.0/24"], host=["10.1.2.3/32"])

    assert found.match("10.1.2.3") == {"campus", "lab", "host"}
    assert found.match("10.1.2.4") == {"campus", "lab"}
    assert found.match("10.1.3.4") == {"campus"}


def test_overlapping_ipv6_networks_are_all_reported() -> None:
    found = index(site=["2001:db8::/32"], floor=["2001:db8:1::/48"], box=["2001:db8:1::5/128"])

    assert found.match("2001:db8:1::5") == {"site", "floor", "box"}
    assert found.match("2001:db8:1::6") == {"site", "floor"}
    assert found.match("2001:db8:2::5") == {"site"}


def test_the_same_network_under_two_names_reports_both() -> None:
    found = index(office=["10.0.0.0/8"], staff=["10.0.0.0/8"])

    assert found.match("10.9.9.9") == {"office", "staff"}


def test_ipv4_host_route_matches_only_that_address() -> None:
    found = index(integration_server=["192.0.2.10/32"])

    assert found.match("192.0.2.10") == {"integration-server"}
    assert found.match("192.0.2.11") == frozenset()
    assert found.match("192.0.2.9") == frozenset()


def test_ipv6_host_route_matches_only_that_address() -> None:
    found = index(box=["2001:db8::10/128"])

    assert found.match("2001:db8::10") == {"box"}
    assert found.match("2001:db8::11") == frozenset()


def test_ipv4_default_route_matches_every_ipv4_address_and_no_ipv6_one() -> None:
    found = index(anywhere=["0.0.0.0/0"])

    assert found.match("0.0.0.0") == {"anywhere"}
    assert found.match("255.255.255.255") == {"anywhere"}
    assert found.match("10.0.0.1") == {"anywhere"}
    assert found.match("2001:db8::1") == frozenset()


def test_ipv6_default_route_matches_every_ipv6_address_and_no_ipv4_one() -> None:
    found = index(anywhere=["::/0"])

    assert found.match("::") == {"anywhere"}
    assert found.match("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == {"anywhere"}
    assert found.match("2001:db8::1") == {"anywhere"}
    assert found.match("10.0.0.1") == frozenset()


# -- IPv4-mapped IPv6 ----------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["::ffff:10.0.0.1", "::ffff:a00:1", "::FFFF:10.0.0.1"])
def test_ipv4_mapped_ipv6_address_matches_the_ipv4_network(address: str) -> None:
    found = index(ten=["10.0.0.0/8"], host=["10.0.0.1/32"], anywhere=["0.0.0.0/0"])

    assert found.match(address) == {"ten", "host", "anywhere"}


def test_ipv4_mapped_address_outside_the_ipv4_network_is_not_matched() -> None:
    assert index(ten=["10.0.0.0/8"]).match("::ffff:11.0.0.1") == frozenset()


def test_ipv4_mapped_address_in_a_deny_list_denies_the_plain_ipv4_client() -> None:
    # The shipped `blocked` network as a dual-stack socket reports the client.
    found = index(blocked=["192.0.2.66/32"])

    assert found.match("::ffff:192.0.2.66") == {"blocked"}
    assert found.match("192.0.2.66") == {"blocked"}


def test_network_written_in_ipv4_mapped_form_is_refused_when_loading(tmp_path: Path) -> None:
    """The index matches clients in their IPv4 form, so a ::ffff:a.b.c.d/n network could
    never match: the loader refuses it instead of letting a deny list silently fail."""
    from gateway.errors import ConfigError
    from gateway.policy.load import load_policies

    (tmp_path / "p.yaml").write_text('networks:\n  blocked: ["::ffff:192.0.2.0/120"]\n')
    with pytest.raises(ConfigError) as refused:
        load_policies(tmp_path)
    assert [str(p) for p in refused.value.problems] == [
        f"{tmp_path}/p.yaml:2: networks.blocked[0]: is an IPv4-mapped IPv6 network: "
        "write it in IPv4 form, not '::ffff:192.0.2.0/120'"
    ]


# -- addresses that match nothing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "",
        "garbage",
        "10.0.0",
        "10.0.0.256",
        "10.0.0.1/32",
        " 10.0.0.1",
        "10.0.0.1 ",
        "010.0.0.1",
        "2001:db8:::1",
        "[2001:db8::1]",
        "10.0.0.1:8080",
        "unix:/run/gw.sock",
    ],
)
def test_unparsable_address_matches_nothing(address: str) -> None:
    found = index(everything4=["0.0.0.0/0"], everything6=["::/0"], ten=["10.0.0.0/8"])

    assert found.match(address) == frozenset()


def test_address_in_no_network_matches_nothing() -> None:
    found = index(office=["203.0.113.0/24"], v6office=["2001:db8:10::/48"])

    assert found.match("192.0.2.1") == frozenset()
    assert found.match("2001:db8:20::1") == frozenset()


def test_empty_index_matches_nothing() -> None:
    found = NetworkIndex({})

    assert found.match("10.0.0.1") == frozenset()
    assert found.match("::1") == frozenset()


def test_name_with_no_networks_matches_nothing() -> None:
    found = NetworkIndex({"nowhere": []})

    assert found.match("10.0.0.1") == frozenset()


def test_repeated_lookups_give_the_same_answer() -> None:
    found = index(office=["10.0.0.0/8"])

    assert found.match("10.1.1.1") == found.match("10.1.1.1") == {"office"}
    assert found.match("11.1.1.1") == found.match("11.1.1.1") == frozenset()


def test_two_indexes_do_not_share_answers() -> None:
    first = index(office=["10.0.0.0/8"])
    second = index(vpn=["10.0.0.0/8"])

    assert first.match("10.0.0.1") == {"office"}
    assert second.match("10.0.0.1") == {"vpn"}


# -- a big random index against a linear scan ---------------------------------------------------


def _random_networks(rnd: random.Random, count: int) -> list[tuple[str, IPNetwork]]:
    """Networks of most prefix lengths, a third of them nested inside an earlier one."""
    out: list[tuple[str, IPNetwork]] = []
    for _ in range(count):
        name = f"n{rnd.randrange(4000)}"
        if out and rnd.random() < 0.35:
            _, parent = rnd.choice(out)
            if parent.prefixlen < parent.max_prefixlen:
                new_prefix = rnd.randint(parent.prefixlen + 1, parent.max_prefixlen)
                subnets = 1 << (new_prefix - parent.prefixlen)
                size = 1 << (parent.max_prefixlen - new_prefix)
                start = int(parent.network_address) + rnd.randrange(subnets) * size
                out.append((name, ipaddress.ip_network((start, new_prefix))))
                continue
        if rnd.random() < 0.5:
            prefix = rnd.randint(12, 32)
            address = rnd.getrandbits(32) >> (32 - prefix) << (32 - prefix)
            out.append((name, ipaddress.IPv4Network((address, prefix))))
        else:
            prefix = rnd.randint(20, 128)
            address = rnd.getrandbits(128) >> (128 - prefix) << (128 - prefix)
            out.append((name, ipaddress.IPv6Network((address, prefix))))
    return out


def _random_addresses(rnd: random.Random, networks: list[tuple[str, IPNetwork]]) -> list[str]:
    """Addresses inside chosen networks (some spelled IPv4-mapped), and anywhere at all."""
    out = []
    for _ in range(2000):
        roll = rnd.random()
        if roll < 0.6:
            _, chosen = rnd.choice(networks)
            host_bits = chosen.max_prefixlen - chosen.prefixlen
            address = ipaddress.ip_address(
                int(chosen.network_address) + rnd.getrandbits(host_bits)
                if host_bits
                else int(chosen.network_address)
            )
            if address.version == 4 and rnd.random() < 0.25:
                out.append(f"::ffff:{address}")
            else:
                out.append(str(address))
        elif roll < 0.8:
            out.append(str(ipaddress.IPv4Address(rnd.getrandbits(32))))
        else:
            out.append(str(ipaddress.IPv6Address(rnd.getrandbits(128))))
    return out


class LinearScan:
    """Every network tried in turn, with ipaddress's own network and mask integers."""

    def __init__(self, networks: list[tuple[str, IPNetwork]]) -> None:
        self.networks = networks
        self.rows: dict[int, list[tuple[str, int, int]]] = {4: [], 6: []}
        for name, network in networks:
            self.rows[network.version].append(
                (name, int(network.network_address), int(network.netmask))
            )

    def match(self, address: str) -> frozenset[str]:
        ip = self._ip(address)
        value = int(ip)
        return frozenset(name for name, bits, mask in self.rows[ip.version] if value & mask == bits)

    def match_with_contains(self, address: str) -> frozenset[str]:
        """The slow spelling, `ip in network`, that the integers above must agree with."""
        ip = self._ip(address)
        return frozenset(name for name, network in self.networks if ip in network)

    @staticmethod
    def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """IPv4-mapped addresses are judged as their IPv4 address."""
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip


def test_big_random_index_agrees_exactly_with_a_linear_scan() -> None:
    rnd = random.Random(20261121)
    networks = _random_networks(rnd, 20_000)
    named: dict[str, list[IPNetwork]] = {}
    for name, network in networks:
        named.setdefault(name, []).append(network)
    addresses = _random_addresses(rnd, networks)
    scan = LinearScan(networks)
    for address in addresses[:40]:
        assert scan.match(address) == scan.match_with_contains(address)

    found = NetworkIndex(named)

    disagreements = []
    sizes = []
    for address in addresses:
        expected = scan.match(address)
        got = found.match(address)
        sizes.append(len(expected))
        if got != expected:
            disagreements.append((address, sorted(got), sorted(expected)))
    assert disagreements == []
    # The sample exercises what it claims to: misses, single hits, overlaps and mapped spellings.
    assert sizes.count(0) >= 100
    assert sizes.count(1) >= 100
    assert sum(1 for s in sizes if s >= 3) >= 100
    assert sum(1 for a in addresses if a.startswith("::ffff:")) >= 100
