"""policies/*.yaml: loaded, merged across files and checked, every problem at once."""

from __future__ import annotations

import gc
import ipaddress
import sys
import textwrap
from pathlib import Path
from types import FrameType

import pytest

from gateway.errors import ConfigError
from gateway.model import format_interval
from gateway.policy.load import load_policies
from gateway.policy.model import Api, Policy, TokenLocation, Where, empty_policy
from gateway.policy.networks import NetworkIndex

ROOT = Path(__file__).resolve().parents[2]
LOADER = str(Path("gateway", "policy", "load.py"))
ENTRY = ("load_policies", "collection_paused")

DAY = 86400.0

ROLE_KEYS = (
    "known here: deny, enforcement, factors, interval, max_interval, networks, phishing_resistant,"
    " remember_device, reverify"
)


def write(folder: Path, **files: str) -> Path:
    """Policy files named by keyword (`a=` → a.yaml), dedented; returns the folder."""
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def load(folder: Path, **files: str) -> Policy:
    return load_policies(write(folder, **files))


def problems(folder: Path, **files: str) -> list[str]:
    """What load_policies reports for these files, as the operator reads it."""
    with pytest.raises(ConfigError) as caught:
        load_policies(write(folder, **files))
    return [str(p) for p in caught.value.problems]


def nets(policy: Policy, names: frozenset[str] | None) -> set[tuple[str, ...]]:
    """The CIDRs behind a set of network names (inline ones included), as text."""
    assert names is not None
    return {tuple(str(n) for n in policy.networks[name]) for name in names}


# -- the shipped example ---------------------------------------------------------------------------


def test_shipped_policies_load_without_problems() -> None:
    policy = load_policies(ROOT / "policies")

    assert not policy.empty
    assert [Path(f).name for f in policy.files] == [
        "groups.yaml",
        "networks.yaml",
        "organisation.yaml",
        "paths.yaml",
        "roles.yaml",
        "users.yaml",
    ]
    assert set(policy.users) == {"alice", "bob", "carol", "crm-sync"}
    assert len(policy.paths) == 5
    assert [r.pattern for r in policy.paths] == [
        "/admin/**",
        "/reports/**",
        "/reports/**",
        "/api/**",
        "/**",
    ]
    assert policy.warnings == ()  # the example's rules say what they mean
    assert policy.api.unknown_tokens == "networks"
    assert policy.api.unknown_networks == {"integration-server"}


def test_shipped_policies_resolve_names_across_files() -> None:
    policy = load_policies(ROOT / "policies")

    alice = policy.users["alice"]
    assert (alice.roles, alice.groups, alice.email) == (("admin",), ("staff",), "alice@example.com")
    assert policy.roles["admin"].networks == frozenset({"office", "vpn", "loopback"})
    assert policy.organisation.deny == frozenset({"blocked"})
    assert policy.networks["office"] == (
        ipaddress.ip_network("203.0.113.0/24"),
        ipaddress.ip_network("2001:db8:10::/48"),
    )
    assert policy.defaults.interval == 0.0
    assert policy.defaults.remember_device == 0.0
    assert policy.groups["staff"].max_interval == DAY
    assert policy.roles["customer"].factors == ("totp", "sms", "recovery")


# -- merging across files -------------------------------------------------------------------------


def test_networks_in_one_file_are_used_by_roles_users_and_api_in_others(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        networks="""
            networks:
              office: [10.1.0.0/16]
              vpn: [10.2.0.0/16]
        """,
        roles="""
            roles:
              admin: {networks: [office, vpn]}
            groups:
              remote: {networks: [vpn]}
        """,
        users="""
            users:
              ann: {roles: [admin], groups: [remote], deny: [office]}
            organisation:
              networks: [office, vpn]
            api:
              unknown_tokens: {networks: [office]}
        """,
    )

    assert policy.roles["admin"].networks == frozenset({"office", "vpn"})
    assert policy.groups["remote"].networks == frozenset({"vpn"})
    assert policy.users["ann"].level.deny == frozenset({"office"})
    assert policy.users["ann"].roles == ("admin",)
    assert policy.users["ann"].groups == ("remote",)
    assert policy.organisation.networks == frozenset({"office", "vpn"})
    assert policy.api.unknown_networks == {"office"}


