"""The interval a user chooses within the policy's (gateway.signin.interval, issue 16 item 5),
and the Decision with it: the stricter of the two holds, a choice at or above the cap counts
for nothing, a chosen duration caps `reverify` too and `always` leaves it alone."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from gateway.model import Action, Decision, Settings
from gateway.policy.load import load_policies
from gateway.policy.view import PolicyView
from gateway.signin.decision import Asks, Device, Facts, Kind, Request, Who, decide
from gateway.signin.interval import applies, loosens, open_to, parse_choice, with_choice

H, D = 3600.0, 86400.0
NOW = 1_800_000_000.0


def settings(interval: float, reverify: float = math.inf) -> Settings:
    return Settings(interval, ("totp",), "required", "", 0.0, reverify=reverify)


@pytest.mark.parametrize(
    ("cap", "open_"),
    [
        (0.0, ()),  # `always`: nothing to choose
        (H, (0.0,)),
        (12 * H, (0.0, H, 8 * H)),
        (D, (0.0, H, 8 * H)),
        (7 * D, (0.0, H, 8 * H, D)),
        (30 * D, (0.0, H, 8 * H, D, 7 * D)),
    ],
)
def test_the_named_intervals_stricter_than_the_cap_are_open(
    cap: float, open_: tuple[float, ...]
) -> None:
    assert open_to(cap) == open_


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("always", 0.0), ("1h", H), ("8h", 8 * H), ("1d", D), ("7d", 7 * D)],
)
def test_named_intervals_read_as_the_form_sends_them(value: str, seconds: float) -> None:
    assert parse_choice(value) == seconds


@pytest.mark.parametrize("value", ["", "0", "2h", "30d", "never", "1D", " 1d", "86400", "policy"])
def test_anything_else_is_no_interval(value: str) -> None:
    assert parse_choice(value) is None


@pytest.mark.parametrize(
    ("policy", "chosen", "interval", "reverify"),
    [
        (settings(7 * D, 7 * D), None, 7 * D, 7 * D),  # no choice: the policy's
        (settings(7 * D, 7 * D), D, D, D),  # stricter: holds, inside the session too
        (settings(7 * D), H, H, H),  # reverify `never` becomes the hour chosen
        (settings(7 * D, 8 * H), D, D, 8 * H),  # the policy's shorter reverify stays
        (settings(7 * D, 7 * D), 0.0, 0.0, 7 * D),  # `always`: at sign-in, not every request
        (settings(D, D), 7 * D, D, D),  # above the cap (tightened since): the policy's
        (settings(D, D), D, D, D),  # at the cap: the policy's
        (settings(0.0, D), 0.0, 0.0, D),  # cap `always`: nothing chosen counts
        (settings(D, D), -5.0, D, D),  # a negative row (forged): counts for nothing
    ],
)
def test_the_stricter_of_policy_and_choice_holds(
    policy: Settings, chosen: float | None, interval: float, reverify: float
) -> None:
    held = with_choice(policy, chosen)
    assert (held.interval, held.reverify) == (interval, reverify)
    assert (held is policy) == (not applies(policy.interval, chosen))


POLICY = """
defaults: {interval: always, factors: [totp, recovery], reverify: 7d}
users:
  bob: {interval: 7d}
paths:
  - {path: /**, allow: [authenticated]}
"""


@pytest.mark.parametrize(
    ("policy", "before", "after", "looser"),
    [
        (settings(7 * D), None, H, False),  # stricter: no code asked
        (settings(7 * D), H, None, True),
        (settings(7 * D), H, 8 * H, True),
        (settings(7 * D), 0.0, H, True),  # longer at sign-in
        (settings(7 * D), H, 0.0, True),  # shorter at sign-in, but reverify back to never
        (settings(7 * D, reverify=D), 8 * H, 0.0, True),  # reverify 8h → the policy's day
        (settings(7 * D, reverify=H), 8 * H, 0.0, False),  # the policy's hour holds both ways
        (settings(7 * D), H, H, False),
        (settings(D), 7 * D, None, False),  # a stored choice above the cap counts for nothing
    ],
)
def test_a_change_loosens_when_either_interval_grows(
    policy: Settings, before: float | None, after: float | None, looser: bool
) -> None:
    assert loosens(policy, before, after) is looser


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> PolicyView:
    folder: Path = tmp_path_factory.mktemp("policies")
    (folder / "policy.yaml").write_text(textwrap.dedent(POLICY))
    return PolicyView.of(load_policies(folder))


def request_as(view: PolicyView, chosen: float | None, verified: float) -> Decision:
    who = Who(Kind.SESSION, "bob", verified=verified, chosen_interval=chosen)
    return decide(view, who, Request(Asks.CRM, "10.0.0.1", "GET", "/contacts"), now=NOW)


def test_a_session_is_asked_again_after_the_interval_chosen(view: PolicyView) -> None:
    assert request_as(view, None, NOW - 2 * D).action is Action.FORWARD  # reverify 7d
    asked = request_as(view, D, NOW - 2 * D)
    assert (asked.action, asked.reason) == (Action.CHALLENGE, "reverify")
    assert "a verification lasts 1d (the user's own choice)" in str(asked.steps[-1])
    assert request_as(view, 0.0, NOW - 2 * D).action is Action.FORWARD  # always: at sign-in
    assert request_as(view, 30 * D, NOW - 2 * D).action is Action.FORWARD  # above the cap


def sign_in_as(view: PolicyView, chosen: float | None, device_verified: float) -> Action:
    found = Facts(
        offered=("totp", "recovery"),
        usable=("totp",),
        device=Device(verified=device_verified, remembered_until=0.0),
    )
    who = Who(Kind.SIGNING_IN, "bob", chosen_interval=chosen)
    return decide(view, who, Request(Asks.SIGN_IN, "10.0.0.1"), facts=found, now=NOW).action


def test_a_device_is_trusted_at_sign_in_only_within_the_interval_chosen(
    view: PolicyView,
) -> None:
    assert sign_in_as(view, None, NOW - 2 * H) is Action.FORWARD  # within the policy's 7d
    assert sign_in_as(view, H, NOW - 2 * H) is Action.CHALLENGE
    assert sign_in_as(view, 0.0, NOW - 60) is Action.CHALLENGE  # always
    assert sign_in_as(view, D, NOW - 2 * H) is Action.FORWARD
    assert sign_in_as(view, 30 * D, NOW - 8 * D) is Action.CHALLENGE  # the cap wins
