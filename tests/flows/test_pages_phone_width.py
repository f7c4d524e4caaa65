"""Every page the gateway serves, at a phone's width (390 px) in all six languages, in real
Chromium: none is wider than the screen.

Wider means sideways scrolling (the document's scroll width) or any element reaching past the
right edge (a button hanging out of its card, a long word), even where overflow is hidden.
The gateway, its templates and stylesheet, the demo CRM and Chromium are real; each page's
state (enrolment, codes waiting, a code sent, a lockout, an account with several
authenticators and devices) is reached through the gateway's own forms first.

`CRM_GATEWAY_SHOTS=/some/dir` saves a full-page screenshot of every page there, to look at.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pyotp
from playwright.async_api import Browser, BrowserContext, Page

from gateway.crypto import hash_password
from gateway.i18n import LANGUAGES
from tests import browser as chromium
from tests.conftest import Served
from tests.signin_kit import Browser as Client
from tests.signin_kit import Browsers, SignInGateway, Start, field, wrong_codes

browser = chromium.browser  # the fixture, by name

WIDTH = 390  # a common phone (iPhone 12 to 15) in CSS pixels
PASSWORD = "correct-horse-battery"
SHOTS = os.environ.get("CRM_GATEWAY_SHOTS", "")

POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  remember_device: 30d
roles:
  admin: {}
users:
  anna: {interval: 7d}  # the account page offers her the intervals up to a week
  erik: {enforcement: {required_from: 2031-03-01}}
  chris:
    factors: [totp, sms, email, recovery]
    phone: "+31 6 1234 5678"
    email: christiane.vandenberg-oosterhuis@verzekeringen.example.nl
paths:
  - {path: /public/**, allow: [anyone]}
  - {path: /admin/**, allow: [role:admin]}
  - {path: "/**", allow: [authenticated]}
"""

# Names people give their authenticators: long, and one word with no place to break.
AUTHENTICATORS = ("Phone", "Samsung Galaxy S23 Ultra (work)", "Bereitschaftsdiensthandy-Ersatz")
# Devices as the account page names them from their User-Agent.
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36",
)

# Opens every <details> (the enrolment key) and lists what reaches past the right edge: boxes,
# and text that runs out of its box (a long e-mail address in a paragraph that fits). Only the
# innermost are named, so a too-wide button is named rather than its whole table.
MEASURE = """(width) => {
  for (const d of document.querySelectorAll('details')) d.open = true;
  const past = (box) => box.width > 0 && box.right > width + 0.5;
  const wide = new Set(
    [...document.querySelectorAll('body, body *')].filter((el) => past(el.getBoundingClientRect()))
  );
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const range = document.createRange();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    range.selectNodeContents(node);
    if ([...range.getClientRects()].some(past)) wide.add(node.parentElement);
  }
  const innermost = [...wide].filter((el) => ![...wide].some((o) => o !== el && el.contains(o)));
  const right = (el) => {
    range.selectNodeContents(el);
    return Math.round(Math.max(el.getBoundingClientRect().right, range.getBoundingClientRect().right));
  };
  return {
    lang: document.documentElement.lang,
    scroll: document.documentElement.scrollWidth,
    wide: innermost.slice(0, 4).map((el) => {
      const cls = el.getAttribute('class');
      const text = (el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 32);
      return `<${el.tagName.toLowerCase()}${cls ? '.' + cls : ''}> "${text}" to ${right(el)} px`;
    }),
  };
}"""


def closed_port() -> int:
    """A loopback port nothing listens on: the CRM is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sign_in(b: Client, user: str, password: str = PASSWORD) -> str:
    """Gateway mode's own login form; returns where the gateway sends the browser next."""
    status, html, _ = await b.get("/_gateway/login?next=/")
    assert status == 200, status
    form = {"csrf": field(html, "csrf"), "next": "/", "username": user, "password": password}
    status, _, r = await b.post("/_gateway/login", form)
    assert status == 303, (status, user)
    return r.headers["Location"]


async def with_app(gw: SignInGateway, user: str, names: tuple[str, ...] = ("Phone",)) -> str:
    """`user` has authenticator apps (the first one's secret returned) and recovery codes."""
    secret = ""
    for name in names:
        key = pyotp.random_base32(32)
        await gw.signin.totp.add(user, key, name)
        secret = secret or key
    await gw.signin.recovery.new_codes(user)
    return secret


