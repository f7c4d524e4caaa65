"""Passkeys in real headless Chromium with a virtual authenticator (issue 17): a person signs
in to the Django-shaped CRM with a passkey, sees it on the account page and removes it;
administrators held to passkeys are refused their app's codes; a browser without WebAuthn or
without JavaScript is told so and keeps every other way in; the pages fit a phone in every
language. The gateway (public_url http://localhost:PORT), the CRM and Chromium are real.

`CRM_GATEWAY_SHOTS=docs/images` saves the screenshots docs/sign-in.md shows.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, expect

from gateway.i18n import LANGUAGES
from tests import browser as chromium
from tests import passkeys
from tests.conftest import Served
from tests.django_crm import SESSIONS
from tests.flows.test_pages_phone_width import MEASURE, WIDTH
from tests.flows.test_signin_django import DJANGO_LOGIN
from tests.passkeys import PasskeyGateway, StartPasskeys, VirtualKey
from tests.process import run_command_async

browser = chromium.browser  # the fixtures, by name
start_passkeys = passkeys.start_passkeys
SHOTS = os.environ.get("CRM_GATEWAY_SHOTS", "")

POLICY = """\
defaults:
  interval: always
  factors: [webauthn, totp, recovery]
  enforcement: required
  remember_device: 30d
roles:
  admin: {phishing_resistant: true}
users:
  dora: {}
  emil: {roles: [admin]}
paths:
  - {path: "/**", allow: [anyone]}
