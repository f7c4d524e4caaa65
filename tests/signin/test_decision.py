"""The one Decision (gateway/signin/decision.py), case by case: requests for the CRM by who sends
them, the end of a sign-in's password step, and changes to how a user signs in."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.model import Action
from gateway.policy.load import load_policies
from gateway.policy.view import PolicyView
from gateway.signin.decision import Asks, Device, Facts, Kind, Request, Rules, Who, decide

POLICY = """
networks:
  office: [10.0.0.0/8]
roles:
  admin: {networks: [office]}
  customer: {factors: [sms, totp, recovery]}
users:
  ann: {roles: [admin]}
  cid: {roles: [customer], enforcement: optional}
  dee: {enforcement: {required_from: 2099-01-01}}
  eve: {interval: 1d, remember_device: 30d}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: /api/**, allow: [token]}
  - {path: /public/**, allow: [anyone]}
  - {path: /**, allow: [authenticated]}
api:
  unknown_tokens: {networks: [office]}
"""

NOW = 1_800_000_000.0
OFFICE, OUTSIDE = "10.1.2.3", "203.0.113.9"


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> PolicyView:
    folder: Path = tmp_path_factory.mktemp("policies")
    (folder / "policy.yaml").write_text(textwrap.dedent(POLICY))
    return PolicyView.of(load_policies(folder))


def crm(path: str, ip: str = OFFICE, method: str = "GET") -> Request:
    return Request(Asks.CRM, ip, method, path)


@pytest.mark.parametrize(
    ("who", "request_", "action", "reason"),
    [
        (Who(Kind.SESSION, "ann"), crm("/admin/x"), Action.FORWARD, "ok"),
        (Who(Kind.SESSION, "ann"), crm("/admin/x", OUTSIDE), Action.DENY, "ip_not_allowed"),
        (Who(Kind.SESSION, "cid"), crm("/admin/x"), Action.DENY, "path_not_allowed"),
        (Who(Kind.ANONYMOUS), crm("/public/a"), Action.FORWARD, "ok"),
        (Who(Kind.ANONYMOUS), crm("/contacts"), Action.DENY, "path_not_allowed"),
        (Who(Kind.TOKEN, "ann", token_known=True), crm("/api/c"), Action.FORWARD, "ok"),
        (
            Who(Kind.TOKEN, "gone", token_known=True),
            crm("/api/c"),
            Action.DENY,
            "token_owner_unknown",
        ),
        (Who(Kind.TOKEN), crm("/api/c"), Action.FORWARD, "ok"),  # unknown, from the office
        (Who(Kind.TOKEN), crm("/api/c", OUTSIDE), Action.DENY, "token_ip_not_allowed"),
        (Who(Kind.LOGIN, "ann"), crm("/login", OUTSIDE, "POST"), Action.DENY, "ip_not_allowed"),
        (
            Who(Kind.SESSION, "ann", refused="method_ambiguous"),
            crm("/x"),
            Action.DENY,
            "method_ambiguous",
        ),
        (
            Who(Kind.TOKEN, refused="credential_ambiguous"),
            crm("/x"),
            Action.DENY,
            "credential_ambiguous",
        ),
    ],
)
def test_requests_for_the_crm(
    view: PolicyView, who: Who, request_: Request, action: Action, reason: str
) -> None:
    decision = decide(view, who, request_)
    assert (decision.action, decision.reason) == (action, reason)


def test_a_signed_in_user_is_forwarded_as_themself(view: PolicyView) -> None:
    assert decide(view, Who(Kind.SESSION, "ann"), crm("/contacts")).user == "ann"
    assert decide(view, Who(Kind.ANONYMOUS), crm("/public/x")).user == ""


def test_gateway_login_sends_anonymous_requests_for_closed_paths_to_sign_in(
    view: PolicyView,
) -> None:
    rules = Rules(gateway_login=True)
    closed = decide(view, Who(Kind.ANONYMOUS), crm("/contacts"), rules=rules)
    assert (closed.action, closed.reason) == (Action.SIGN_IN, "signin_required")
    assert decide(view, Who(Kind.ANONYMOUS), crm("/public/x"), rules=rules).allowed
    # A token is never sent to a page: judged on its own.
    token = decide(view, Who(Kind.TOKEN), crm("/contacts", OUTSIDE), rules=rules)
    assert token.action is Action.DENY


def facts(
    *usable: str,
    offered: tuple[str, ...] = ("totp", "recovery"),
    enrollable: tuple[str, ...] | None = None,
    device: Device | None = None,
    retired: tuple[str, ...] = (),
) -> Facts:
    if enrollable is None:
        enrollable = tuple(f for f in offered if f == "totp")  # as the factors say
    return Facts(
        offered=offered,
        usable=usable,
        sends=frozenset({"sms", "email"}) & set(offered),
        enrollable=enrollable,
        device=device,
        retired=retired,
    )


def sign_in(
    view: PolicyView, user: str, found: Facts, now: float = NOW
) -> tuple[Action, str, tuple[str, ...]]:
    decision = decide(
        view, Who(Kind.SIGNING_IN, user), Request(Asks.SIGN_IN, OFFICE), facts=found, now=now
    )
    return decision.action, decision.reason, decision.factors


@pytest.mark.parametrize(
    ("user", "found", "expected"),
    [
        (
            "ann",
            facts("totp", "recovery"),
            (Action.CHALLENGE, "second_factor", ("totp", "recovery")),
        ),
        ("ann", facts(), (Action.CHALLENGE, "enrol", ("totp",))),
        ("cid", facts(), (Action.FORWARD, "no_factor_required", ())),
        (
            "cid",
            facts("sms", offered=("sms", "totp")),
            (Action.CHALLENGE, "second_factor", ("sms",)),
        ),
        ("dee", facts(), (Action.CHALLENGE, "enrol", ("totp",))),  # may postpone on that page
        ("ann", facts(offered=("sms",)), (Action.CHALLENGE, "nothing_on_file", ("sms",))),
        ("ann", facts(offered=()), (Action.DENY, "no_factor", ())),
    ],
)
def test_the_end_of_the_password_step(
    view: PolicyView, user: str, found: Facts, expected: tuple[Action, str, tuple[str, ...]]
) -> None:
    assert sign_in(view, user, found) == expected


def test_a_remembered_device_goes_straight_in_within_its_time(view: PolicyView) -> None:
    remembered = facts("totp", device=Device(verified=NOW - 86400 * 20, remembered_until=NOW + 10))
    assert sign_in(view, "eve", remembered)[:2] == (Action.FORWARD, "device_trusted")
    # Beyond the policy's remember_device (30d), whatever the device says:
    old = facts("totp", device=Device(verified=NOW - 86400 * 31, remembered_until=NOW + 10))
    assert sign_in(view, "eve", old)[0] is Action.CHALLENGE
    # Not remembered, but a factor passed on it within the interval (1d):
    recent = facts("totp", device=Device(verified=NOW - 3600, remembered_until=0))
    assert sign_in(view, "eve", recent)[:2] == (Action.FORWARD, "device_trusted")
    # ann verifies at every sign-in (interval always, remember_device off by default):
    assert sign_in(view, "ann", recent)[0] is Action.CHALLENGE


def test_a_device_never_stands_in_for_a_factor_that_is_not_on_file(view: PolicyView) -> None:
    nothing = facts(device=Device(verified=NOW - 60, remembered_until=NOW + 999))
    assert sign_in(view, "eve", nothing)[1] == "enrol"


def test_a_user_with_nothing_on_file_adds_whichever_factor_they_may_add_themselves(
    view: PolicyView,
) -> None:
    """Enrolment is not TOTP's alone: any factor whose user adds it (a security key) is
    offered, in the policy's order; a factor an administrator puts on file never is."""
    keys_only = facts(offered=("passkey", "sms"), enrollable=("passkey",))
    assert sign_in(view, "ann", keys_only) == (Action.CHALLENGE, "enrol", ("passkey",))
    both = facts(offered=("passkey", "totp"), enrollable=("passkey", "totp"))
    assert sign_in(view, "ann", both) == (Action.CHALLENGE, "enrol", ("passkey", "totp"))
    sms_only = facts(offered=("sms",), enrollable=())
    assert sign_in(view, "ann", sms_only) == (Action.CHALLENGE, "nothing_on_file", ("sms",))


@pytest.mark.parametrize(
    ("kind", "verified", "found", "expected"),
    [
        (Kind.SIGNING_IN, 0.0, facts("sms"), (Action.CHALLENGE, "factor_on_file")),
        (Kind.SIGNING_IN, 0.0, facts("recovery"), (Action.CHALLENGE, "factor_on_file")),
        (Kind.SIGNING_IN, 0.0, facts(), (Action.FORWARD, "ok")),  # enrolling is their factor
        (Kind.SESSION, NOW - 60, facts("totp"), (Action.FORWARD, "ok")),
        (Kind.SESSION, NOW - 301, facts("totp"), (Action.STEP_UP, "not_fresh")),
        (Kind.SESSION, 0.0, facts(), (Action.FORWARD, "ok")),
    ],
)
def test_a_change_to_how_a_user_signs_in(
    view: PolicyView, kind: Kind, verified: float, found: Facts, expected: tuple[Action, str]
) -> None:
    decision = decide(
        view,
        Who(kind, "cid", verified=verified),
        Request(Asks.CHANGE, OFFICE),
        facts=found,
        now=NOW,
        rules=Rules(step_up_window=300.0),
    )
    assert (decision.action, decision.reason) == expected
    if decision.action is not Action.FORWARD:
        assert decision.factors == found.usable


def test_a_factor_the_policy_no_longer_offers_is_no_reason_to_enrol_on_a_password(
    view: PolicyView,
) -> None:
    """Held to passkeys now, with only an app on file: a password alone must not add the
    passkey (whoever has it would own the account); IT resets the user, or the passkey is
    added before the policy holds them. A user with nothing on file still enrols."""
    held = facts(offered=("webauthn",), enrollable=("webauthn",), retired=("totp",))
    assert sign_in(view, "ann", held) == (Action.DENY, "factor_retired", ())
    fresh = facts(offered=("webauthn",), enrollable=("webauthn",))
    assert sign_in(view, "ann", fresh) == (Action.CHALLENGE, "enrol", ("webauthn",))
    adding = decide(
        view,
        Who(Kind.SIGNING_IN, "ann"),
        Request(Asks.CHANGE, OFFICE),
        facts=held,
        now=NOW,
    )
    assert (adding.action, adding.reason) == (Action.DENY, "factor_retired")
    # Signed in already (before the policy changed): adding one is a change like any other.
    in_session = decide(
        view,
        Who(Kind.SESSION, "ann", verified=NOW - 60),
        Request(Asks.CHANGE, OFFICE),
        facts=held,
        now=NOW,
    )
    assert in_session.action is Action.FORWARD