@dataclass
class Pages:
    """The gateways, and one browser context per person at a step of signing in."""

    gw: SignInGateway  # gateway mode, its CRM down
    crm_gw: SignInGateway  # the CRM's own login, the demo CRM behind it
    contexts: dict[str, BrowserContext]


Show = Callable[[Page, Pages], Awaitable[int]]  # opens a page; the status it came with


def at(path: str) -> Show:
    async def show(page: Page, pages: Pages) -> int:
        response = await page.goto(pages.gw.url + path)
        assert response is not None
        return response.status

    return show


async def submit(page: Page, form: str) -> int:
    async with page.expect_navigation() as sent:
        await page.locator(f"{form} button").click()
    response = await sent.value
    assert response is not None
    return response.status


async def gateway_login_locked(page: Page, pages: Pages) -> int:
    await page.goto(f"{pages.gw.url}/_gateway/login?next=/")
    await page.locator("#username").fill("mallory")
    await page.locator("#password").fill("still-guessing")
    return await submit(page, "main form")


async def crm_login_locked(page: Page, pages: Pages) -> int:
    await page.goto(f"{pages.crm_gw.url}/login")
    await page.locator("input[name=username]").fill("mallory")
    await page.locator("input[name=password]").fill("still-guessing")
    return await submit(page, "form")


# (name, the context it opens in, how it is reached, the status the gateway answers with)
PAGES: list[tuple[str, str, Show, int]] = [
    ("login", "anonymous", at("/_gateway/login?next=/"), 200),
    ("login, locked", "anonymous", gateway_login_locked, 429),
    ("expired", "anonymous", at("/_gateway/challenge"), 400),
    ("not found (branded)", "anonymous", at("/_gateway/no-such-page"), 404),
    ("CRM down (branded 502)", "anonymous", at("/public/report"), 502),
    ("CRM login, locked", "crm", crm_login_locked, 429),
    ("enrolment", "erik", at("/_gateway/enrol"), 200),
    ("recovery codes", "rita", at("/_gateway/recovery-codes"), 200),
    ("recovery codes, to print", "rita", at("/_gateway/recovery-codes?print=1"), 200),
    ("challenge, app", "chris", at("/_gateway/challenge?factor=totp"), 200),
    ("challenge, recovery code", "chris", at("/_gateway/challenge?factor=recovery"), 200),
    ("challenge, SMS sent", "chris", at("/_gateway/challenge?factor=sms"), 200),
    (
        "challenge, SMS wait",
        "chris",
        at("/_gateway/challenge?factor=sms&sent=cooldown&wait=45"),
        200,
    ),
    ("challenge, e-mail", "chris", at("/_gateway/challenge?factor=email"), 200),
    ("challenge, locked", "lars", at("/_gateway/challenge"), 429),
    ("account", "anna", at("/_gateway/account"), 200),
    ("account, last app", "anna", at("/_gateway/account?last=1"), 200),
    ("account, interval refused", "anna", at("/_gateway/account?interval_refused=1"), 200),
    ("enrolment, another app", "anna", at("/_gateway/enrol"), 200),
    ("challenge, step-up", "anna", at("/_gateway/challenge"), 200),
    ("path refused (branded 403)", "anna", at("/admin/users"), 403),
]


