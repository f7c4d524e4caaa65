"""The helpdesk console's tests share this: a gateway with the console in front of the demo
CRM (alice helpdesk, bob auditor, carol an ordinary user with a phone and an e-mail address),
and a person in Chromium signing in the way anyone does: the CRM's form, then enrolment or
the code. Screenshots go to a temporary folder, or to $HELPDESK_SCREENSHOTS (the README's
pictures are made with `HELPDESK_SCREENSHOTS=docs/images pytest tests/flows/test_helpdesk_*`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Page, expect

from tests.conftest import Served
from tests.signin_kit import Browser, Browsers, SignInGateway, Start, enrolled, field

CONSOLE_POLICY = """\
networks:
  office: [127.0.0.0/8, "::1/128"]
defaults: {interval: always, factors: [totp, recovery], enforcement: required, remember_device: 30d}
roles:
  helpdesk: {}
  auditor: {}
  admin: {}
groups:
  staff: {}
  customers: {}
users:
  alice: {roles: [helpdesk], groups: [staff], email: alice@example.com}
  bob: {roles: [auditor], groups: [staff]}
  carol: {groups: [customers], email: carol@example.nl, phone: '+31 6 1234 5678'}
paths:
  - {path: "/**", allow: [anyone]}
"""
CONSOLE = "admin:\n  console: {networks: [office]}\n"
PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo", "carol": "carol-demo"}
ADMIN = "/_gateway/admin/"


async def console_gateway(
    start: Start, crm_url: str, *, policy: str = CONSOLE_POLICY, extra: str = ""
) -> SignInGateway:
    return await start(crm_url, policy=policy, extra=CONSOLE + extra)


async def alice_at_the_console(gw: SignInGateway, browsers: Browsers) -> Browser:
    """alice (helpdesk) signed in, in a scripted browser; carol enrolled before her."""
    await enrolled(browsers(gw), "carol", "carol-demo")
    gw.clock.advance(30)
    b = browsers(gw)
    await enrolled(b, "alice", "alice-demo")
    return b


@pytest.fixture
async def gw(crm: Served, start: Start) -> SignInGateway:
    """The console's gateway before the test module's `crm` (import it by this name)."""
    return await console_gateway(start, crm.url)


@pytest.fixture
async def alice(gw: SignInGateway, browsers: Browsers) -> Browser:
    """alice_at_the_console, as a fixture (import it by this name)."""
    return await alice_at_the_console(gw, browsers)


async def csrf_of(b: Browser, user: str = "carol") -> str:
    """The console's CSRF token, from `user`'s page as `b` is shown it."""
    status, html, _ = await b.get(f"{ADMIN}user?u={user}")
    assert status == 200, html[:300]
    return field(html, "csrf")


async def sign_in(page: Page, gw: SignInGateway, user: str, secret: str = "") -> str:
    """The CRM's own login form, then enrolment (a new user: the key read from the page,
    the recovery codes saved) or the code; back where the CRM sends a user. The secret."""
    await page.goto(f"{gw.url}/login")
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password").fill(PASSWORDS[user])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/_gateway/(enrol|challenge)"))
    if "/enrol" in page.url:
        secret = (await page.locator("#secret-key").text_content() or "").replace(" ", "")
        await page.get_by_label(re.compile("A name for this authenticator")).fill("Phone")
        code = pyotp.TOTP(secret).at(gw.clock.now())
        await page.get_by_label("Enter the 6-digit code the app now shows").fill(code)
        await page.get_by_role("button", name="Turn on").click()
        await page.get_by_label("I have saved these codes somewhere safe").check()
        await page.get_by_role("button", name="Continue").click()
    else:
        await answer(page, gw, secret)
    await expect(page).not_to_have_url(re.compile(r"/_gateway/"))
    return secret


async def answer(page: Page, gw: SignInGateway, secret: str) -> None:
    """At the challenge page: the authenticator's code of now."""
    await expect(page).to_have_url(re.compile(r"/_gateway/challenge"))
    await page.get_by_label("Verification code").fill(pyotp.TOTP(secret).at(gw.clock.now()))
    await page.get_by_role("button", name="Verify").click()


async def shoot(page: Page, name: str, tmp_path: Path) -> Path:
    """A full-page screenshot, in $HELPDESK_SCREENSHOTS when set (else the test's folder)."""
    folder = Path(os.environ.get("HELPDESK_SCREENSHOTS", "") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"helpdesk-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def no_sideways_scroll(page: Page, width: int) -> None:
    scrolled = await page.evaluate("document.documentElement.scrollWidth")
    assert scrolled <= width, f"{page.url} is {scrolled}px wide on a {width}px screen"
