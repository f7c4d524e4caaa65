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


async def test_a_stricter_choice_reaches_a_session_from_before_the_rings_new_round(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """Finding (fixed): a user's sessions are found through a ring of places numbered by a
    counter that lives one absolute timeout from the first session of its round. A session
    opened later in that round outlives the counter; the next sign-in starts a new round at
    place 1, and the older session was no longer looked at: a stricter choice (or a reset)
    never reached it, and it went on under the looser interval."""
    laptop, phone, office = browsers(gw), browsers(gw), browsers(gw)
    secret, _ = await enrolled(laptop, "bob", "bob-demo")  # the round starts
    gw.clock.advance(11 * HOUR)
    assert await phone.crm_login("bob", "bob-demo") == "/_gateway/challenge"
    assert (await phone.answer(phone.code(secret)))[0] == 303  # place 2 of the round
    gw.clock.advance(11 * HOUR)
    assert (await phone.get("/contacts"))[0] == 200  # kept open (idle timeout 12h)
    gw.clock.advance(2 * HOUR + 60)  # the laptop's session and the round's counter are over
    assert await office.crm_login("bob", "bob-demo") == "/_gateway/challenge"
    assert (await office.answer(office.code(secret)))[0] == 303

    assert await choose(office, "1h") == "/_gateway/account?interval_saved=1"
    # The phone's factor passed 13 hours ago: hourly now, so it is asked.
    status, _, r = await phone.get("/contacts")
    assert (status, r.headers.get("Location")) == (303, "/_gateway/challenge")
    assert len(await gw.signin.book.sessions_of("bob")) == 2
