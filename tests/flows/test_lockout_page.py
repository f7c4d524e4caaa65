"""The lockout pages: an alert that says in the reader's own terms when to come back ("in 3
minutes", counted on the gateway's clock, never a clock time in UTC to convert), in their
language, with nothing on the page that leads straight back into the same lockout."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from gateway.crypto import hash_password
from tests import browser as chromium
from tests.conftest import Served
from tests.signin_kit import Browser as Client
from tests.signin_kit import (
    Browsers,
    SignInGateway,
    Start,
    enrolled,
    field,
    gateway_in_front,
    wrong_codes,
)

browser = chromium.browser  # the fixture, by name
gw = pytest.fixture(name="gw")(gateway_in_front)  # in front of the demo CRM (conftest's `crm`)


def main_of(html: str) -> str:
    found = re.search(r'<main id="main">(.*)</main>', html, re.S)
    assert found, html[:300]
    return found.group(1)


def alert_of(html: str) -> str:
    """The text of the page's one alert, as a screen reader announces it."""
    found = re.findall(r'<(\w+)[^>]*\brole="alert"[^>]*>(.*?)</\1>', main_of(html), re.S)
    assert len(found) == 1, found
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", found[0][1])).split())


def controls_in(html: str) -> list[str]:
    """Links, buttons and forms in the page's main part (the footer's language switch and
    sign-out are not ways back into a lockout)."""
    return re.findall(r"<(?:a|button|form|input)\b[^>]*>", main_of(html))


async def wrong_crm_passwords(b: Client, user: str, n: int) -> None:
    for _ in range(n):
        status, page, _ = await b.post("/login", await b.crm_login_form(user, "guess"))
        assert status == 200, status  # the CRM's own "wrong password" page
        assert "Wrong user name or password" in page


# What each language says when the CRM's login is paused for 60 seconds, then for 30.
CRM_LOGIN_LOCKED = {
    "en": ("Too many failed attempts. Try again in 1 minute.", "in 30 seconds"),
    "nl": ("Te veel mislukte pogingen. Probeer het over 1 minuut opnieuw.", "over 30 seconden"),
    "nb": ("For mange mislykkede forsøk. Prøv igjen om 1 minutt.", "om 30 sekunder"),
    "de": (
        "Zu viele fehlgeschlagene Versuche. Versuchen Sie es in 1 Minute erneut.",
        "in 30 Sekunden",
    ),
    "fr": ("Trop de tentatives infructueuses. Réessayez dans 1 minute.", "dans 30 secondes"),
    "ru": (
        "Слишком много неудачных попыток. Повторите попытку через 1 минуту.",
        "через 30 секунд",
    ),
}


@pytest.mark.parametrize("lang", list(CRM_LOGIN_LOCKED))
async def test_a_paused_crm_login_is_an_alert_saying_when_in_the_readers_terms(
    browsers: Browsers, gw: SignInGateway, lang: str
) -> None:
    b = browsers(gw, headers={"Accept": "text/html", "Accept-Language": lang})
    await wrong_crm_passwords(b, "alice", 5)
    status, html, r = await b.post("/login", await b.crm_login_form("alice", "alice-demo"))
    assert status == 429
    assert r.headers["Retry-After"] == "61"
    now, later = CRM_LOGIN_LOCKED[lang]
    assert alert_of(html) == now
    assert "UTC" not in html
    assert controls_in(html) == []
    gw.clock.advance(30)
    status, html, _ = await b.post("/login", await b.crm_login_form("alice", "alice-demo"))
    assert status == 429
    assert later in alert_of(html)
    gw.clock.advance(31)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/enrol"


