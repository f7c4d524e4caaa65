"""The resolution rules of gateway/policy/rules.py, case by case (docs/policies.md "Resolution")."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.policy.load import load_policies
from gateway.policy.model import Policy
from gateway.policy.networks import NetworkIndex
from gateway.policy.rules import check_access, resolve_settings

NETWORKS = """
networks:
  office: [10.1.0.0/16]
  vpn: [10.2.0.0/16]
  home: [10.3.0.0/16]
  bad: [10.1.66.0/24]
  v6office: ["2001:db8:1::/48"]
"""


def _policy(tmp_path: Path, text: str) -> Policy:
    (tmp_path / "a.yaml").write_text(textwrap.dedent(NETWORKS))
    (tmp_path / "b.yaml").write_text(textwrap.dedent(text))
    return load_policies(tmp_path)


def _ip(policy: Policy, user: str | None, ip: str, path: str = "/", method: str = "GET") -> str:
    index = NetworkIndex(policy.networks)
    decision = check_access(
        policy, index, user=policy.users[user] if user else None, ip=ip, method=method, path=path
    )
    return decision.reason


def test_user_in_two_groups_may_come_from_either(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        groups:
          sales: {networks: [office]}
          remote: {networks: [vpn]}
        users:
          ann: {groups: [sales, remote]}
    """,
    )
    assert _ip(policy, "ann", "10.1.0.5") == "ok"
    assert _ip(policy, "ann", "10.2.0.5") == "ok"
    assert _ip(policy, "ann", "10.3.0.5") == "ip_not_allowed"


def test_own_list_and_role_list_must_both_hold(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        roles:
          manager: {networks: [office, vpn]}
        users:
          bob: {roles: [manager], networks: [vpn, home]}
    """,
    )
    assert _ip(policy, "bob", "10.2.0.1") == "ok"  # in both
    assert _ip(policy, "bob", "10.1.0.1") == "ip_not_allowed"  # role yes, user no
    assert _ip(policy, "bob", "10.3.0.1") == "ip_not_allowed"  # user yes, role no


def test_empty_list_allows_nowhere(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        users:
          locked: {networks: []}
          free: {}
    """,
    )
    assert _ip(policy, "locked", "10.1.0.1") == "ip_not_allowed"
    assert _ip(policy, "free", "10.1.0.1") == "ok"  # no list anywhere: no restriction


def test_deny_wins_beside_allow(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        roles:
          staff: {networks: [office], deny: [bad]}
        users:
          cy: {roles: [staff]}
    """,
    )
    assert _ip(policy, "cy", "10.1.0.1") == "ok"
    assert _ip(policy, "cy", "10.1.66.1") == "ip_denied"  # inside office, but denied


def test_organisation_deny_and_allow_apply_to_everyone_even_unknown(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        organisation: {networks: [office, vpn], deny: [bad]}
        users:
          dee: {networks: [office, home]}
    """,
    )
    assert _ip(policy, None, "10.2.0.1") == "ok"
    assert _ip(policy, None, "10.3.0.1") == "ip_not_allowed"
    assert _ip(policy, "dee", "10.3.0.1") == "ip_not_allowed"  # the user list cannot widen it
    assert _ip(policy, None, "10.1.66.9") == "ip_denied"


def test_a_role_without_a_list_does_not_widen_one_with_a_list(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        roles:
          admin: {networks: [office]}
          reader: {}
        users:
          eve: {roles: [admin, reader]}
    """,
    )
    assert _ip(policy, "eve", "10.3.0.1") == "ip_not_allowed"


def test_ipv6_lists(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        users:
          fay: {networks: [v6office, "2001:db8:9::1/128"]}
    """,
    )
    assert _ip(policy, "fay", "2001:db8:1::42") == "ok"
    assert _ip(policy, "fay", "2001:db8:9::1") == "ok"
    assert _ip(policy, "fay", "2001:db8:2::1") == "ip_not_allowed"


