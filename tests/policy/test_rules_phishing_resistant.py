"""Holding users and paths to phishing-resistant factors (passkeys): `phishing_resistant: true`
on a level (gateway/policy/rules.py, rule 7) or a path rule (gateway/policy/path_rules.py),
`factors: [webauthn]`, and a policy naming passkeys that gateway.yaml cannot make
(gateway/policy/checks.py unavailable_factors). Administrators held to passkeys while
customers keep SMS, as the seeds' setup would have it."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy.checks import unavailable_factors
from gateway.policy.load import load_policies
from gateway.policy.view import PolicyView
from gateway.signin.decision import Asks, Kind, Request, Who, decide

POLICY = """\
defaults:
  factors: [totp, sms, recovery]
roles:
  admin: {phishing_resistant: true}
  staff: {factors: [webauthn, totp, recovery]}
groups:
  customers: {factors: [sms]}
  lax: {phishing_resistant: false, factors: [totp]}
users:
  ada: {roles: [admin]}
  bea: {roles: [admin], groups: [customers]}
  cal: {roles: [staff]}
  dan: {groups: [customers]}
  eli: {roles: [admin], groups: [lax]}
  fay: {phishing_resistant: true, factors: [webauthn, totp]}
paths:
  - {path: /admin/**, allow: [role:admin], phishing_resistant: true}
  - {path: /settings/**, allow: [authenticated], factors: [webauthn]}
  - {path: /export/**, allow: [authenticated], fresh: 15m, phishing_resistant: true}
  - {path: /**, allow: [authenticated]}
"""
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> PolicyView:
    folder: Path = tmp_path_factory.mktemp("policies")
    (folder / "policy.yaml").write_text(POLICY)
    return PolicyView.of(load_policies(folder))


@pytest.mark.parametrize(
    ("user", "factors", "held"),
    [
        ("ada", ("webauthn",), True),  # the defaults' list has none: passkeys all the same
        ("bea", ("webauthn",), True),  # a customer too: the admin role's demand still holds
        ("cal", ("webauthn", "totp", "recovery"), False),  # offered, not demanded
        ("dan", ("sms",), False),  # customers keep SMS
        ("eli", ("webauthn",), True),  # `false` in a group does not lift the role's demand
        ("fay", ("webauthn",), True),  # her own list, its phishing-resistant part
    ],
)
def test_who_is_held_to_passkeys(
    view: PolicyView, user: str, factors: tuple[str, ...], held: bool
) -> None:
    settings = view.settings(user)

    assert settings.factors == factors
    assert settings.phishing_resistant is held
    said = [str(s) for s in settings.steps if "phishing-resistant" in s.text]
    assert bool(said) is held
    if user == "ada":  # explain names the level that demands it, and where
        file = view.policy.files[0]
        assert said == [f"role admin: phishing-resistant factors only: webauthn  ({file}:4)"]


def _path(view: PolicyView, user: str, path: str, by: dict[str, float]) -> tuple[str, str]:
    who = Who(
        Kind.SESSION, user, verified=max(by.values(), default=0.0), verified_by=tuple(by.items())
    )
    decided = decide(view, who, Request(Asks.CRM, "10.0.0.1", "GET", path), now=NOW)
    return decided.action.value, decided.reason


@pytest.mark.parametrize(
    ("user", "path", "by", "expected"),
    [
        # Signed in with a code: the admin area asks for a passkey first.
        ("ada", "/admin/users", {"totp": NOW - 60}, ("challenge", "fresh")),
        # A passkey at any time in this session will do there (no `fresh`).
        ("ada", "/admin/users", {"webauthn": NOW - 8 * 3600}, ("forward", "ok")),
        # `factors: [webauthn]` alone says the same.
        ("cal", "/settings/x", {"totp": NOW - 5}, ("challenge", "fresh")),
        ("cal", "/settings/x", {"webauthn": NOW - 5}, ("forward", "ok")),
        # With `fresh`: a passkey within 15 minutes.
        ("cal", "/export/all", {"webauthn": NOW - 16 * 60}, ("challenge", "fresh")),
        ("cal", "/export/all", {"webauthn": NOW - 60}, ("forward", "ok")),
        # Elsewhere nothing more is asked.
        ("dan", "/contacts", {"sms": NOW - 60}, ("forward", "ok")),
    ],
)
def test_a_path_rule_asks_for_a_passkey_passed_in_the_session(
    view: PolicyView, user: str, path: str, by: dict[str, float], expected: tuple[str, str]
) -> None:
    assert _path(view, user, path, by) == expected


def test_a_path_rule_without_fresh_counts_a_passkey_for_the_whole_session(view: PolicyView) -> None:
    rule = view.policy.paths[0]

    assert (rule.fresh, rule.fresh_factors) == (math.inf, ("webauthn",))
    who = Who(Kind.SESSION, "ada", verified=NOW - 60, verified_by=(("totp", NOW - 60),))
    decided = decide(view, who, Request(Asks.CRM, "10.0.0.1", "GET", "/admin/x"), now=NOW)
    assert decided.factors == ("webauthn",)
    assert str(decided.steps[-1]) == "webauthn not passed in this session"


def problems(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "a.yaml").write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_policies(tmp_path)
    return [str(p) for p in caught.value.problems]


def test_a_path_rule_may_not_count_a_code_as_phishing_resistant(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "paths:\n  - {path: /x, allow: [authenticated], factors: [totp], phishing_resistant: true}\n",
    )

    assert found == [
        f"{tmp_path / 'a.yaml'}:2: paths[0].factors: names totp, which phishing_resistant does "
        "not count (only webauthn)"
    ]


def test_a_path_open_to_anyone_cannot_ask_for_a_passkey(tmp_path: Path) -> None:
    found = problems(
        tmp_path, "paths:\n  - {path: /x, allow: [anyone], phishing_resistant: true}\n"
    )

    assert found == [
        f"{tmp_path / 'a.yaml'}:2: paths[0].phishing_resistant: asks a signed-in user for a fresh "
        "factor: it cannot go with anyone or token (who has no session to verify)"
    ]


def test_the_organisation_level_does_not_take_it(tmp_path: Path) -> None:
    found = problems(tmp_path, "organisation: {phishing_resistant: true}\n")

    assert found == [
        f"{tmp_path / 'a.yaml'}:1: organisation.phishing_resistant: unknown key (known here: "
        "deny, networks)"
    ]


def test_passkeys_named_where_the_gateway_cannot_make_them_are_errors(view: PolicyView) -> None:
    file = view.policy.files[0]
    found = [
        str(p) for p in unavailable_factors(view.policy, {"webauthn": "public_url is not set"})
    ]

    assert found == [
        f"{file}:4: roles.admin.phishing_resistant: names webauthn, which this gateway cannot "
        "offer: public_url is not set",
        f"{file}:5: roles.staff.factors: names webauthn, which this gateway cannot offer: "
        "public_url is not set",
        f"{file}:15: users.fay.factors: names webauthn, which this gateway cannot offer: "
        "public_url is not set",
        f"{file}:15: users.fay.phishing_resistant: names webauthn, which this gateway cannot "
        "offer: public_url is not set",
        f"{file}:17: paths[0]: names webauthn, which this gateway cannot offer: public_url is "
        "not set",
        f"{file}:18: paths[1]: names webauthn, which this gateway cannot offer: public_url is "
        "not set",
        f"{file}:19: paths[2]: names webauthn, which this gateway cannot offer: public_url is "
        "not set",
    ]
    assert unavailable_factors(view.policy, {}) == []
