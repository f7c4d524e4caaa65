"""Attacks on the interval a user chooses for themselves (issue 16, item 5), by a signed-in
user who wants fewer prompts or someone at a session left open: the real gateway in front of
the demo CRM, real TOTP codes, a fake clock. Findings are tests that failed before their fix
(named in the test's docstring); the attacks that held are plain tests.
"""

from __future__ import annotations

from gateway.stores import IntervalChoice
from tests.flows.test_interval_choice import HOUR, choose, crm, gw
from tests.signin_kit import Browsers, SignInGateway, enrolled

__all__ = ["crm", "gw"]  # the fixtures, by name


async def test_always_does_not_loosen_an_hourly_session_without_a_factor(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """Finding (fixed): `always` only looked shorter than `1h`, so it went without a code;
    but `always` leaves `reverify` to the policy (here: never), so someone at a session left
    open within the hour turned the hourly re-verification off for good."""
    b = browsers(gw)
    secret, _ = await enrolled(b, "bob", "bob-demo")
    assert await choose(b, "1h") == "/_gateway/account?interval_saved=1"
    gw.clock.advance(HOUR / 2)  # past sessions.step_up_window, inside the hour
    assert await choose(b, "always") == "/_gateway/challenge"  # a code first
    assert await gw.signin.durable.interval_choice("bob") == IntervalChoice(
        HOUR, gw.clock.now() - HOUR / 2
    )
    gw.clock.advance(HOUR)
    status, _, r = await b.get("/contacts")  # still asked hourly
    assert (status, r.headers.get("Location")) == (303, "/_gateway/challenge")
    # With the code, the choice goes through.
    status, _, r = await b.answer(b.code(secret, 31))
    assert status == 303
    assert await choose(b, "always") == "/_gateway/account?interval_saved=1"
    assert (await gw.signin.durable.interval_choice("bob")) is not None
