"""A person in real headless Chromium at a Django-shaped CRM (issue #16): fills in a form, the
verification runs out before they press Save, they type a code, and the client is saved, once;
the CRM's own JavaScript then gets JSON, not a page, when the next verification is due. The
gateway and the CRM are real; the clock is the gateway's fake one, so hours pass in a line."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pyotp
import pytest
from playwright.async_api import Browser, Page, expect

from tests import browser as chromium
from tests.conftest import Served, serve
from tests.django_crm import CLIENTS, django_crm_app
from tests.flows.test_reverify import POLICY
from tests.flows.test_signin_django import DJANGO_LOGIN
from tests.signin_kit import LONG_SESSIONS, SignInGateway, Start

browser = chromium.browser  # the fixture, by name
HOUR = 3600.0


@pytest.fixture
async def django() -> AsyncIterator[Served]:
    served = await serve(django_crm_app())
    yield served
    await served.runner.cleanup()


async def sign_in_and_enrol(page: Page, gw: SignInGateway) -> pyotp.TOTP:
    await page.goto(f"{gw.url}/clients/")
    await page.get_by_label("Username:").fill("dora")
    await page.get_by_label("Password:").fill("dora-pass")
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/_gateway/enrol$"))
    await page.get_by_text("Cannot scan the code?").click()
    totp = pyotp.TOTP((await page.locator("#secret-key").inner_text()).replace(" ", ""))
    await page.get_by_label("Enter the 6-digit code the app now shows").fill(
        totp.at(gw.clock.now())
    )
    await page.get_by_role("button", name="Turn on").click()
    await page.get_by_label("I have saved these codes somewhere safe").check()
    await page.get_by_role("button", name="Continue").click()
    await expect(page).to_have_url(re.compile(r"/clients/$"))
    return totp


async def test_a_form_filled_in_as_the_time_runs_out_is_saved_once_after_the_code(
    browser: Browser, django: Served, start: Start
) -> None:
    gw = await start(django.url, login=DJANGO_LOGIN, policy=POLICY, extra=LONG_SESSIONS)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        totp = await sign_in_and_enrol(page, gw)
        before = len(django.app[CLIENTS])
        await page.get_by_role("link", name="Add client").click()
        await page.get_by_label("Name:").fill("Bakker & Zonen")
        await page.get_by_label("E-mail:").fill("info@bakker.example")
        gw.clock.advance(8 * HOUR)  # a long phone call before Save
        await page.get_by_role("button", name="Save").click()

        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        await expect(page.get_by_text("confirm it is you again")).to_be_visible()
        assert len(django.app[CLIENTS]) == before  # not sent yet
        gw.clock.advance(31)
        await page.keyboard.type(totp.at(gw.clock.now()))  # the code box has focus
        await page.keyboard.press("Enter")

        await expect(page).to_have_url(re.compile(r"/clients/$"))  # Django's own redirect
        await expect(page.get_by_role("cell", name="Bakker & Zonen")).to_have_count(1)
        assert [c["name"] for c in django.app[CLIENTS][before:]] == ["Bakker & Zonen"]
        await page.reload()  # a reload sends nothing twice
        assert len(django.app[CLIENTS]) == before + 1

        # The CRM's own script, once the next verification is due: JSON, never a page.
        gw.clock.advance(8 * HOUR)
        answer = await page.evaluate(
            """async () => {
                const r = await fetch("/clients/", {headers: {Accept: "application/json"}});
                return {status: r.status, body: await r.json()};
            }"""
        )
        assert answer["status"] == 401
        assert answer["body"]["verify_url"] == "/_gateway/challenge"
    finally:
        await context.close()
