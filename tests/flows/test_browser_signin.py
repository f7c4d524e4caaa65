"""A person in real headless Chromium: enrols from the text key, signs in, saves the recovery
codes, signs in with a recovery code, remembers the device and is not asked again within the
interval, and is asked again after it. The gateway and the demo CRM are real; the clock is
the gateway's fake one, so thirty days pass in a line."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyotp
import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import Browser, Page, expect

from tests import browser as chromium
from tests.conftest import Served
from tests.signin_kit import SignInGateway, Start, gateway_in_front

browser = chromium.browser  # the fixture, by name
gw = pytest.fixture(name="gw")(gateway_in_front)  # in front of the demo CRM (conftest's `crm`)

DAY = 86400.0


async def crm_login(page: Page, gw: SignInGateway) -> None:
    await page.goto(f"{gw.url}/login")
    await page.get_by_label("User name").fill("alice")
    await page.get_by_label("Password").fill("alice-demo")
    await page.get_by_role("button", name="Log in").click()


async def crm_logout(page: Page) -> None:
    await page.get_by_role("button", name=re.compile("Log out")).click()
    await expect(page).to_have_url(re.compile(r"/login$"))


async def test_a_person_enrols_signs_in_recovers_and_is_remembered(
    browser: Browser, gw: SignInGateway
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    try:
        # First sign-in: the CRM's own form, then our enrolment page.
        await crm_login(page, gw)
        await expect(page).to_have_url(re.compile(r"/_gateway/enrol$"))
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Set up two-step verification"
        )
        # The QR code, as a phone camera sees it on the screen, holds the otpauth URI.
        shot = await page.locator(".qr svg").screenshot()
        found = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot)))
        await page.get_by_text("Cannot scan the code?").click()
        uri = await page.get_by_role("link", name=re.compile("Open the key")).get_attribute("href")
        assert [b.text for b in found] == [uri]
        assert uri is not None
        assert uri.startswith("otpauth://totp/CRM%20Gateway%3Aalice?secret=")
        key = (await page.locator("#secret-key").inner_text()).replace(" ", "")
        assert re.fullmatch(r"[A-Z2-7]{32}", key)
        totp = pyotp.TOTP(key)
        code_box = page.get_by_label("Enter the 6-digit code the app now shows")
        assert await code_box.get_attribute("autocomplete") == "one-time-code"
        assert await code_box.get_attribute("inputmode") == "numeric"
        await page.get_by_label("A name for this authenticator").fill("My phone")
        await code_box.fill(totp.at(gw.clock.now()))
        await page.get_by_role("button", name="Turn on").click()

        # Recovery codes: shown once, and Continue needs the box ticked.
        await expect(page).to_have_url(re.compile(r"/_gateway/recovery-codes$"))
        codes = [c.strip() for c in await page.locator(".codes code").all_inner_texts()]
        assert len(codes) == 10
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="Download as a text file").click()
        saved = Path(await (await download_info.value).path()).read_text()
        assert all(code in saved for code in codes)
        await page.get_by_label("I have saved these codes somewhere safe").check()
        await page.get_by_role("button", name="Continue").click()
        await expect(page).to_have_url(re.compile(r"/contacts$"))
        await expect(page.get_by_role("heading", name="Demo CRM")).to_be_visible()

        # Signing in again: asked for a code; a recovery code works (once).
        await crm_logout(page)
        gw.clock.advance(60)
        await crm_login(page, gw)
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        await page.get_by_role("link", name="Use a recovery code").click()
        await page.get_by_label("Recovery code").fill(codes[0])
        await page.get_by_role("button", name="Verify").click()
        await expect(page).to_have_url(re.compile(r"/contacts$"))

        # Keyboard only: the code and "remember this device" without a mouse.
        await crm_logout(page)
        gw.clock.advance(60)
        await crm_login(page, gw)
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        await page.keyboard.type(totp.at(gw.clock.now()))  # the code box has focus
        await page.keyboard.press("Tab")
        await page.keyboard.press("Space")  # "Remember this device for 30 days"
        assert await page.get_by_label("Remember this device for 30 days").is_checked()
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(re.compile(r"/contacts$"))

        # Within the remembered time: straight in after the password.
        await crm_logout(page)
        gw.clock.advance(20 * DAY)
        await crm_login(page, gw)
        await expect(page).to_have_url(re.compile(r"/contacts$"))

        # After it: asked again.
        await crm_logout(page)
        gw.clock.advance(11 * DAY)
        await crm_login(page, gw)
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
    finally:
        await context.close()


async def test_pages_work_on_a_phone_sized_screen_in_dutch(
    browser: Browser, gw: SignInGateway
) -> None:
    context = await browser.new_context(
        locale="nl-NL", viewport={"width": 360, "height": 740}, is_mobile=True
    )
    page = await context.new_page()
    try:
        await crm_login(page, gw)
        await expect(page).to_have_url(re.compile(r"/_gateway/enrol$"))
        assert await page.locator("html").get_attribute("lang") == "nl"
        # Nothing wider than the screen: no sideways scrolling on a phone.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360
        # The visible language switch: to Norwegian and back.
        await page.get_by_role("link", name="Norsk bokmål").click()
        assert await page.locator("html").get_attribute("lang") == "nb"
    finally:
        await context.close()


async def test_a_person_signs_in_with_a_code_from_a_text_message(
    browser: Browser, crm: Served, start: Start, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    policy = (
        "defaults: {interval: always, factors: [totp, recovery], enforcement: required}\n"
        "users:\n  carol: {factors: [sms, totp, recovery], phone: '+31 6 1234 5678'}\n"
        "paths:\n  - {path: '/**', allow: [anyone]}\n"
    )
    extra = f"sms:\n  provider: {{type: outbox, path: {outbox}}}\n"
    gw = await start(crm.url, policy=policy, extra=extra)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{gw.url}/login")
        await page.get_by_label("User name").fill("carol")
        await page.get_by_label("Password").fill("carol-demo")
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        await expect(page.get_by_text("+31 6 ••••••78")).to_be_visible()
        await page.get_by_role("button", name="Send the code").click()
        await expect(page.get_by_label("Code from the message")).to_be_visible()
        text = json.loads(outbox.read_text().splitlines()[-1])["text"]
        code = re.search(r"\b\d{6}\b", text)
        assert code is not None
        await page.get_by_label("Code from the message").fill(code.group(0))
        await page.get_by_role("button", name="Verify").click()
        await expect(page).to_have_url(re.compile(r"/contacts$"))
    finally:
        await context.close()
