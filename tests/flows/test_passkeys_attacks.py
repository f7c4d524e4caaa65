"""Attacks on passkeys, in real headless Chromium with virtual authenticators (issue 17): a
phishing proxy in between (the browser signs its origin, we refuse it), another user's
credential, a cloned authenticator counting behind the original, user verification required
and left out, a captured answer replayed into a later sign-in; and bad input posted to both
passkey forms (unreadable, oversized, too large a form): each a clear sentence on the page,
an audit event with its reason, never a 500."""

from __future__ import annotations

import re

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from playwright.async_api import Browser, Page, expect

from tests import browser as chromium
from tests import passkeys
from tests.conftest import Served, serve
from tests.flows import test_passkeys_browser as passkey_stories
from tests.flows.test_passkeys_browser import POLICY, django_login, django_logout, registered
from tests.flows.test_signin_django import DJANGO_LOGIN
from tests.passkeys import PasskeyGateway, StartPasskeys, VirtualKey, options, set_options

browser = chromium.browser  # the fixtures, by name
start_passkeys = passkeys.start_passkeys
gw = passkey_stories.gw  # the Django CRM behind a passkey gateway, as in the stories


async def failures(gw: PasskeyGateway, user: str) -> list[tuple[str, str]]:
    found = await gw.events("challenge.failed", user=user)
    return [(e.reason, str(dict(e.details).get("detail", ""))) for e in found]


async def sign_in_again(page: Page, gw: PasskeyGateway, user: str = "dora") -> None:
    await django_logout(page, user)
    gw.clock.advance(60)
    await django_login(page, gw, user)
    await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))


def phishing_proxy(target: str) -> web.Application:
    """A proxy in the middle (evilginx-like) at another address: everything is passed on, its
    Host and Origin made the gateway's, so the gateway cannot tell by the request itself."""
    host = target.split("://", 1)[1]

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = CIMultiDict(request.headers)
        for name in ("Host", "Content-Length", "Transfer-Encoding"):
            headers.popall(name, None)
        headers["Host"] = host
        if "Origin" in headers:
            headers["Origin"] = target
        body = await request.read()
        async with (
            aiohttp.ClientSession(auto_decompress=False) as http,
            http.request(
                request.method,
                target + request.rel_url.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as answer,
        ):
            out = CIMultiDict(answer.headers)
            for name in ("Content-Length", "Transfer-Encoding"):
                out.popall(name, None)
            return web.Response(status=answer.status, headers=out, body=await answer.read())

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


async def test_a_passkey_used_through_a_phishing_proxy_is_refused(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context()
    proxy = await serve(phishing_proxy(gw.url))
    lure = f"http://localhost:{proxy.port}"  # same host name, another origin (port)
    try:
        page, _ = await registered(context, gw, "dora")
        await django_logout(page, "dora")
        gw.clock.advance(60)
        await page.goto(f"{lure}/clients/")
        await page.get_by_label("Username:").fill("dora")
        await page.get_by_label("Password:").fill("dora-pass")
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(f"{lure}/_gateway/challenge")
        # The password went through (as it would through any such proxy); the passkey will not.
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page.get_by_role("alert")).to_contain_text("another address than this one")
        assert not [c for c in await context.cookies() if c["name"] == "sessionid"]
    finally:
        await context.close()
        await proxy.runner.cleanup()
    assert await failures(gw, "dora") == [("wrong_origin", f"origin '{lure}'")]


async def test_another_users_passkey_is_refused(browser: Browser, gw: PasskeyGateway) -> None:
    theirs = await browser.new_context()
    mine = await browser.new_context()
    try:
        _, emils_key = await registered(theirs, gw, "emil")
        page, key = await registered(mine, gw, "dora")
        await sign_in_again(page, gw)
        # dora's browser now holds emil's passkey only, and the page asks for any passkey.
        await key.clear()
        for credential in await emils_key.credentials():
            await key.add_credential(credential)
        asked = await options(page)
        await set_options(page, {**asked, "allowCredentials": []})
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page.get_by_role("alert")).to_contain_text("not registered for your account")
    finally:
        await theirs.close()
        await mine.close()
    assert await failures(gw, "dora") == [("unknown_credential", "the key names another user")]