async def test_longer_lockouts_are_counted_in_minutes_rounded_up(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw, headers={"Accept": "text/html", "Accept-Language": "ru"})
    await wrong_crm_passwords(b, "alice", 5)
    gw.clock.advance(61)
    await wrong_crm_passwords(b, "alice", 5)  # a second lockout: twice as long
    status, html, r = await b.post("/login", await b.crm_login_form("alice", "guess"))
    assert (status, r.headers["Retry-After"]) == (429, "121")
    assert "через 2 минуты." in alert_of(html)
    gw.clock.advance(0.5)  # 119.5 seconds left: still two minutes, never "1 minute" too early
    _, html, _ = await b.post("/login", await b.crm_login_form("alice", "guess"))
    assert "через 2 минуты." in alert_of(html)
    gw.clock.advance(60)
    _, html, _ = await b.post("/login", await b.crm_login_form("alice", "guess"))
    assert "через 1 минуту." in alert_of(html)


async def test_a_paused_challenge_is_an_alert_with_no_way_into_the_same_lockout(
    browser: Browser, browsers: Browsers, gw: SignInGateway
) -> None:
    """In Chromium: the alert is what assistive technology announces, and neither the code
    form nor the other ways to verify (paused by the same lockout) are offered."""
    setup = browsers(gw)
    secret, _ = await enrolled(setup)
    gw.clock.advance(60)
    async with await browser.new_context(locale="de-DE") as context:
        page = await context.new_page()
        await page.goto(f"{gw.url}/login")
        await page.get_by_label("User name").fill("alice")
        await page.get_by_label("Password").fill("alice-demo")
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        other_way = page.get_by_role("link", name="Wiederherstellungscode verwenden")
        await expect(other_way).to_be_visible()
        for code in wrong_codes(setup, secret, 5):
            await page.get_by_label("Bestätigungscode").fill(code)
            await page.get_by_role("button", name="Bestätigen").click()

        alert = page.get_by_role("alert")
        await expect(alert).to_contain_text("Versuchen Sie es in 1 Minute erneut.")
        main = page.get_by_role("main")
        await expect(main.get_by_role("link")).to_have_count(0)
        await expect(main.get_by_role("button")).to_have_count(0)
        await expect(main.get_by_role("textbox")).to_have_count(0)
        # The address of another way still shows the same lockout, not a form.
        await page.goto(f"{gw.url}/_gateway/challenge?factor=recovery")
        await expect(page.get_by_role("alert")).to_contain_text("in 1 Minute")
        await expect(page.get_by_role("main").get_by_role("textbox")).to_have_count(0)

        gw.clock.advance(45)
        await page.goto(f"{gw.url}/_gateway/challenge")
        await expect(page.get_by_role("alert")).to_contain_text("in 15 Sekunden erneut.")
        gw.clock.advance(16)
        await page.goto(f"{gw.url}/_gateway/challenge")
        await expect(page.get_by_role("alert")).to_have_count(0)
        await page.get_by_label("Bestätigungscode").fill(setup.code(secret))
        await page.get_by_role("button", name="Bestätigen").click()
        await expect(page).to_have_url(re.compile(r"/contacts$"))


async def test_a_paused_gateway_login_shows_the_alert_and_no_form(
    crm: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"dora: '{hash_password('dora-password')}'\n")
    login = f"login:\n  mode: gateway\n  users_file: {users}\n  identity_header: X-Remote-User\n"
    gw = await start(crm.url, login=login)
    b = browsers(gw, headers={"Accept": "text/html", "Accept-Language": "fr"})

    async def sign_in(password: str) -> tuple[int, str]:
        status, html, _ = await b.get("/_gateway/login?next=/contacts")
        assert status == 200
        form = {"csrf": field(html, "csrf"), "next": "/contacts", "username": "dora"}
        status, html, _ = await b.post("/_gateway/login", {**form, "password": password})
        return status, html

    for _ in range(4):
        status, html = await sign_in("wrong")
        assert status == 401
        assert 'name="password"' in html  # a typo: the form again
    status, html = await sign_in("wrong")
    assert status == 429
    assert alert_of(html) == "Trop de tentatives infructueuses. Réessayez dans 1 minute."
    assert controls_in(html) == []
    gw.clock.advance(61)
    status, _ = await sign_in("dora-password")
    assert status == 303