"""


@pytest.fixture
async def gw(django: Served, start_passkeys: StartPasskeys) -> PasskeyGateway:
    return await start_passkeys(django.url, policy=POLICY, login=DJANGO_LOGIN)


async def shot(page: Page, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=Path(SHOTS) / f"{name}.png", full_page=True)


async def django_login(page: Page, gw: PasskeyGateway, user: str) -> None:
    await page.goto(f"{gw.url}/clients/")
    await page.get_by_label("Username:").fill(user)
    await page.get_by_label("Password:").fill(f"{user}-pass")
    await page.get_by_role("button", name="Log in").click()


async def django_logout(page: Page, user: str) -> None:
    await page.get_by_role("button", name=f"Log out {user}").click()
    await expect(page).to_have_url(re.compile(r"/accounts/login/"))


async def add_passkey(page: Page, name: str, *, codes: bool = True) -> None:
    """On the passkey page: name it, create it, save the recovery codes if shown."""
    await expect(page).to_have_url(re.compile(r"/_gateway/passkey$"))
    await page.get_by_label("A name for this passkey").fill(name)
    await page.get_by_role("button", name="Create a passkey").click()
    if codes:
        await expect(page).to_have_url(re.compile(r"/_gateway/recovery-codes$"))
        await page.get_by_label("I have saved these codes somewhere safe").check()
        await page.get_by_role("button", name="Continue").click()


async def registered(
    context: BrowserContext, gw: PasskeyGateway, user: str
) -> tuple[Page, VirtualKey]:
    """`user`'s first sign-in in `context`: the CRM's password, then a passkey."""
    page = await context.new_page()
    key = await VirtualKey.add(context, page)
    await django_login(page, gw, user)
    await add_passkey(page, "Laptop", codes=user != "emil")  # admins get no codes to phish
    await expect(page).to_have_url(re.compile(r"/clients/$"))
    return page, key


async def test_a_person_signs_in_to_the_django_crm_with_a_passkey(
    browser: Browser, gw: PasskeyGateway, django: Served
) -> None:
    context = await browser.new_context(viewport={"width": 900, "height": 900})
    page = await context.new_page()
    try:
        key = await VirtualKey.add(context, page)
        # First sign-in: Django's own form, then our passkey page (the policy's first factor).
        await django_login(page, gw, "dora")
        await expect(page).to_have_url(re.compile(r"/_gateway/passkey$"))
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Add a passkey or security key"
        )
        # Only our script, by its nonce: nothing inline, nothing else.
        shown = await page.reload()
        assert shown is not None
        csp = shown.headers["content-security-policy"]
        assert re.search(r"script-src 'nonce-[^']+'$", csp), csp
        assert await page.get_by_role("link", name="Use an authenticator app instead").is_visible()
        await shot(page, "passkey-add")
        assert django.app[SESSIONS] and not [
            c for c in await context.cookies() if c["name"] == "sessionid"
        ]
        await add_passkey(page, "Laptop")
        await expect(page).to_have_url(re.compile(r"/clients/$"))
        assert len(await key.credentials()) == 1  # the passkey lives in the authenticator

        # Signing in again: the passkey is offered, a touch and the CRM.
        await django_logout(page, "dora")
        gw.clock.advance(60)

        async def late(route: Route) -> None:
            # The script arrives after the browser has run the page's autofocus, which a
            # disabled button cannot take: the script must focus it when it enables it.
            await asyncio.sleep(0.5)
            await route.continue_()

        await page.route("**/webauthn.js", late)
        await django_login(page, gw, "dora")
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        button = page.get_by_role("button", name="Use my passkey")
        await expect(button).to_be_enabled()  # the script found WebAuthn
        await expect(button).to_be_focused()
        await page.unroute("**/webauthn.js", late)
        assert await page.get_by_role("link", name="Use a recovery code").is_visible()
        await shot(page, "passkey-challenge")
        await button.click()
        await expect(page).to_have_url(re.compile(r"/clients/$"))
        await expect(page.get_by_role("cell", name="Acme Corporation")).to_be_visible()

        # The account page: its name, kind and last use.
        await page.goto(f"{gw.url}/_gateway/account")
        item = page.locator(".item", has_text="Laptop")
        await expect(item).to_contain_text("Passkey or security key")
        await expect(item).to_contain_text("2027-01-15")  # last used: the fake clock's day
        assert await page.get_by_role("link", name="Add a passkey or security key").is_visible()
        await shot(page, "passkey-account")
    finally:
        await context.close()
    passed = await gw.events("challenge.passed", user="dora")
    assert [dict(e.details).get("factor") for e in passed] == ["webauthn"]
    assert [e.reason for e in await gw.events("webauthn.registered")] == ["webauthn"]


async def test_administrators_held_to_passkeys_are_refused_their_app(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await VirtualKey.add(context, page)
        await django_login(page, gw, "emil")
        # Passkeys only: no app offered on the page, no recovery codes after.
        await expect(page).to_have_url(re.compile(r"/_gateway/passkey$"))
        assert await page.get_by_role("link", name=re.compile("authenticator app")).count() == 0
        await add_passkey(page, "Security key", codes=False)
        await expect(page).to_have_url(re.compile(r"/clients/$"))
        assert await gw.signin.recovery.left("emil") == 0
        # An app of his from before the policy held him (put on file directly).
        secret = pyotp.random_base32()
        await gw.signin.totp.add("emil", secret, "Old phone")

        await django_logout(page, "emil")
        gw.clock.advance(60)
        await django_login(page, gw, "emil")
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        assert await page.locator(".choices a").count() == 0  # no other way offered
        # The app's right code, sent as a crafted form: refused, and no session.
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        code = pyotp.TOTP(secret).at(gw.clock.now())
        answer = await page.request.post(
            f"{gw.url}/_gateway/challenge",
            form={"csrf": csrf or "", "factor": "totp", "code": code},
            max_redirects=0,
        )
        assert answer.status == 400
        await page.reload()
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        failed = await gw.events("challenge.failed", user="emil")
        assert [dict(e.details)["factor"] for e in failed] == ["webauthn"]
        # His passkey lets him in.
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page).to_have_url(re.compile(r"/clients/$"))
    finally:
        await context.close()
    exit_status, out, _ = await run_command_async(
        "policy", "explain", "--policies", str(gw.policies), "--user", "emil", "--ip", "10.0.0.1"
    )
    assert exit_status == 0
    assert "factors: webauthn\n" in out
    assert "phishing-resistant only: yes" in out
    assert "role admin: phishing-resistant factors only: webauthn" in out


async def test_a_passkey_is_removed_on_the_account_page_and_no_longer_offered(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context()
    try:
        page, key = await registered(context, gw, "dora")
        # A second way in first: the last one may not go while two-step is required.
        await page.goto(f"{gw.url}/_gateway/account")
        await page.get_by_role("button", name="Remove Laptop").click()
        await expect(page.get_by_role("alert")).to_contain_text("before removing the last one")
        await page.get_by_role("link", name="Add an authenticator app").click()
        await page.get_by_text("Cannot scan the code?").click()
        totp = pyotp.TOTP((await page.locator("#secret-key").inner_text()).replace(" ", ""))
        await page.get_by_label("Enter the 6-digit code the app now shows").fill(
            totp.at(gw.clock.now())
        )
        await page.get_by_role("button", name="Turn on").click()
        await page.get_by_role("button", name="Remove Laptop").click()
        await expect(page.locator(".item", has_text="Laptop")).to_have_count(0)

        await page.goto(f"{gw.url}/clients/")
        await django_logout(page, "dora")
        gw.clock.advance(60)
        await django_login(page, gw, "dora")
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        assert await page.get_by_role("button", name="Use my passkey").count() == 0
        await expect(page.get_by_label("Verification code")).to_be_visible()
        assert len(await key.credentials()) == 1  # the authenticator keeps it; we do not
    finally:
        await context.close()
    removed = await gw.events("authenticator.removed", user="dora")
    assert [dict(e.details)["factor"] for e in removed] == ["webauthn"]


async def test_a_browser_without_webauthn_is_told_and_keeps_the_other_ways(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context()
    try:
        await registered(context, gw, "dora")
        bare = await browser.new_context()
        await bare.add_init_script("delete window.PublicKeyCredential;")
        page = await bare.new_page()
        await django_login(page, gw, "dora")
        await expect(page.locator(".webauthn-status")).to_have_text(
            "This browser cannot use passkeys. Use another browser, or choose another way."
        )
        await expect(page.get_by_role("button", name="Use my passkey")).to_be_disabled()
        await page.get_by_role("link", name="Use a recovery code").click()
        await expect(page.get_by_label("Recovery code")).to_be_visible()
        await bare.close()

        # No JavaScript at all: said in the page, and every other way is a plain link.
        scriptless = await browser.new_context(java_script_enabled=False)
        page = await scriptless.new_page()
        await django_login(page, gw, "dora")
        await expect(page.get_by_text("Passkeys need JavaScript")).to_be_visible()
        await page.get_by_role("link", name="Use a recovery code").click()
        await expect(page).to_have_url(re.compile(r"factor=recovery$"))
        await expect(page.get_by_label("Recovery code")).to_be_visible()
        await scriptless.close()
    finally:
        await context.close()


async def test_a_cancelled_passkey_says_so_and_can_be_tried_again(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context()
    try:
        page, key = await registered(context, gw, "dora")
        await django_logout(page, "dora")
        await key.set_verified(False)  # the fingerprint is not accepted: the browser says no
        await django_login(page, gw, "dora")
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page.locator(".webauthn-status")).to_contain_text("The passkey was not used")
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        await key.set_verified(True)
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page).to_have_url(re.compile(r"/clients/$"))
    finally:
        await context.close()


async def test_the_passkey_pages_fit_a_phone_in_every_language(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context(viewport={"width": WIDTH, "height": 844}, is_mobile=True)
    too_wide: list[str] = []

    async def measure(page: Page, where: str) -> None:
        for lang in LANGUAGES:
            await page.set_extra_http_headers({"Accept-Language": lang})
            await page.goto(f"{gw.url}/_gateway/{where}")
            found = await page.evaluate(MEASURE, WIDTH)
            assert found["lang"] == lang
            if found["scroll"] > WIDTH or found["wide"]:
                too_wide.append(f"{lang} {where}: {found['scroll']} px; {found['wide']}")
            if lang == "de" and where == "passkey":
                await shot(page, "passkey-add-phone-de")
        await page.set_extra_http_headers({"Accept-Language": "en"})

    try:
        page = await context.new_page()
        await VirtualKey.add(context, page)
        await django_login(page, gw, "dora")
        await measure(page, "passkey")  # enrolment, at the password stage
        await page.goto(f"{gw.url}/_gateway/passkey")
        await add_passkey(page, "Bereitschaftsdiensthandy-Ersatzschlüssel")
        for where in ("account", "challenge?factor=webauthn", "passkey"):
            await measure(page, where)
    finally:
        await context.close()
    assert not too_wide, "\n".join(too_wide)
