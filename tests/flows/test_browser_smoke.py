"""Real headless Chromium against a tiny loopback site: the browser fixtures work end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import escape

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from tests import browser as chromium
from tests.conftest import Served, serve

# The fixtures, by name (an import of them would read to ruff as shadowed by the parameters).
browser = chromium.browser
browser_page = chromium.browser_page

ACCEPT_LANGUAGE = web.AppKey("accept_language", list[str])

FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Form</title></head>
<body>
  <form method="post" action="/done">
    <label for="name">Your name</label>
    <input id="name" name="name" type="text">
    <button type="submit">Send</button>
  </form>
</body></html>
"""


async def _form(request: web.Request) -> web.Response:
    request.app[ACCEPT_LANGUAGE].append(request.headers.get("Accept-Language", ""))
    return web.Response(text=FORM, content_type="text/html")


async def _done(request: web.Request) -> web.Response:
    name = (await request.post()).get("name", "")
    assert isinstance(name, str)
    page = f'<!doctype html><title>Done</title><p id="result">Thanks, {escape(name)}!</p>'
    return web.Response(text=page, content_type="text/html")


@pytest.fixture
async def site() -> AsyncIterator[Served]:
    app = web.Application()
    app[ACCEPT_LANGUAGE] = []
    app.router.add_get("/", _form)
    app.router.add_post("/done", _done)
    served = await serve(app)
    yield served
    await served.runner.cleanup()


async def test_fill_by_label_and_submit_with_enter(site: Served, browser_page: Page) -> None:
    await browser_page.goto(f"{site.url}/")
    field = browser_page.get_by_label("Your name")
    await field.fill("Ada <Lovelace> & co")
    await field.press("Enter")
    await expect(browser_page.locator("#result")).to_have_text("Thanks, Ada <Lovelace> & co!")
    assert browser_page.url == f"{site.url}/done"


async def test_context_locale_sets_accept_language(site: Served, browser: Browser) -> None:
    async with await browser.new_context(locale="nl-NL") as context:
        page = await context.new_page()
        await page.goto(f"{site.url}/")
        assert await page.evaluate("navigator.language") == "nl-NL"
    assert site.app[ACCEPT_LANGUAGE][0].startswith("nl-NL"), site.app[ACCEPT_LANGUAGE]