async def test_a_cloned_authenticator_counting_behind_the_original_is_refused(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context()
    try:
        page, key = await registered(context, gw, "dora")
        copied = await key.credentials()  # its private key and counter, as a clone would have
        for _ in range(2):  # the original is used: its counter moves on
            await sign_in_again(page, gw)
            await page.get_by_role("button", name="Use my passkey").click()
            await expect(page).to_have_url(re.compile(r"/clients/$"))
        await sign_in_again(page, gw)
        await key.remove()
        clone = await VirtualKey.add(context, page)
        await clone.add_credential(copied[0])
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page.get_by_role("alert")).to_contain_text("its use count went backwards")
    finally:
        await context.close()
    reasons = await failures(gw, "dora")
    assert reasons == [("cloned", "counter 2, last seen 3")]


async def test_user_verification_required_and_left_out_is_refused(
    browser: Browser, django: Served, start_passkeys: StartPasskeys
) -> None:
    gw = await start_passkeys(
        django.url,
        policy=POLICY,
        login=DJANGO_LOGIN,
        extra="webauthn: {user_verification: required}\n",
    )
    context = await browser.new_context()
    try:
        page, key = await registered(context, gw, "dora")
        await sign_in_again(page, gw)
        assert (await options(page))["userVerification"] == "required"
        # A key that cannot verify the person: the browser itself says no, and the page says so.
        await key.set_verified(False)
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page.locator(".webauthn-status")).to_contain_text(
            "could not confirm it is you"
        )
        # A tampered page asking the key not to verify: its answer is refused by us.
        asked = await options(page)
        await set_options(page, {**asked, "userVerification": "discouraged"})
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page.get_by_role("alert")).to_contain_text("fingerprint, face or PIN")
    finally:
        await context.close()
    assert await failures(gw, "dora") == [("no_user_verification", "")]


async def test_a_captured_answer_replayed_into_a_later_sign_in_is_refused(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context()
    captured: list[str] = []
    try:
        page, _ = await registered(context, gw, "dora")
        await sign_in_again(page, gw)

        async def keep(route: object) -> None:
            captured.append(route.request.post_data or "")  # type: ignore[attr-defined]
            await route.continue_()  # type: ignore[attr-defined]

        await page.route("**/_gateway/challenge", keep)
        await page.get_by_role("button", name="Use my passkey").click()
        await expect(page).to_have_url(re.compile(r"/clients/$"))
        await page.unroute("**/_gateway/challenge")
        await sign_in_again(page, gw)
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        form = dict(pair.split("=", 1) for pair in captured[0].split("&"))
        replayed = await page.request.post(
            f"{gw.url}/_gateway/challenge",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            data=captured[0].replace(form["csrf"], csrf or ""),
            max_redirects=0,
        )
        assert replayed.status == 400
        assert "made for another sign-in" in await replayed.text()
    finally:
        await context.close()
    assert [r for r, _ in await failures(gw, "dora")] == ["wrong_challenge"]


async def test_bad_input_to_both_passkey_forms_is_said_and_audited_never_a_500(
    browser: Browser, gw: PasskeyGateway
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await VirtualKey.add(context, page)
        await django_login(page, gw, "dora")
        await expect(page).to_have_url(re.compile(r"/_gateway/passkey$"))
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value") or ""
        posted = []
        for credential in ("{not json", '{"id": "x", "rawId": "x", "response": {}}', "A" * 11_000):
            answer = await page.request.post(
                f"{gw.url}/_gateway/passkey",
                form={"csrf": csrf, "name": "x", "credential": credential},
                max_redirects=0,
            )
            posted.append((answer.status, await answer.text()))
        assert [status for status, _ in posted] == [400, 400, 400]
        assert "could not be read" in posted[0][1]
        assert "too large to be a passkey" in posted[2][1]
        # A form over the size any of ours has: refused before it is read, and recorded.
        huge = await page.request.post(
            f"{gw.url}/_gateway/passkey",
            form={"csrf": csrf, "credential": "A" * 20_000},
            max_redirects=0,
        )
        assert huge.status == 400

        await page.goto(f"{gw.url}/_gateway/passkey")
        await page.get_by_role("button", name="Create a passkey").click()
        await page.get_by_label("I have saved these codes somewhere safe").check()
        await page.get_by_role("button", name="Continue").click()
        await sign_in_again(page, gw)
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value") or ""
        for code in ("[]", "A" * 11_000):
            answer = await page.request.post(
                f"{gw.url}/_gateway/challenge",
                form={"csrf": csrf, "factor": "webauthn", "code": code},
                max_redirects=0,
            )
            assert answer.status == 400
    finally:
        await context.close()
    refused = await gw.events("webauthn.register_failed", user="dora")
    assert [e.reason for e in refused] == ["malformed", "malformed", "oversized"]
    assert [e.reason for e in await gw.events("form.too_large")] == ["form_too_large"]
    assert [r for r, _ in await failures(gw, "dora")] == ["malformed", "oversized"]
