"""verified_until (gateway/signin/decision.py) agrees with still_verified: a request is asked
for a verification exactly from the time verified_until gives, for the reason it gives (an
open WebSocket is closed at that time: gateway.web.socketwatch)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from gateway.model import Action, Decision
from gateway.policy.load import load_policies
from gateway.policy.view import PolicyView
from gateway.signin.decision import (
    Asks,
    Kind,
    Request,
    Rules,
    Who,
    crm_decision,
    still_verified,
    verified_until,
)

POLICY = """
defaults: {interval: 1d, factors: [totp, recovery], reverify: 8h}
users:
  ned: {reverify: never}
paths:
  - {path: /exports/**, allow: [authenticated], fresh: 15m, factors: [totp]}
  - {path: /keys/**, allow: [authenticated], phishing_resistant: true}
  - {path: /**, allow: [authenticated]}
"""

T = 1_800_000_000.0
HOUR = 3600.0


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> PolicyView:
    folder: Path = tmp_path_factory.mktemp("policies")
    (folder / "policy.yaml").write_text(textwrap.dedent(POLICY))
    return PolicyView.of(load_policies(folder))


def decided(view: PolicyView, who: Who, path: str) -> Decision:
    return crm_decision(view, who, Request(Asks.CRM, "10.0.0.1", "GET", path), Rules())


def session(user: str = "amy", verified: float = T, **kw: object) -> Who:
    return Who(Kind.SESSION, user, verified=verified, **kw)  # type: ignore[arg-type]


CASES = [
    ("plain, reverify 8h", session(), "/contacts", (T + 8 * HOUR, "reverify")),
    ("reverify never", session("ned"), "/contacts", (math.inf, "")),
    ("no factor ever", session(verified=0.0), "/contacts", (math.inf, "")),
    ("own choice 1h", session(chosen_interval=HOUR), "/contacts", (T + HOUR, "reverify")),
    (
        "fresh totp",
        session(verified_by=(("totp", T - 60),)),
        "/exports/a",
        (T - 60 + 15 * 60, "fresh"),
    ),
    ("fresh, only recovery", session(verified_by=(("recovery", T),)), "/exports/a", None),
    ("phishing resistant, none", session(verified_by=(("totp", T),)), "/keys/a", None),
    ("a token", Who(Kind.TOKEN, "amy", token_known=True), "/contacts", (math.inf, "")),
]


@pytest.mark.parametrize(
    ("who", "path", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_verified_until_is_when_still_verified_first_asks(
    view: PolicyView, who: Who, path: str, expected: tuple[float, str] | None
) -> None:
    allowed = decided(view, who, path)
    until, why = verified_until(view, who, allowed)
    if expected is None:  # asked at once, whenever
        assert (until, why) == (-math.inf, "fresh")
    else:
        assert (until, why) == expected
    first = ""  # the reason still_verified gives when it first asks
    for now in (T - 1, T, T + 14 * 60, T + HOUR - 1, T + HOUR, T + 8 * HOUR - 1, T + 8 * HOUR):
        asked = still_verified(view, who, allowed, now)
        assert (asked.action is Action.CHALLENGE) == (now >= until), (now - T, asked)
        if asked.action is Action.CHALLENGE:
            first = first or asked.reason
    assert first == why
