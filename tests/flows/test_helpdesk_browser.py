"""The helpdesk console in real headless Chromium (issue 19, "Done when"): a helpdesk user
unlocks a locked user and resets a lost phone, after which that user enrols again; an
auditor sees but cannot act; a user without the role, from another network or without a
fresh factor is refused. The gateway, the demo CRM, SQLite and the codes are real; the clock
is the gateway's fake one."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Browser, expect

from tests import browser as chromium
from tests.conftest import Served
from tests.helpdesk_kit import (
    ADMIN,
    answer,
    console_gateway,
    gw,
    no_sideways_scroll,
    shoot,
    sign_in,
)
from tests.signin_kit import Browsers, SignInGateway, Start, audit_trail, enrolled, wrong_code

__all__ = ["gw"]  # the fixtures, by name

browser = chromium.browser


async def events(gw: SignInGateway, name: str) -> list[dict[str, object]]:
    """The audit trail's events of one name, as the store has them."""
    return [
        {"user": e.user, "outcome": e.outcome, "reason": e.reason, **dict(e.details)}
        for e in await audit_trail(gw.served, name)
    ]


async def test_a_helpdesk_user_unlocks_a_locked_user_and_resets_a_lost_phone(
    browser: Browser, gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    # carol enrols, then locks herself out with wrong codes (another browser of hers).
    carol = browsers(gw)
    secret, _ = await enrolled(carol, "carol", "carol-demo")
    gw.clock.advance(60)
    locked = browsers(gw)
    assert await locked.crm_login("carol", "carol-demo") == "/_gateway/challenge"
    for _ in range(5):
        status, _, _ = await locked.answer(wrong_code(locked, secret))
    assert status == 429
    assert await gw.signin.regulator.locked_until("carol", "") > gw.clock.now()

    context = await browser.new_context()
    page = await context.new_page()
    try:
        await sign_in(page, gw, "alice")
        await page.goto(f"{gw.url}{ADMIN}")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Users")
        await page.get_by_label("Name").fill("car")
        await page.get_by_role("button", name="Search").click()
        await page.get_by_role("link", name="carol").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("User carol")
        await expect(page.get_by_text(re.compile("Locked out of codes until"))).to_be_visible()
        # Masked, never whole: the phone number and the e-mail address.
        await expect(page.get_by_text("+31 6 ••••••78")).to_be_visible()
        await expect(page.get_by_text("c••••@example.nl")).to_be_visible()
        assert "1234 5678" not in await page.content()
        await shoot(page, "user-locked", tmp_path)

        await page.get_by_role("button", name="Unlock").click()
        await expect(page.get_by_role("status").filter(has_text="Unlocked.")).to_be_visible()
        await expect(page.get_by_text("Not locked out.")).to_be_visible()
        assert await gw.signin.regulator.locked_until("carol", "") == 0
        status, _, r = await locked.answer(locked.code(secret))
        assert (status, r.headers["Location"]) == (303, "/contacts")

        # The phone is lost: reset. Without the box ticked the browser does not send it.
        await page.get_by_label("I have checked who is asking").check()
        await page.get_by_role("button", name="Reset two-step verification").click()
        await expect(page.get_by_role("status").filter(has_text="reset")).to_be_visible()
        await expect(page.get_by_text("No authenticator: the user sets one up")).to_be_visible()
        await shoot(page, "user-after-reset", tmp_path)
        assert await gw.signin.durable.authenticators("carol") == []
        assert await gw.signin.durable.recovery_codes_left("carol") == 0
        assert (await locked.get("/contacts"))[0] == 302  # her sessions ended at once
    finally:
        await context.close()

    # carol signs in again: straight to enrolment, and in with a new authenticator.
    context = await browser.new_context()
    page = await context.new_page()
    try:
        gw.clock.advance(60)
        new_secret = await sign_in(page, gw, "carol")
        assert new_secret and new_secret != secret
        await expect(page).to_have_url(re.compile(r"/contacts$"))
    finally:
        await context.close()
    unlock, reset = await events(gw, "admin.unlock"), await events(gw, "admin.reset_2fa")
    assert [(e["user"], e["by"], e["via"]) for e in unlock] == [("carol", "alice", "console")]
    assert [(e["user"], e["by"], e["authenticators"]) for e in reset] == [("carol", "alice", 1)]


async def test_an_auditor_sees_but_cannot_act(
    browser: Browser, gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    await enrolled(browsers(gw), "carol", "carol-demo")
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await sign_in(page, gw, "bob")
        await page.goto(f"{gw.url}{ADMIN}user?u=carol")
        await expect(page.get_by_role("heading", level=1)).to_have_text("User carol")
        await expect(
            page.get_by_text("Your role may look but not change anything.")
        ).to_be_visible()
        await expect(page.get_by_role("heading", name="Sign-in methods")).to_be_visible()
        for button in ("Unlock", "Reset two-step verification", "Sign out everywhere"):
            assert await page.get_by_role("button", name=button).count() == 0
        await shoot(page, "auditor", tmp_path)
        # A form made by hand with the auditor's own CSRF token: refused, and recorded.
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        answered = await page.request.post(
            f"{gw.url}{ADMIN}act",
            form={"csrf": csrf, "user": "carol", "action": "reset", "confirm": "1"},
            headers={"Origin": gw.url},
        )
        assert answered.status == 403
        assert "Your role may look but not change anything." in await answered.text()
        assert len(await gw.signin.durable.authenticators("carol")) == 1
    finally:
        await context.close()
    refused = await events(gw, "admin.console_refused")
    assert [(e["user"], e["reason"], e["by"]) for e in refused] == [("carol", "read_only", "bob")]


async def test_no_role_another_network_or_an_old_factor_is_refused(
    browser: Browser, crm: Served, start: Start, tmp_path: Path
) -> None:
    # Behind a proxy at 127.0.0.1 that says where each browser is.
    gw = await console_gateway(start, crm.url, extra="trusted_proxies: [127.0.0.1/32]\n")
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await sign_in(page, gw, "carol")  # an ordinary user
        answered = await page.goto(f"{gw.url}{ADMIN}")
        assert answered is not None and answered.status == 403
        await expect(page.get_by_text("Your account has no helpdesk role.")).to_be_visible()
    finally:
        await context.close()

    away = await browser.new_context(extra_http_headers={"X-Forwarded-For": "198.51.100.7"})
    page = await away.new_page()
    try:
        secret = await sign_in(page, gw, "alice")  # the CRM lets her in from anywhere
        answered = await page.goto(f"{gw.url}{ADMIN}user?u=carol")
        assert answered is not None and answered.status == 403
        await expect(
            page.get_by_text(re.compile("cannot be opened from the network"))
        ).to_be_visible()
        await shoot(page, "refused-network", tmp_path)
    finally:
        await away.close()

    context = await browser.new_context()
    page = await context.new_page()
    try:
        gw.clock.advance(60)  # a code of another time step than the one she enrolled with
        await sign_in(page, gw, "alice", secret)
        await page.goto(f"{gw.url}{ADMIN}")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Users")
        # 16 minutes on, the factor is too old to read the console: a code, then back.
        gw.clock.advance(16 * 60)
        await page.goto(f"{gw.url}{ADMIN}user?u=carol")
        await answer(page, gw, secret)
        await expect(page).to_have_url(re.compile(r"/_gateway/admin/user\?u=carol$"))
        # 6 minutes on, reading still goes; changing asks for a code again (step-up).
        gw.clock.advance(6 * 60)
        await page.reload()
        await page.get_by_role("button", name="Unlock").click()
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge"))
        await answer(page, gw, secret)
        await expect(page).to_have_url(re.compile(r"/_gateway/admin/user\?u=carol$"))
        await page.get_by_role("button", name="Unlock").click()
        await expect(page.get_by_role("status").filter(has_text="Unlocked.")).to_be_visible()
    finally:
        await context.close()
    refused = await events(gw, "admin.console_refused")
    assert [(e["reason"], e["outcome"]) for e in refused] == [
        ("no_admin_role", "refused"),
        ("network", "denied"),
    ]


async def test_the_console_reads_on_a_phone_in_every_language(
    browser: Browser, gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    await enrolled(browsers(gw), "carol", "carol-demo")
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = await context.new_page()
    try:
        await sign_in(page, gw, "alice")
        for lang in ("en", "nl", "nb", "de", "fr", "ru"):
            await page.goto(f"{gw.url}/_gateway/lang?to={lang}&next={ADMIN}")
            labelled = 0
            for path in ("", "user?u=carol", "activity", "sms"):
                await page.goto(f"{gw.url}{ADMIN}{path}")
                assert await page.locator("html").get_attribute("lang") == lang
                assert "helpdesk." not in await page.locator("body").inner_text(), path
                await no_sideways_scroll(page, 390)
                # Every field has a name a screen reader says.
                for field in await page.locator("main input:not([type=hidden]), main select").all():
                    assert await field.evaluate("e => e.labels.length > 0"), (lang, path)
                    labelled += 1
            assert labelled, f"no field was looked at in {lang}: the check above checked nothing"
            if lang == "en":
                await shoot(page, "phone-sms", tmp_path)
        await page.goto(f"{gw.url}/_gateway/lang?to=en&next={ADMIN}")
        await page.goto(f"{gw.url}{ADMIN}user?u=carol")
        await shoot(page, "phone-user", tmp_path)
        # The keyboard reaches the search first and shows where it is.
        await page.goto(f"{gw.url}{ADMIN}")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.className") == "skip"
    finally:
        await context.close()