def test_path_rules_first_match_wins_and_default_deny(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        roles:
          admin: {}
        groups:
          auditors: {}
        users:
          root: {roles: [admin]}
          audit: {groups: [auditors]}
          joe: {}
        paths:
          - {path: /admin/reports/**, methods: [GET], allow: [group:auditors, role:admin]}
          - {path: /admin/**, allow: [role:admin]}
          - {path: /public/**, allow: [anyone]}
          - {path: /me/**, allow: [user:joe]}
    """,
    )
    assert _ip(policy, "audit", "10.1.0.1", "/admin/reports/q3") == "ok"
    assert _ip(policy, "audit", "10.1.0.1", "/admin/reports/q3", "POST") == "path_not_allowed"
    assert _ip(policy, "audit", "10.1.0.1", "/admin/users") == "path_not_allowed"
    assert _ip(policy, "root", "10.1.0.1", "/admin/users") == "ok"
    assert _ip(policy, None, "10.1.0.1", "/public/x") == "ok"
    assert _ip(policy, "joe", "10.1.0.1", "/me/") == "ok"
    assert _ip(policy, "root", "10.1.0.1", "/me/") == "path_not_allowed"
    assert _ip(policy, "root", "10.1.0.1", "/elsewhere") == "path_no_rule"


def test_decision_names_the_file_and_rule(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        paths:
          - {path: /admin/**, allow: [authenticated]}
    """,
    )
    decision = check_access(
        policy,
        NetworkIndex(policy.networks),
        user=None,
        ip="10.1.0.1",
        method="GET",
        path="/admin/",
    )
    assert decision.reason == "path_not_allowed"
    assert decision.steps[-1].source == f"{tmp_path}/b.yaml:3"
    assert "paths[0]" in decision.steps[-1].text


SETTINGS = """
defaults:
  interval: 7d
  factors: [totp, sms, recovery]
  enforcement: optional
  remember_device: 30d
roles:
  staff: {interval: 1d, max_interval: 1d, enforcement: required}
  customer: {interval: 7d, max_interval: 7d, factors: [totp, sms, recovery]}
groups:
  night: {interval: 12h}
  early: {interval: 4h, factors: [totp, recovery], remember_device: 7d}
  wave1: {enforcement: {required_from: 2027-01-01}}
  wave2: {enforcement: {required_from: 2026-12-01}}
  capped: {max_interval: 1d}
users:
  u_user: {roles: [staff], groups: [night], interval: always}
  u_groups: {roles: [staff], groups: [night, early]}
  u_role: {roles: [staff]}
  u_default: {}
  u_capped_default: {groups: [capped]}
  u_waves: {groups: [wave1, wave2]}
"""


@pytest.mark.parametrize(
    ("user", "interval"),
    [
        ("u_user", 0),  # the user's own value wins
        ("u_groups", 4 * 3600),  # groups over roles; the strictest group wins
        ("u_role", 86400),  # roles over defaults
        ("u_default", 7 * 86400),
        ("u_capped_default", 86400),  # an inherited default is lowered to the cap
    ],
)
def test_interval_resolution_order(tmp_path: Path, user: str, interval: float) -> None:
    policy = _policy(tmp_path, SETTINGS)
    assert resolve_settings(policy, policy.users[user]).interval == interval


def test_factors_are_those_every_deciding_group_allows(tmp_path: Path) -> None:
    policy = _policy(tmp_path, SETTINGS)
    assert resolve_settings(policy, policy.users["u_groups"]).factors == ("totp", "recovery")
    assert resolve_settings(policy, policy.users["u_default"]).factors == (
        "totp",
        "sms",
        "recovery",
    )


def test_enforcement_strictest_and_earliest_date(tmp_path: Path) -> None:
    policy = _policy(tmp_path, SETTINGS)
    waves = resolve_settings(policy, policy.users["u_waves"])
    assert (waves.enforcement, waves.required_from) == ("required_from", "2026-12-01")
    assert resolve_settings(policy, policy.users["u_role"]).enforcement == "required"
    assert resolve_settings(policy, policy.users["u_default"]).enforcement == "optional"


def test_remember_device_shortest_of_deciding_level(tmp_path: Path) -> None:
    policy = _policy(tmp_path, SETTINGS)
    assert resolve_settings(policy, policy.users["u_groups"]).remember_device == 7 * 86400
    assert resolve_settings(policy, policy.users["u_role"]).remember_device == 30 * 86400


def test_settings_explain_their_source(tmp_path: Path) -> None:
    policy = _policy(tmp_path, SETTINGS)
    steps = [str(s) for s in resolve_settings(policy, policy.users["u_capped_default"]).steps]
    assert any("caps the interval at 1d" in s and "group capped" in s for s in steps)
