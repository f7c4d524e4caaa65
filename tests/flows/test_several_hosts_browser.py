"""Two gateway hosts behind nginx (deploy/nginx/two-gateways.conf, round-robin, TLS), on one
PostgreSQL and one Redis of the test's own: a person in real headless Chromium enrols on one
gateway and answers the challenge on the other; the code used there is refused on the first;
the device remembered on one is remembered by both; `crm-gateway sessions revoke` run with the
second host's config ends the session on both within the 2 s the docs state; a lockout made
on one holds on the other. Which gateway served each request is read from its own access log
(nginx's request id, kept by the gateway and returned in X-Request-Id), never assumed."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pyotp
from playwright.async_api import Browser, BrowserContext, Page, Response, expect

from gateway.web.revocations import LOOK_EVERY
from tests import browser as chromium
from tests import postgres_cluster as pg
from tests import several_hosts
from tests.process import run_command_async
from tests.several_hosts import Deployment, Host

browser = chromium.browser  # the fixtures, by name
postgres_cluster = pg.postgres_cluster
deployment = several_hosts.deployment

SECONDS_TO_REVOKE = LOOK_EVERY + 1.0  # the docs' 2 s, and 1 s for a loaded machine


class Codes:
    """The authenticator on the person's phone: a code of a time step not used yet (the
    gateway takes the steps beside now, and each step once)."""

    def __init__(self, key: str) -> None:
        self.totp = pyotp.TOTP(key)
        self.used: set[int] = set()

    def fresh(self) -> str:
        for offset in (0, 30, -30):
            step = int((time.time() + offset) // 30)
            if step not in self.used:
                self.used.add(step)
                return self.totp.at(step * 30)
        raise AssertionError("every step near now is used")

    def wrong(self) -> str:
        near = {self.totp.at(time.time() + offset) for offset in (-60, -30, 0, 30, 60)}
        return next(c for c in (f"{i:06d}" for i in range(10)) if c not in near)


async def new_page(browser: Browser) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(ignore_https_errors=True)  # the test's certificate
    return context, await context.new_page()


async def submitted(
    page: Page, d: Deployment, method: str, path: str, act: Callable[[], Awaitable[None]]
) -> tuple[Response, Host]:
    """Does `act` (a click), and returns the answer to the request it sent and who served it."""
    async with page.expect_response(
        lambda r: r.request.method == method and r.url.split("?")[0].endswith(path)
    ) as answer:
        await act()
    response = await answer.value
    return response, await d.served_by(await response.header_value("x-request-id") or "")


async def crm_login(page: Page, d: Deployment, user: str = "alice") -> tuple[Response, Host]:
    await page.goto(f"{d.url}/login")
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password").fill(f"{user}-demo")
    await page.wait_for_load_state("networkidle")
    return await submitted(
        page, d, "POST", "/login", page.get_by_role("button", name="Log in").click
    )


async def quiet(page: Page) -> None:
    """Nothing of the page's own still loading: round-robin's turns are the test's."""
    await page.wait_for_load_state("networkidle")


async def verify(page: Page, d: Deployment, code: str, *, remember: bool = False) -> Host:
    await page.locator('input[name="code"]').fill(code)
    if remember:
        await page.get_by_label("Remember this device for 30 days").check()
    _, host = await submitted(
        page, d, "POST", "/_gateway/challenge", page.get_by_role("button", name="Verify").click
    )
    return host


async def signed_in_on(host: Host, d: Deployment, context: BrowserContext) -> int:
    """A request for the CRM sent straight to one gateway as nginx sends it (the browser's
    cookies, HTTPS said by the trusted proxy): its status."""
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in await context.cookies())
    headers = {
        "Cookie": cookies,
        "Host": d.url.removeprefix("https://"),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "127.0.0.1",
        "Accept": "text/html",
    }
    async with d.http.get(f"{host.url}/contacts", headers=headers, allow_redirects=False) as r:
        return r.status


