"""The user chooses their own verification interval within the policy's (issue 16, item 5): on
the account page, a stricter one is asked for at the next sign-in and inside the open
session; a forged one, or one the policy no longer allows, changes nothing; an administrator
sees and resets it. The real gateway in front of the demo CRM, real TOTP codes, a fake clock.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import expect

from gateway.admin import accounts
from gateway.model import AuditEvent
from gateway.stores import AuditQuery, IntervalChoice
from gateway.web.keys import AUDIT
from gateway.web.pages.render import when
from gateway.web.revocations import carry_out_requests
from tests import browser as chromium
from tests.conftest import Served
from tests.helpdesk_kit import ADMIN, CONSOLE_POLICY, console_gateway
from tests.signin_kit import (
    DEMO_LOGIN,
    LONG_SESSIONS,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    audit_trail,
    enrolled,
    field,
    noted_crm,
)

HOUR = 3600.0
DAY = 86400.0
# bob may be trusted up to a week (the seeds' customers); alice at every sign-in (staff who
# must always verify: nothing to choose); the session itself is never re-verified by policy.
POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
users:
  bob: {interval: 7d}
paths:
  - {path: "/**", allow: [anyone]}
"""

crm = pytest.fixture(noted_crm)
browser = chromium.browser  # the fixture, by name


@pytest.fixture
async def gw(crm: Served, start: Start) -> SignInGateway:
    return await start(crm.url, login=DEMO_LOGIN, policy=POLICY, extra=LONG_SESSIONS)


async def choose(b: Browser, value: str) -> str:
    """Post the account page's interval form; where the gateway sends the browser."""
    status, html, _ = await b.get("/_gateway/account")
    assert status == 200, html[:300]
    status, _, r = await b.post(
        "/_gateway/account/interval", {"csrf": field(html, "csrf"), "interval": value}
    )
    assert status == 303
    return r.headers["Location"]


def options(html: str) -> list[tuple[str, str, bool]]:
    """(value, label, selected) of the interval select."""
    return [
        (value, label, bool(selected))
        for value, selected, label in re.findall(
            r'<option value="([^"]*)"( selected)?>([^<]*)</option>', html
        )
    ]


async def chosen_events(gw: SignInGateway) -> list[AuditEvent]:
    return await audit_trail(gw.served, "interval.chosen")


async def refused_choice(gw: SignInGateway, b: Browser, value: str) -> AuditEvent:
    """bob chooses `value` and is refused: nothing is saved, and the trail holds one choice,
    refused as not open to him. That event."""
    assert await choose(b, value) == "/_gateway/account?interval_refused=1"
    assert await gw.signin.durable.interval_choice("bob") is None
    [refused] = await chosen_events(gw)
    assert (refused.outcome, refused.reason) == ("refused", "not_open")
    return refused


async def sign_out_and_in(b: Browser, gw: SignInGateway, user: str = "bob") -> str:
    """The CRM's logout, then its login again: where the gateway sends the browser."""
    await b.post("/logout", {})
    return await b.crm_login(user, f"{user}-demo")