async def prepare(
    browser: Browser, crm: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> Pages:
    """Two gateways, and each person brought to their page through the gateway's forms."""
    users = tmp_path / "users.yaml"
    hashed = hash_password(PASSWORD)
    users.write_text(
        "".join(f"{u}: '{hashed}'\n" for u in ("erik", "rita", "chris", "lars", "anna"))
    )
    outbox = tmp_path / "outbox.jsonl"
    gw = await start(
        f"http://127.0.0.1:{closed_port()}",
        login=f"login:\n  mode: gateway\n  users_file: {users}\n  identity_header: X-Remote-User\n",
        policy=POLICY,
        extra=(
            f"sms:\n  provider: {{type: outbox, path: {outbox}}}\n"
            f"email:\n  provider: {{type: outbox, path: {outbox}}}\n"
        ),
    )
    crm_gw = await start(crm.url)
    clients: dict[str, Client] = {}

    # erik may still put it off: the enrolment page with its deadline and "Not now".
    clients["erik"] = browsers(gw)
    assert await sign_in(clients["erik"], "erik") == "/_gateway/enrol"
    # rita has just turned on her app: her recovery codes wait to be saved.
    clients["rita"] = browsers(gw)
    assert await sign_in(clients["rita"], "rita") == "/_gateway/enrol"
    await clients["rita"].enrol()
    # chris may answer with an app, a recovery code, an SMS or an e-mail; an SMS is on its way.
    await with_app(gw, "chris")
    clients["chris"] = browsers(gw)
    assert await sign_in(clients["chris"], "chris") == "/_gateway/challenge"
    _, html, _ = await clients["chris"].get("/_gateway/challenge?factor=sms")
    status, _, _ = await clients["chris"].post(
        "/_gateway/challenge/send", {"csrf": field(html, "csrf"), "factor": "sms"}
    )
    assert status == 303
    # anna has three apps and signed in from three devices, remembering each.
    secret = await with_app(gw, "anna", AUTHENTICATORS)
    for agent in AGENTS:
        gw.clock.advance(30)  # a code is good once: each sign-in answers a new one
        clients["anna"] = browsers(gw, headers={"Accept": "text/html", "User-Agent": agent})
        assert await sign_in(clients["anna"], "anna") == "/_gateway/challenge"
        status, _, _ = await clients["anna"].answer(clients["anna"].code(secret), remember=True)
        assert status == 303
    # The clock stands still from here on, so the lockouts last.
    # lars typed wrong codes until the gateway paused him.
    secret = await with_app(gw, "lars")
    clients["lars"] = browsers(gw)
    assert await sign_in(clients["lars"], "lars") == "/_gateway/challenge"
    for code in wrong_codes(clients["lars"], secret, 5):
        status, _, _ = await clients["lars"].answer(code)
    assert status == 429
    # mallory guessed passwords at both login forms until each paused him.
    guesser = browsers(gw)
    for _ in range(5):
        _, html, _ = await guesser.get("/_gateway/login")
        await guesser.post(
            "/_gateway/login",
            {"csrf": field(html, "csrf"), "next": "/", "username": "mallory", "password": "x"},
        )
    guesser = browsers(crm_gw)
    for _ in range(5):
        await guesser.post("/login", await guesser.crm_login_form("mallory", "x"))

    contexts: dict[str, BrowserContext] = {}
    for name in ("anonymous", "crm", *clients):
        context = await browser.new_context(
            viewport={"width": WIDTH, "height": 844}, is_mobile=True, has_touch=True
        )
        if name in clients:  # the person's cookies, as their own browser holds them
            await context.add_cookies(
                [{"name": c.key, "value": c.value, "url": gw.url} for c in clients[name].jar]
            )
        contexts[name] = context
    return Pages(gw, crm_gw, contexts)


async def test_no_page_is_wider_than_a_phone_in_any_language(
    browser: Browser, crm: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    pages = await prepare(browser, crm, start, browsers, tmp_path)
    tabs = {name: await context.new_page() for name, context in pages.contexts.items()}
    too_wide: list[str] = []
    try:
        for lang in LANGUAGES:
            for tab in tabs.values():
                await tab.set_extra_http_headers({"Accept-Language": lang})
            for name, where, show, status in PAGES:
                tab = tabs[where]
                assert await show(tab, pages) == status, (lang, name)
                found = await tab.evaluate(MEASURE, WIDTH)
                assert found["lang"] == lang, (name, found["lang"])
                if found["scroll"] > WIDTH or found["wide"]:
                    wide = "; ".join(found["wide"])
                    too_wide.append(f"{lang} {name}: {found['scroll']} px wide; {wide}")
                if SHOTS:
                    shot = Path(SHOTS) / f"{lang}-{name.replace(' ', '_')}.png"
                    await tab.screenshot(path=shot, full_page=True)
    finally:
        for context in pages.contexts.values():
            await context.close()
    assert not too_wide, "wider than a phone:\n" + "\n".join(too_wide)