def test_a_name_may_be_used_in_a_file_read_before_the_one_defining_it(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            users:
              ann: {roles: [admin]}
            paths:
              - {path: /admin/**, allow: [role:admin, user:ann]}
        """,
        z="""
            networks:
              office: [10.1.0.0/16]
            roles:
              admin: {networks: [office]}
        """,
    )

    assert policy.users["ann"].roles == ("admin",)
    assert policy.paths[0].allow == {"role:admin", "user:ann"}
    assert policy.roles["admin"].networks == frozenset({"office"})


def test_path_rules_are_concatenated_in_file_name_order(tmp_path: Path) -> None:
    # Written second-file first: the order is the names', not the writing's.
    write(
        tmp_path,
        b="""
            paths:
              - {path: /b1, allow: [anyone]}
        """,
    )
    policy = load(
        tmp_path,
        a="""
            paths:
              - {path: /a1, allow: [anyone]}
              - {path: /a2, allow: [anyone]}
        """,
        c="""
            # the last file
            paths:
              - {path: /c1, allow: [anyone]}
        """,
    )

    assert [r.pattern for r in policy.paths] == ["/a1", "/a2", "/b1", "/c1"]
    assert [r.index for r in policy.paths] == [0, 1, 2, 3]
    assert [r.where for r in policy.paths] == [
        Where(str(tmp_path / "a.yaml"), 2),
        Where(str(tmp_path / "a.yaml"), 3),
        Where(str(tmp_path / "b.yaml"), 2),
        Where(str(tmp_path / "c.yaml"), 3),
    ]
    assert policy.files == tuple(str(tmp_path / f"{n}.yaml") for n in "abc")


def test_file_name_order_is_by_characters_not_by_number(tmp_path: Path) -> None:
    write(tmp_path, **{"9-late": "paths: [{path: /nine, allow: [anyone]}]\n"})
    policy = load(tmp_path, **{"10-early": "paths: [{path: /ten, allow: [anyone]}]\n"})

    assert [r.pattern for r in policy.paths] == ["/ten", "/nine"]


def test_only_yaml_files_directly_in_the_folder_are_read(tmp_path: Path) -> None:
    write(tmp_path, a="users:\n  ann: {}\n")
    (tmp_path / "notes.txt").write_text("users: [broken\n")
    (tmp_path / "old.yaml.bak").write_text("users: [broken\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("users: [broken\n")

    policy = load_policies(tmp_path)

    assert policy.files == (str(tmp_path / "a.yaml"),)
    assert set(policy.users) == {"ann"}


def test_empty_folder_gives_the_empty_policy(tmp_path: Path) -> None:
    policy = load_policies(tmp_path)

    assert policy.files == ()
    assert policy.empty
    assert policy == empty_policy()
    assert policy.users == {} and policy.paths == ()
    assert policy.defaults.interval == 0.0
    assert policy.defaults.factors == ("totp", "recovery")
    assert policy.defaults.enforcement == "required"
    assert policy.api == Api()


# -- every problem at once -----------------------------------------------------------------------


def test_every_problem_in_every_file_is_reported_at_once(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"

    found = problems(
        tmp_path,
        a="""
            networks:
              office: [10.0.0.0/8]
              sloppy: [10.0.0.1/8]
            roles:
              admin:
                networks: [office, nowhere]
                interval: soon
                factors: [totp, fax]
                colour: blue
                enforcement: {required_from: 2026-13-01}
            organisation:
              deny: []
            users:
              bob:
                roles: [admin]
        """,
        b="""
            users:
              bob:
                roles: [admin]
              erin:
                roles: [ghost]
            organisation:
              deny: []
        """,
    )

    assert found == [
        f"{a}:3: networks.sloppy[0]: has host bits set: '10.0.0.1/8' (write the network address)",
        f"{a}:6: roles.admin.networks[1]: must name a network from `networks` or be a CIDR"
        " but it's 'nowhere'",
        f"{a}:7: roles.admin.interval: must be a duration such as 30s, 5m, 12h or 7d"
        " but it's 'soon'",
        f"{a}:8: roles.admin.factors[1]: must be one of totp, sms, email, recovery, webauthn but it's 'fax'",
        f"{a}:9: roles.admin.colour: unknown key ({ROLE_KEYS})",
        f"{a}:10: roles.admin.enforcement.required_from: must be a date such as 2026-12-01"
        " but it's '2026-13-01'",
        f"{b}:3: users.bob: user bob is defined twice (first at {a}:15)",
        f"{b}:5: users.erin.roles[0]: names role 'ghost', which no policy file defines",
        f"{b}:7: organisation: may be written in one file only (first at {a}:12)",
    ]


def test_config_error_message_lists_every_problem_one_a_line(tmp_path: Path) -> None:
    write(tmp_path, a="users:\n  ann: {roles: [ghost], groups: [nobody]}\n")

    with pytest.raises(ConfigError) as caught:
        load_policies(tmp_path)

    assert len(caught.value.problems) == 2
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]


def test_unknown_network_name_is_a_problem(tmp_path: Path) -> None:
    assert problems(tmp_path, a="groups:\n  staff:\n    deny: [nowhere]\n") == [
        f"{tmp_path / 'a.yaml'}:3: groups.staff.deny[0]: must name a network from `networks`"
        " or be a CIDR but it's 'nowhere'"
    ]


def test_user_naming_an_undefined_role_or_group_is_a_problem(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    assert problems(
        tmp_path,
        a="""
            roles:
              admin: {}
            users:
              ann:
                roles: [admin, ghost]
                groups: [nobody]
        """,
    ) == [
        f"{a}:5: users.ann.roles[1]: names role 'ghost', which no policy file defines",
        f"{a}:6: users.ann.groups[0]: names group 'nobody', which no policy file defines",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour: blue\n", "colour: unknown key (known here: api, defaults, groups, networks,"),
        ("roles:\n  admin: {intervall: 1d}\n", f"roles.admin.intervall: unknown key ({ROLE_KEYS})"),
        (
            "users:\n  ann: {max_interval: 1d}\n",
            "users.ann.max_interval: unknown key (known here: deny, email, enforcement, factors,"
            " groups, interval, networks, phishing_resistant, phone, remember_device, reverify,"
            " roles)",
        ),
        (
            "organisation: {interval: 1d}\n",
            "organisation.interval: unknown key (known here: deny, networks)",
        ),
        (
            "defaults: {networks: [x]}\n",
            "defaults.networks: unknown key (known here: enforcement, factors, interval,"
            " phishing_resistant, remember_device, reverify)",
        ),
        (
            "paths:\n  - {path: /x, allow: [anyone], method: [GET]}\n",
            "paths[0].method: unknown key (known here: allow, factors, fresh, methods, path,"
            " phishing_resistant)",
        ),
        (
            "api: {token: []}\n",
            "api.token: unknown key (known here: tokens, unknown_tokens)",
        ),
    ],
)
def test_unknown_key_is_a_problem_with_its_dotted_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    found = problems(tmp_path, a=text)

    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'a.yaml'}:")
    assert expected in found[0]


@pytest.mark.parametrize("written", ["soon", "1h30m", "-1d", "7D", "[1d]"])
def test_bad_duration_is_a_problem(tmp_path: Path, written: str) -> None:
    found = problems(tmp_path, a=f"roles:\n  admin:\n    max_interval: {written}\n")

    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'a.yaml'}:3: roles.admin.max_interval: must be a")


def test_bad_factor_name_is_a_problem_for_each_bad_name(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    assert problems(tmp_path, a="defaults:\n  factors: [totp, fax, SMS]\n") == [
        f"{a}:2: defaults.factors[1]: must be one of totp, sms, email, recovery, webauthn but it's 'fax'",
        f"{a}:2: defaults.factors[2]: must be one of totp, sms, email, recovery, webauthn but it's 'SMS'",
    ]


def test_empty_factor_list_is_a_problem(tmp_path: Path) -> None:
    assert problems(tmp_path, a="roles:\n  admin:\n    factors: []\n") == [
        f"{tmp_path / 'a.yaml'}:3: roles.admin.factors: must list at least one factor"
        " (totp, sms, email, recovery, webauthn)"
    ]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (
            "{required_from: 2026-13-01}",
            "enforcement.required_from: must be a date such as 2026-12-01 but it's '2026-13-01'",
        ),
        (
            "{required_from: soon}",
            "enforcement.required_from: must be a date such as 2026-12-01 but it's 'soon'",
        ),
        (
            "{required_from: 2026-02-30}",
            "enforcement.required_from: must be a date such as 2026-12-01 but it's '2026-02-30'",
        ),
        ("{}", "enforcement: must be required, optional or {required_from: YYYY-MM-DD}"),
        ("sometimes", "enforcement: must be one of required, optional but it's 'sometimes'"),
        (
            "required_from",
            "enforcement: must be one of required, optional but it's 'required_from'",
        ),
    ],
)
def test_bad_enforcement_is_a_problem(tmp_path: Path, written: str, message: str) -> None:
    assert problems(tmp_path, a=f"roles:\n  admin:\n    enforcement: {written}\n") == [
        f"{tmp_path / 'a.yaml'}:3: roles.admin.{message}"
    ]


def test_user_defined_in_two_files_names_the_first_location(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"

    assert problems(
        tmp_path,
        a="users:\n  ann: {email: ann@example.com}\n",
        b="# ann again\nusers:\n  bob: {}\n  ann: {}\n",
    ) == [f"{b}:4: users.ann: user ann is defined twice (first at {a}:2)"]


def test_network_role_and_group_defined_in_two_files_name_the_first_location(
    tmp_path: Path,
) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"

    assert problems(
        tmp_path,
        a="networks:\n  office: [10.0.0.0/8]\nroles:\n  admin: {}\ngroups:\n  staff: {}\n",
        b="groups:\n  staff: {}\nroles:\n  admin: {}\nnetworks:\n  office: [10.0.0.0/8]\n",
    ) == [
        f"{b}:2: groups.staff: group staff is defined twice (first at {a}:6)",
        f"{b}:4: roles.admin: role admin is defined twice (first at {a}:4)",
        f"{b}:6: networks.office: network office is defined twice (first at {a}:2)",
    ]


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("organisation", "{deny: []}"),
        ("defaults", "{interval: 1d}"),
        ("api", "{unknown_tokens: deny}"),
    ],
)
def test_single_section_in_two_files_is_a_problem(tmp_path: Path, section: str, value: str) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"

    assert problems(
        tmp_path, a=f"{section}: {value}\n", b=f"users:\n  ann: {{}}\n{section}: {value}\n"
    ) == [f"{b}:3: {section}: may be written in one file only (first at {a}:1)"]


def test_empty_policy_file_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path, a="users:\n  ann: {}\n")
    (tmp_path / "b.yaml").write_text("# nothing yet\n")

    with pytest.raises(ConfigError) as caught:
        load_policies(tmp_path)

    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yaml'}:1: the file is empty"
    ]


def test_invalid_yaml_in_one_file_is_reported_beside_the_other_files_problems(
    tmp_path: Path,
) -> None:
    found = problems(tmp_path, a="users:\n  ann: {roles: [ghost]}\n", b="users: [broken\n")

    assert found[0] == (
        f"{tmp_path / 'a.yaml'}:2: users.ann.roles[0]: names role 'ghost', which no policy"
        " file defines"
    )
    assert found[1].startswith(f"{tmp_path / 'b.yaml'}:")
    assert ": not valid YAML: " in found[1]
    assert len(found) == 2


# -- networks -----------------------------------------------------------------------------------------


def test_inline_cidrs_are_accepted_beside_network_names(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            networks:
              office: [10.1.0.0/16]
            roles:
              admin:
                networks: [office, 192.168.1.0/24, "2001:db8:5::/48", 172.16.0.9]
                deny: [192.168.1.66/32]
            users:
              ann: {roles: [admin], networks: [198.51.100.0/24]}
            organisation:
              deny: [203.0.113.0/24]
            api:
              unknown_tokens: {networks: [192.0.2.10/32]}
        """,
    )

    admin = policy.roles["admin"]
    assert nets(policy, admin.networks) == {
        ("10.1.0.0/16",),
        ("192.168.1.0/24",),
        ("2001:db8:5::/48",),
        ("172.16.0.9/32",),
    }
    assert nets(policy, admin.deny) == {("192.168.1.66/32",)}
    assert nets(policy, policy.users["ann"].level.networks) == {("198.51.100.0/24",)}
    assert nets(policy, policy.organisation.deny) == {("203.0.113.0/24",)}
    assert nets(policy, policy.api.unknown_networks) == {("192.0.2.10/32",)}
    # The inline networks are in the index under the names the levels use.
    index = NetworkIndex(policy.networks)
    assert admin.deny is not None and admin.networks is not None  # both set in the file above
    assert index.match("192.168.1.66") & admin.deny
    assert index.match("2001:db8:5::1") & admin.networks
    assert not index.match("2001:db8:6::1") & admin.networks
    assert index.match("192.0.2.10") & policy.api.unknown_networks


def test_inline_cidrs_of_different_levels_do_not_share_names(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            roles:
              a: {networks: [10.1.0.0/16]}
              b: {networks: [10.2.0.0/16]}
            groups:
              a: {networks: [10.3.0.0/16], deny: [10.4.0.0/16]}
        """,
    )

    names = [
        policy.roles["a"].networks,
        policy.roles["b"].networks,
        policy.groups["a"].networks,
        policy.groups["a"].deny,
    ]
    assert all(n is not None and len(n) == 1 for n in names)
    assert len(frozenset().union(*(n or frozenset() for n in names))) == 4
    assert nets(policy, policy.groups["a"].deny) == {("10.4.0.0/16",)}


def test_network_definitions_hold_ipv4_and_ipv6(tmp_path: Path) -> None:
    policy = load(tmp_path, a='networks:\n  office: [10.0.0.0/8, "2001:db8::/32", 192.0.2.1]\n')

    assert policy.networks["office"] == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.1/32"),
    )


def test_host_bits_set_in_a_network_definition_are_refused(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    assert problems(
        tmp_path, a='networks:\n  office: [10.0.0.1/8, "2001:db8::1/32", not-a-network]\n'
    ) == [
        f"{a}:2: networks.office[0]: has host bits set: '10.0.0.1/8' (write the network address)",
        f"{a}:2: networks.office[1]: has host bits set: '2001:db8::1/32'"
        " (write the network address)",
        f"{a}:2: networks.office[2]: must be an IP address or CIDR network"
        " but it's 'not-a-network'",
    ]


def test_host_bits_set_in_an_inline_cidr_are_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, a="roles:\n  admin:\n    networks: [192.168.1.1/24]\n") == [
        f"{tmp_path / 'a.yaml'}:3: roles.admin.networks[0]: must name a network from"
        " `networks` or be a CIDR but it's '192.168.1.1/24'"
    ]


def test_empty_network_list_allows_nowhere_but_is_not_absent(tmp_path: Path) -> None:
    policy = load(tmp_path, a="roles:\n  shut: {networks: []}\n  open: {}\n")

    assert policy.roles["shut"].networks == frozenset()
    assert policy.roles["open"].networks is None


# -- the cap rule -------------------------------------------------------------------------------------


def test_user_interval_above_a_role_cap_is_a_problem(tmp_path: Path) -> None:
    roles = tmp_path / "roles.yaml"
    users = tmp_path / "users.yaml"

    found = problems(
        tmp_path,
        roles="roles:\n  admin:\n    networks: []\n    max_interval: 1d\n",
        users="users:\n  ann:\n    roles: [admin]\n    interval: 7d\n",
    )

    assert found == [
        f"{users}:4: users.ann.interval: 7d is longer than the 1d cap of role admin ({roles}:4)"
    ]


def test_group_interval_above_a_role_cap_is_a_problem_for_each_member(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    found = problems(
        tmp_path,
        a="""
            roles:
              admin:
                max_interval: 1d
            groups:
              staff:
                interval: 3d
            users:
              ann: {roles: [admin], groups: [staff]}
              bob: {groups: [staff]}
              cid: {roles: [admin], groups: [staff]}
        """,
    )

    assert found == [
        f"{a}:6: groups.staff.interval: 3d is longer than the 1d cap of role admin ({a}:3)"
        " for user ann",
        f"{a}:6: groups.staff.interval: 3d is longer than the 1d cap of role admin ({a}:3)"
        " for user cid",
    ]


def test_role_interval_above_a_group_cap_is_a_problem(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    found = problems(
        tmp_path,
        a="""
            roles:
              customer: {interval: 7d}
            groups:
              staff: {max_interval: 12h}
            users:
              dan: {roles: [customer], groups: [staff]}
        """,
    )

    assert found == [
        f"{a}:2: roles.customer.interval: 7d is longer than the 12h cap of group staff ({a}:4)"
        " for user dan"
    ]


def test_the_lowest_of_several_caps_is_the_one_named(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    found = problems(
        tmp_path,
        a="""
            roles:
              admin: {max_interval: 2d}
              auditor: {max_interval: 12h}
            groups:
              staff: {max_interval: 1d}
            users:
              ann: {roles: [admin, auditor], groups: [staff], interval: 1d}
        """,
    )

    assert found == [
        f"{a}:7: users.ann.interval: 1d is longer than the 12h cap of role auditor ({a}:3)"
    ]


def test_interval_equal_to_the_cap_is_allowed(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            roles:
              admin: {max_interval: 1d, interval: 24h}
            users:
              ann: {roles: [admin], interval: 1d}
        """,
    )

    assert policy.users["ann"].level.interval == DAY


def test_inherited_default_above_a_cap_is_not_a_problem(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            defaults:
              interval: 30d
            roles:
              admin: {max_interval: 1d}
            users:
              ann: {roles: [admin]}
        """,
    )

    assert policy.defaults.interval == 30 * DAY
    assert policy.users["ann"].level.interval is None


def test_cap_of_a_role_nobody_holds_constrains_nobody(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            roles:
              admin: {max_interval: 1d}
            users:
              ann: {interval: 7d}
        """,
    )

    assert policy.users["ann"].level.interval == 7 * DAY


# -- path rules ---------------------------------------------------------------------------------------


def test_path_rule_subjects_of_every_kind_are_accepted(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            roles:
              admin: {}
            groups:
              staff: {}
            users:
              ann: {}
            paths:
              - path: /admin/**
                methods: [GET, POST, PROPFIND]
                allow: [role:admin, group:staff, user:ann]
              - path: /files/*/edit
                allow: [authenticated]
              - path: /api/**
                allow: [token]
              - path: /**
                allow: [anyone]
              - path: /closed
                allow: []
        """,
    )

    first, second, third, fourth, fifth = policy.paths
    assert first.allow == {"role:admin", "group:staff", "user:ann"}
    assert first.methods == frozenset({"GET", "HEAD", "POST", "PROPFIND"})  # GET covers HEAD
    assert (second.pattern, second.allow, second.methods) == (
        "/files/*/edit",
        frozenset({"authenticated"}),
        None,
    )
    assert third.allow == {"token"}
    assert fourth.allow == {"anyone"}
    assert fifth.allow == frozenset()


def test_path_rule_naming_undefined_role_group_or_user_is_a_problem(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    assert problems(
        tmp_path,
        a="""
            paths:
              - path: /admin/**
                allow:
                  - role:nobody
                  - group:nobody
                  - user:nobody
        """,
    ) == [
        f"{a}:4: paths[0].allow[0]: names role 'nobody', which no policy file defines",
        f"{a}:5: paths[0].allow[1]: names group 'nobody', which no policy file defines",
        f"{a}:6: paths[0].allow[2]: names user 'nobody', which no policy file defines",
    ]


@pytest.mark.parametrize("subject", ["someone", "role", "role:", "admin", "Anyone", "team:x"])
def test_path_rule_subject_of_unknown_kind_is_a_problem(tmp_path: Path, subject: str) -> None:
    found = problems(tmp_path, a=f"paths:\n  - path: /x\n    allow: ['{subject}']\n")

    assert found == [
        f"{tmp_path / 'a.yaml'}:3: paths[0].allow[0]: must be anyone, authenticated, token,"
        f" role:NAME, group:NAME or user:NAME but it's {subject!r}"
    ]


@pytest.mark.parametrize("method", ["get", "Get", "G ET", "GET/1", "-GET"])
def test_path_rule_method_not_in_capitals_is_a_problem(tmp_path: Path, method: str) -> None:
    found = problems(
        tmp_path, a=f"paths:\n  - path: /x\n    methods: ['{method}']\n    allow: [anyone]\n"
    )

    assert found == [
        f"{tmp_path / 'a.yaml'}:3: paths[0].methods[0]: must be an HTTP method in capitals such"
        f" as GET but it's {method!r}"
    ]


@pytest.mark.parametrize("pattern", ["admin/**", "**", "*/admin", "/admin//x", "/a/../admin"])
def test_path_rule_pattern_that_is_not_a_clean_absolute_path_is_a_problem(
    tmp_path: Path, pattern: str
) -> None:
    found = problems(tmp_path, a=f"paths:\n  - path: '{pattern}'\n    allow: [anyone]\n")

    assert found == [
        f"{tmp_path / 'a.yaml'}:2: paths[0].path: must be a path pattern such as /admin/**"
        f" but it's {pattern!r}"
    ]


@pytest.mark.parametrize("rule", ["{path: /x}", "{allow: [anyone]}", "{}"])
def test_path_rule_needs_path_and_allow(tmp_path: Path, rule: str) -> None:
    assert problems(tmp_path, a=f"paths:\n  - {rule}\n") == [
        f"{tmp_path / 'a.yaml'}:2: paths[0]: needs `path` and `allow`"
    ]


def test_bad_path_rule_keeps_its_place_in_the_numbering(tmp_path: Path) -> None:
    # paths[1] in the message is the second rule written, whichever rules are valid.
    found = problems(
        tmp_path,
        a="paths:\n  - {path: /a, allow: [anyone]}\n  - {path: b, allow: [anyone]}\n",
    )

    assert found == [
        f"{tmp_path / 'a.yaml'}:3: paths[1].path: must be a path pattern such as /admin/**"
        " but it's 'b'"
    ]


# -- api tokens ----------------------------------------------------------------------------------------


def test_api_token_locations_are_read_in_order(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            api:
              tokens:
                - header: Authorization
                  schemes: [Bearer, Token, JWT, Basic]
                - header: X-API-Key
                - query: api_key
              unknown_tokens: deny
        """,
    )

    assert policy.api.locations == (
        TokenLocation(header="Authorization", schemes=("Bearer", "Token", "JWT", "Basic")),
        TokenLocation(header="X-API-Key"),
        TokenLocation(query="api_key"),
    )
    assert policy.api.unknown_tokens == "deny"
    assert policy.api.unknown_networks == frozenset()
    assert policy.api.where == Where(str(tmp_path / "a.yaml"), 2)


def test_without_an_api_section_tokens_are_looked_for_in_authorization(tmp_path: Path) -> None:
    policy = load(tmp_path, a="users:\n  ann: {}\n")

    assert policy.api == Api()
    assert policy.api.locations == (
        TokenLocation(header="Authorization", schemes=("Bearer", "Token", "JWT")),
    )
    assert policy.api.unknown_tokens == "deny"


@pytest.mark.parametrize("location", ["{header: X-Key, query: key}", "{}", "{schemes: [Bearer]}"])
def test_api_token_location_names_exactly_one_of_header_or_query(
    tmp_path: Path, location: str
) -> None:
    assert problems(tmp_path, a=f"api:\n  tokens:\n    - {location}\n") == [
        f"{tmp_path / 'a.yaml'}:3: api.tokens[0]: must name exactly one of header or query"
    ]


@pytest.mark.parametrize("scheme", ["Digest", "bearer", "Negotiate", "OAuth"])
def test_api_token_scheme_must_be_bearer_token_jwt_or_basic(tmp_path: Path, scheme: str) -> None:
    found = problems(
        tmp_path,
        a=f"api:\n  tokens:\n    - header: Authorization\n      schemes: [Bearer, {scheme}]\n",
    )

    assert found == [
        f"{tmp_path / 'a.yaml'}:4: api.tokens[0].schemes[1]: must be one of Bearer, Token, JWT,"
        f" Basic but it's {scheme!r}"
    ]


def test_unknown_tokens_must_be_deny_or_a_networks_mapping(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    assert problems(tmp_path, a="api:\n  unknown_tokens: allow\n") == [
        f"{a}:2: api.unknown_tokens: must be deny or {{networks: [...]}} but it's 'allow'"
    ]
    assert problems(tmp_path, a="api:\n  unknown_tokens: {}\n") == [
        f"{a}:2: api.unknown_tokens: networks: is required"
    ]


# -- settings: enforcement, remember_device, intervals ---------------------------------------------


def test_enforcement_required_from_a_date_is_read(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="""
            roles:
              customer:
                enforcement: {required_from: 2026-12-01}
              admin:
                enforcement: required
              guest:
                enforcement: optional
        """,
    )

    customer = policy.roles["customer"]
    assert (customer.enforcement, customer.required_from) == ("required_from", "2026-12-01")
    assert (policy.roles["admin"].enforcement, policy.roles["admin"].required_from) == (
        "required",
        "",
    )
    assert policy.roles["guest"].enforcement == "optional"


def test_defaults_with_a_required_from_date_keep_it(tmp_path: Path) -> None:
    policy = load(tmp_path, a="defaults:\n  enforcement: {required_from: '2027-01-15'}\n")

    assert policy.defaults.enforcement == "required_from"
    assert policy.defaults.required_from == "2027-01-15"
    # What the defaults do not say comes from the built-in defaults.
    assert policy.defaults.factors == ("totp", "recovery")
    assert policy.defaults.interval == 0.0


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("off", 0.0), ("'off'", 0.0), ("false", 0.0), ("no", 0.0), ("0", 0.0), ("30d", 30 * DAY)],
)
def test_remember_device_is_off_or_a_duration(tmp_path: Path, written: str, seconds: float) -> None:
    policy = load(tmp_path, a=f"groups:\n  staff:\n    remember_device: {written}\n")

    assert policy.groups["staff"].remember_device == seconds


@pytest.mark.parametrize("written", ["forever", "always", "on", "true", "30 days"])
def test_remember_device_of_another_kind_is_a_problem(tmp_path: Path, written: str) -> None:
    found = problems(tmp_path, a=f"groups:\n  staff:\n    remember_device: {written}\n")

    assert len(found) == 1
    prefix = f"{tmp_path / 'a.yaml'}:3: groups.staff.remember_device: must be "
    # YAML reads on/true as booleans: the message then says that `off` is the other choice.
    expected = "off or a duration such as" if written in ("on", "true") else "a duration such as"
    assert found[0].startswith(prefix + expected)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("always", 0.0), ("0", 0.0), ("12h", 12 * 3600.0), ("1d", DAY), ("2w", 14 * DAY)],
)
def test_interval_is_always_or_a_duration(tmp_path: Path, written: str, seconds: float) -> None:
    policy = load(tmp_path, a=f"roles:\n  admin:\n    interval: {written}\n")

    assert policy.roles["admin"].interval == seconds


def test_settings_a_level_does_not_write_are_none(tmp_path: Path) -> None:
    policy = load(tmp_path, a="roles:\n  admin: {}\n")

    admin = policy.roles["admin"]
    assert (admin.networks, admin.deny, admin.interval, admin.max_interval) == (
        None,
        None,
        None,
        None,
    )
    assert (admin.factors, admin.enforcement, admin.remember_device) == (None, None, None)


def test_setting_lines_point_at_each_key_for_explanations(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="roles:\n  admin:\n    networks: []\n    interval: 1d\n    max_interval: 2d\n",
    )

    admin = policy.roles["admin"]
    assert admin.where == Where(str(tmp_path / "a.yaml"), 3)
    assert (admin.line_of("interval"), admin.line_of("max_interval")) == (4, 5)
    assert admin.line_of("factors") == admin.where.line


def test_user_phone_and_email_are_checked(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    assert problems(tmp_path, a="users:\n  ann: {phone: call me, email: ann-at-example}\n") == [
        f"{a}:2: users.ann.phone: must be a phone number with its country code such as"
        " +31 6 1234 5678 but it's 'call me'",
        f"{a}:2: users.ann.email: must be an e-mail address but it's 'ann-at-example'",
    ]


def test_phone_numbers_are_kept_in_e164(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        a="users:\n  ann: {phone: '+31 (0)6-1234 5678'}\n  bo: {phone: '+47 912 34 567'}\n",
    )
    assert policy.users["ann"].phone == "+31612345678"
    assert policy.users["bo"].phone == "+4791234567"
    found = problems(tmp_path / "x", a="users:\n  cy: {phone: '06 1234 5678'}\n")
    assert "with its country code" in found[0]


# -- format_interval -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "always"),
        (0.0, "always"),
        (30, "30s"),
        (0.5, "0.5s"),
        (90, "90s"),
        (60, "1m"),
        (5400, "90m"),
        (3600, "1h"),
        (12 * 3600, "12h"),
        (36 * 3600, "36h"),
        (86400, "1d"),
        (7 * 86400, "7d"),
        (30 * 86400, "30d"),
        (86400 + 60, "1441m"),
        (86400 + 1, "86401s"),
    ],
)
def test_format_interval_uses_the_largest_exact_unit(seconds: float, text: str) -> None:
    assert format_interval(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(1_000_000, "1000000s"), (1_000_001, "1000001s")])
def test_format_interval_writes_large_second_counts_exactly(seconds: float, text: str) -> None:
    assert format_interval(seconds) == text


def test_cap_message_spells_odd_intervals_as_written_durations(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"

    found = problems(
        tmp_path,
        a="roles:\n  admin: {max_interval: 90m}\nusers:\n  ann: {roles: [admin], interval: 5401}\n",
    )

    assert found == [
        f"{a}:4: users.ann.interval: 5401s is longer than the 90m cap of role admin ({a}:2)"
    ]


def test_a_network_may_be_a_plain_list_file_next_to_the_policy(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "branches.txt").write_text(
        "# branch offices\n10.1.0.0/16\n\n192.0.2.7   # the warehouse\n2001:db8::/32\n"
    )
    policy = load(tmp_path, a="networks:\n  branches: {file: lists/branches.txt}\n")
    assert policy.networks["branches"] == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_a_bad_line_in_a_network_list_names_the_list_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "branches.txt").write_text("10.1.0.0/16\n10.2.0.1/16\nnot-a-network\n")
    found = problems(tmp_path, a="networks:\n  branches: {file: branches.txt}\n")
    assert found == [
        f"{tmp_path}/branches.txt:2: networks.branches: has host bits set: '10.2.0.1/16'"
        " (write the network address)",
        f"{tmp_path}/branches.txt:3: networks.branches: must be an IP address or CIDR network"
        " but it's 'not-a-network'",
    ]


def test_a_missing_network_list_file_is_a_problem(tmp_path: Path) -> None:
    found = problems(tmp_path, a="networks:\n  branches: {file: nowhere.txt}\n")
    assert len(found) == 1
    assert "cannot read" in found[0]
    assert "nowhere.txt" in found[0]


def test_a_load_holds_the_cycle_collector_off_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    """Loading a big policy with the cycle collector on spent most of its time in it (the
    collector walked the growing YAML tree again and again): no collection runs during a
    load, and the collector is left as it was found, after a failed load too."""
    users = "\n".join(f"  u{i}: {{roles: [staff], networks: [office]}}" for i in range(300))
    good = write(
        tmp_path / "good",
        a="networks: {office: [10.0.0.0/8]}\nroles: {staff: {interval: 1d}}\n"
        f"users:\n{users}\n",
    )
    bad = write(tmp_path / "bad", a="users: {ann: {roles: [nobody]}}\n")
    collections: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        """A collection that starts while the loader works (a function of
        gateway/policy/load.py on the stack but its entry, whose first and last steps
        turn the collector off and on)."""
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and phase == "start":
            code = frame.f_code
            if code.co_filename.endswith(LOADER) and code.co_name not in ENTRY:
                collections.append(frame.f_code.co_name)
                return
            frame = frame.f_back

    threshold = gc.get_threshold()
    gc.callbacks.append(count)
    gc.set_threshold(1)  # collect after every allocation the collector would count
    try:
        assert len(load_policies(good).users) == 300
        assert collections == [] and gc.isenabled()
        with pytest.raises(ConfigError):
            load_policies(bad)
        assert collections == [] and gc.isenabled()
        gc.disable()
        load_policies(good)
        assert not gc.isenabled()  # off stays off
    finally:
        gc.enable()
        gc.set_threshold(*threshold)
        gc.callbacks.remove(count)