async def test_the_account_page_offers_the_named_intervals_below_the_cap(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    status, html, _ = await b.get("/_gateway/account")
    assert status == 200
    assert options(html) == [
        ("policy", "As my organisation sets it (Weekly)", True),
        ("always", "Always (at every sign-in)", False),
        ("1h", "Every hour", False),
        ("8h", "Every 8 hours", False),
        ("1d", "Daily", False),
    ]
    assert "In force now: Weekly." in html

    german = browsers(gw, headers={"Accept": "text/html", "Accept-Language": "de"})
    await enrolled(german, "carol", "carol-demo")  # carol: the defaults, `always`
    status, html, _ = await german.get("/_gateway/account")
    assert "Ihre Organisation fragt bei jeder Anmeldung nach einem Code" in html
    assert options(html) == []  # nothing to choose: no select at all
    assert 'name="interval"' not in html


async def test_a_stricter_interval_is_asked_for_in_the_open_session_and_at_sign_in(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b, "bob", "bob-demo")
    gw.clock.advance(2 * HOUR)
    assert (await b.get("/contacts"))[0] == 200  # the policy asks nothing within a session
    assert await sign_out_and_in(b, gw) == "/contacts"  # …nor at sign-in within 7 days

    assert await choose(b, "1h") == "/_gateway/account?interval_saved=1"
    status, html, _ = await b.get("/_gateway/account?interval_saved=1")
    assert "Your choice was saved" in html
    assert "In force now: Every hour." in html
    assert ("1h", "Every hour", True) in options(html)
    assert await gw.signin.durable.interval_choice("bob") == IntervalChoice(HOUR, gw.clock.now())

    # The open session follows at once: its factor passed two hours ago (the device's), so
    # the next request asks; after the code, an hour holds, and then it asks again.
    status, _, r = await b.get("/contacts")
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    status, _, r = await b.answer(b.code(secret, 31))
    assert (status, r.headers["Location"]) == (303, "/contacts")
    gw.clock.advance(HOUR - 60)
    assert (await b.get("/contacts"))[0] == 200
    gw.clock.advance(60)
    assert (await b.get("/contacts"))[0] == 303
    status, _, r = await b.answer(b.code(secret, 31))
    assert status == 303

    # At sign-in: a device whose code is older than an hour is asked again.
    gw.clock.advance(2 * HOUR)
    assert await sign_out_and_in(b, gw) == "/_gateway/challenge"
    events = await chosen_events(gw)
    [chosen] = events
    assert (chosen.outcome, chosen.user) == ("ok", "bob")
    assert dict(chosen.details) == {"interval": "1h", "cap": "7d", "sessions": 1}


async def test_a_longer_interval_asks_for_a_fresh_factor_first(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b, "bob", "bob-demo")
    assert await choose(b, "always") == "/_gateway/account?interval_saved=1"
    gw.clock.advance(HOUR)  # past sessions.step_up_window (5 minutes)
    # Back to the policy's week: less often than now, so a code first, then again.
    assert await choose(b, "policy") == "/_gateway/challenge"
    assert await gw.signin.durable.interval_choice("bob") == IntervalChoice(
        0.0, gw.clock.now() - HOUR
    )
    status, _, r = await b.answer(b.code(secret, 31))
    assert (status, r.headers["Location"]) == (303, "/_gateway/account")
    assert await choose(b, "policy") == "/_gateway/account?interval_saved=1"
    assert await gw.signin.durable.interval_choice("bob") is None


@pytest.mark.parametrize("value", ["7d", "30d", "2h", "0", "", "policy ", "1d; DROP TABLE"])
async def test_an_interval_not_open_to_the_user_is_refused_and_changes_nothing(
    gw: SignInGateway, browsers: Browsers, value: str
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    await refused_choice(gw, b, value)
    _, html, _ = await b.get("/_gateway/account?interval_refused=1")
    assert "That interval is not one you can choose" in html


async def test_the_form_needs_the_sessions_csrf_token(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    status, _, _ = await b.post("/_gateway/account/interval", {"csrf": "x", "interval": "1h"})
    assert status == 403
    assert await gw.signin.durable.interval_choice("bob") is None


async def test_a_policy_tightened_below_the_choice_wins(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b, "bob", "bob-demo")
    assert await choose(b, "1d") == "/_gateway/account?interval_saved=1"
    policy_file = Path(gw.signin.guard.folder) / "policy.yaml"
    policy_file.write_text(POLICY.replace("bob: {interval: 7d}", "bob: {interval: 1h}"))
    assert await gw.signin.guard.reload("test")

    _, html, _ = await b.get("/_gateway/account")
    assert "Your earlier choice (Daily) is longer than your organisation now allows" in html
    assert "In force now: Every hour." in html
    assert ("policy", "As my organisation sets it (Every hour)", True) in options(html)
    # At sign-in the policy's hour counts, not the day chosen before.
    gw.clock.advance(2 * HOUR)
    assert await sign_out_and_in(b, gw) == "/_gateway/challenge"
    assert (await b.answer(b.code(secret, 31)))[0] == 303


async def test_an_administrator_sees_and_resets_the_choice_and_the_sessions_follow(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    assert await choose(b, "always") == "/_gateway/account?interval_saved=1"
    durable = gw.signin.durable
    found = await accounts.interval_state(durable, "bob", gw.signin.settings("bob"))
    assert (found.chosen, found.effective, found.cap) == (0.0, 0.0, 7 * DAY)

    assert await accounts.reset_interval(durable, "bob", gw.clock.now())
    assert await durable.interval_choice("bob") is None
    # The running gateway's sessions of bob follow (what the watcher does every 2 s).
    await carry_out_requests(durable, gw.signin.regulator, gw.clock, book=gw.signin.book)
    [session] = await gw.signin.book.sessions_of("bob")
    assert session.chosen_interval is None
    gw.clock.advance(2 * HOUR)
    assert await sign_out_and_in(b, gw) == "/contacts"  # the policy's week again


async def test_the_helpdesk_sees_the_choice_and_forgets_it(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    policy = CONSOLE_POLICY.replace("carol: {groups", "carol: {interval: 7d, groups")
    gw = await console_gateway(start, crm.url, policy=policy)
    carol = browsers(gw)
    await enrolled(carol, "carol", "carol-demo")
    assert await choose(carol, "1d") == "/_gateway/account?interval_saved=1"
    chosen_on = gw.clock.now()
    gw.clock.advance(30)
    alice = browsers(gw)  # helpdesk
    await enrolled(alice, "alice", "alice-demo")

    status, html, _ = await alice.get(f"{ADMIN}user?u=carol")
    assert status == 200, html[:300]
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "Verification interval in force Daily" in shown
    assert f"Interval the user chose Daily, chosen {when(chosen_on)}" in shown
    status, _, r = await alice.post(
        f"{ADMIN}act", {"csrf": field(html, "csrf"), "user": "carol", "action": "interval"}
    )
    assert (status, r.headers["Location"]) == (303, f"{ADMIN}user?u=carol&done=interval_reset")
    assert await gw.signin.durable.interval_choice("carol") is None
    [session] = await gw.signin.book.sessions_of("carol")
    assert session.chosen_interval is None  # at once, in this gateway
    _, html, _ = await alice.get(f"{ADMIN}user?u=carol&done=interval_reset")
    assert "The user&#39;s own interval is forgotten" in html
    assert "None: the policy&#39;s holds" in html
    await gw.served.app[AUDIT].flush()
    events = await gw.signin.durable.audit_events(AuditQuery(names=("admin.interval_reset",)))
    assert [(e.user, dict(e.details)["by"]) for _, e in events] == [("carol", "alice")]


async def test_in_chromium_the_user_picks_daily_in_their_language(
    gw: SignInGateway, browsers: Browsers, browser: Chromium
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    context = await browser.new_context(
        locale="de-DE", extra_http_headers={"Accept-Language": "de"}
    )
    await context.add_cookies([{"name": c.key, "value": c.value, "url": gw.url} for c in b.jar])
    try:
        page = await context.new_page()
        await page.goto(f"{gw.url}/_gateway/account")
        select = page.get_by_label("Code abfragen")
        await expect(select).to_have_value("policy")
        labels = await select.locator("option").all_inner_texts()
        assert labels == [
            "Wie von meiner Organisation vorgegeben (Wöchentlich)",
            "Immer (bei jeder Anmeldung)",
            "Stündlich",
            "Alle 8 Stunden",
            "Täglich",
        ]
        await select.select_option(label="Täglich")
        await page.get_by_role("button", name="Speichern").click()
        await expect(page.get_by_text("Ihre Wahl wurde gespeichert.")).to_be_visible()
        await expect(page.get_by_label("Code abfragen")).to_have_value("1d")
        await expect(page.get_by_text("Gilt jetzt: Täglich.")).to_be_visible()
    finally:
        await context.close()
    assert await gw.signin.durable.interval_choice("bob") == IntervalChoice(DAY, gw.clock.now())