async def test_a_person_signs_in_across_two_gateways_behind_nginx(
    browser: Browser, deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    served: list[tuple[str, str]] = []  # (step, gateway) for the failure message
    ctx1, page = await new_page(browser)
    ctx2, other = await new_page(browser)
    try:
        # 1. alice's first sign-in: the CRM's form, then enrolment, which one gateway takes.
        await crm_login(page, d)
        await expect(page).to_have_url(re.compile(r"/_gateway/enrol$"))
        await page.get_by_text("Cannot scan the code?").click()
        codes = Codes((await page.locator("#secret-key").inner_text()).replace(" ", ""))
        await page.get_by_label("A name for this authenticator").fill("Phone")
        await page.get_by_label("Enter the 6-digit code the app now shows").fill(codes.fresh())
        _, enrolled_on = await submitted(
            page, d, "POST", "/_gateway/enrol", page.get_by_role("button", name="Turn on").click
        )
        served.append(("enrol", enrolled_on.name))
        await expect(page).to_have_url(re.compile(r"/_gateway/recovery-codes$"))
        await page.get_by_label("I have saved these codes somewhere safe").check()
        await page.get_by_role("button", name="Continue").click()
        await expect(page).to_have_url(re.compile(r"/contacts$"))
        await page.get_by_role("button", name=re.compile("Log out")).click()
        await expect(page).to_have_url(re.compile(r"/login$"))

        # 2. The next sign-in answers the challenge on the other gateway (and remembers the
        #    device there).
        challenged = d.other(enrolled_on)
        await crm_login(page, d)
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        await quiet(page)
        await d.next_goes_to(challenged)
        code = codes.fresh()
        answered_on = await verify(page, d, code, remember=True)
        served.append(("challenge", answered_on.name))
        assert answered_on is challenged, served
        await expect(page).to_have_url(re.compile(r"/contacts$"))

        # 3. The code just used there is refused here, in another browser.
        await crm_login(other, d)
        await expect(other).to_have_url(re.compile(r"/_gateway/challenge$"))
        await quiet(other)
        await d.next_goes_to(enrolled_on)
        replayed_on = await verify(other, d, code)
        served.append(("replayed code", replayed_on.name))
        assert replayed_on is enrolled_on, served
        await expect(other.get_by_text("That code was already used")).to_be_visible()
        await expect(other).to_have_url(re.compile(r"/_gateway/challenge$"))

        # 4. The device remembered by one gateway is remembered by both: straight in after
        #    the password, whichever gateway takes the login.
        for host in (enrolled_on, challenged):
            await page.get_by_role("button", name=re.compile("Log out")).click()
            await expect(page).to_have_url(re.compile(r"/login$"))
            await page.get_by_label("User name").fill("alice")
            await page.get_by_label("Password").fill("alice-demo")
            await quiet(page)
            await d.next_goes_to(host)
            answer, login_on = await submitted(
                page, d, "POST", "/login", page.get_by_role("button", name="Log in").click
            )
            served.append(("remembered device", login_on.name))
            assert login_on is host, served
            assert answer.status == 303
            await expect(page).to_have_url(re.compile(r"/contacts$"))

        # 5. `sessions revoke` with the second host's gateway.yaml ends the session on both
        #    gateways within the 2 s the docs state.
        assert [await signed_in_on(h, d, ctx1) for h in d.hosts] == [200, 200]
        status, out, err = await run_command_async(
            "sessions", "revoke", "alice", "-c", str(d.host("b").config)
        )
        assert status == 0, err
        assert "sessions of alice revoked" in out
        revoked = time.monotonic()
        ended: dict[str, float] = {}
        while len(ended) < 2 and time.monotonic() - revoked < 10:
            for h in d.hosts:
                if h.name not in ended and await signed_in_on(h, d, ctx1) == 302:
                    ended[h.name] = time.monotonic() - revoked
        print(f"sessions revoke: session ended on each gateway after {ended} s")
        assert sorted(ended) == ["a", "b"], ended
        assert max(ended.values()) <= SECONDS_TO_REVOKE, ended
        await page.goto(f"{d.url}/contacts")
        await expect(page).to_have_url(re.compile(r"/login(\?|$)"))

        # 6. A lockout made on one gateway holds on the other: wrong codes until the lockout,
        #    then the challenge page on the other gateway has no form.
        await crm_login(other, d)
        await expect(other).to_have_url(re.compile(r"/_gateway/challenge$"))
        statuses: list[int] = []
        locked_on = None
        for _ in range(10):
            await other.locator('input[name="code"]').fill(codes.wrong())
            answer, on = await submitted(
                other,
                d,
                "POST",
                "/_gateway/challenge",
                other.get_by_role("button", name="Verify").click,
            )
            statuses.append(answer.status)
            served.append((f"wrong code {answer.status}", on.name))
            if answer.status == 429:
                locked_on = on
                break
        assert locked_on is not None, statuses
        await quiet(other)
        await d.next_goes_to(d.other(locked_on))
        async with other.expect_response(lambda r: r.url.endswith("/_gateway/challenge")) as seen:
            await other.goto(f"{d.url}/_gateway/challenge")
        shown = await seen.value
        shown_on = await d.served_by(await shown.header_value("x-request-id") or "")
        served.append(("locked challenge", shown_on.name))
        assert shown_on is d.other(locked_on), served
        assert shown.status == 429
        await expect(other.get_by_text("Too many wrong codes")).to_be_visible()
        assert await other.locator('input[name="code"]').count() == 0
        print("served:", served)
    finally:
        await ctx1.close()
        await ctx2.close()


async def test_the_nginx_example_is_what_the_docs_show() -> None:
    """docs/several-hosts.md shows deploy/nginx/two-gateways.conf as it is."""
    docs = (Path(__file__).parents[2] / "docs" / "several-hosts.md").read_text()
    example = several_hosts.NGINX_EXAMPLE.read_text()
    assert example.strip() in docs


async def test_requests_land_on_both_gateways(deployment: Deployment) -> None:
    """Round-robin: of ten requests through nginx, each gateway serves five."""
    seen = [await deployment.probe() for _ in range(10)]
    assert sorted(h.name for h in seen) == ["a"] * 5 + ["b"] * 5
