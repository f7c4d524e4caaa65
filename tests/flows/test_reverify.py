"""Verification intervals on the session itself (issue #16): a session whose `reverify` time
has passed is asked for a factor again on its next request, with the CRM session intact and
the user back where they were; a script of the CRM's page gets JSON, never a page; a form or
an upload that arrives then is kept and saved once after the code, never twice, never lost; a
path rule with `fresh` asks again inside a fresh session. The Django-shaped CRM, its CSRF
token still valid; a real gateway, real TOTP codes, a fake clock."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest

from gateway.web.kept import KEEP_FOR
from tests.conftest import Served
from tests.django_crm import (
    CLIENTS,
    CLIENTS_ADD_PATH,
    CLIENTS_PATH,
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSIONS,
)
from tests.flows.test_signin_django import DJANGO_LOGIN, signed_in
from tests.signin_kit import LONG_SESSIONS, Browser, Browsers, SignInGateway, Start, field

HOUR = 3600.0
POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  reverify: 8h
paths:
  - {path: /exports/**, allow: [authenticated], fresh: 15m, factors: [totp]}
  - {path: "/**", allow: [anyone]}
"""


@pytest.fixture
async def gw(django: Served, start: Start) -> SignInGateway:
    return await start(django.url, login=DJANGO_LOGIN, policy=POLICY, extra=LONG_SESSIONS)


async def keep_a_form(
    b: Browser, gw: SignInGateway, django: Served
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """A client form opened in the CRM and posted after the session's `reverify` time: kept,
    the browser sent to the challenge. (The form, the CRM's clients before it.)"""
    form = await add_client_form(b)
    before = django.app[CLIENTS].copy()
    gw.clock.advance(8 * HOUR)
    status, _, r = await b.post(CLIENTS_ADD_PATH, form)
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    return form, before


async def add_client_form(b: Browser, name: str = "Müller GmbH") -> dict[str, str]:
    status, html, _ = await b.get(CLIENTS_ADD_PATH)
    assert status == 200, html[:300]
    return {CSRF_FIELD: field(html, CSRF_FIELD), "name": name, "email": "m@example.org"}


async def test_a_session_past_its_reverify_time_is_asked_again_and_comes_back(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret = await signed_in(b)
    gw.clock.advance(7 * HOUR)
    assert (await b.get(CLIENTS_PATH))[0] == 200  # within 8 h: straight through
    gw.clock.advance(HOUR)
    status, _, r = await b.get(CLIENTS_PATH)
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    crm_session = b.cookie(SESSION_COOKIE)
    assert crm_session in django.app[SESSIONS]  # the CRM session is left as it is

    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 200
    assert "confirm it is you again" in html
    status, _, r = await b.answer(b.code(secret, 31))
    assert (status, r.headers["Location"]) == (303, CLIENTS_PATH)
    status, html, _ = await b.get(CLIENTS_PATH)
    assert status == 200 and "Clients" in html
    assert b.cookie(SESSION_COOKIE) == crm_session  # the same CRM session all along


async def test_a_script_of_the_page_gets_json_naming_where_to_verify(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    secret = await signed_in(b)
    gw.clock.advance(8 * HOUR)
    for script in (
        {"Sec-Fetch-Mode": "cors", "Accept": "*/*"},
        {"X-Requested-With": "XMLHttpRequest", "Accept": "application/json"},
    ):
        async with b.http.get(
            f"{gw.url}{CLIENTS_PATH}", headers=script, allow_redirects=False
        ) as r:
            assert r.status == 401
            assert r.headers["Content-Type"].startswith("application/json")
            body = json.loads(await r.text())
        assert body == {
            "error": "verification_required",
            "reason": "reverify",
            "verify_url": "/_gateway/challenge",
            "factors": [],
        }
    # The page opens the URL with where to come back to; the code brings the user there.
    assert (await b.get("/_gateway/challenge?next=/dashboard/"))[0] == 200
    status, _, r = await b.answer(b.code(secret, 31))
    assert (status, r.headers["Location"]) == (303, "/dashboard/")


async def test_a_form_sent_when_a_verification_is_due_is_saved_once_after_the_code(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret = await signed_in(b)
    # The page is open; the user fills it in slowly and sends it when the time is up.
    _, before = await keep_a_form(b, gw, django)
    assert django.app[CLIENTS] == before  # not sent yet

    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 200
    status, _, r = await b.post(
        "/_gateway/challenge",
        {"csrf": field(html, "csrf"), "factor": "totp", "code": b.code(secret, 31)},
    )
    # Django's own answer to the form (saved: off to the list), with the CSRF token valid.
    assert (status, r.headers["Location"]) == (302, CLIENTS_PATH)
    assert django.app[CLIENTS] == [*before, {"name": "Müller GmbH", "email": "m@example.org"}]
    # Sent once: another code on the challenge does not send it again.
    gw.clock.advance(60)
    status, html, _ = await b.get("/_gateway/challenge")
    await b.post(
        "/_gateway/challenge",
        {"csrf": field(html, "csrf"), "factor": "totp", "code": b.code(secret, 31)},
    )
    assert len(django.app[CLIENTS]) == len(before) + 1


async def test_an_upload_is_kept_and_one_over_the_size_is_asked_again_unread(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret = await signed_in(b)
    form = await add_client_form(b)
    before = len(django.app[CLIENTS])
    gw.clock.advance(8 * HOUR)
    upload = aiohttp.FormData()
    for name, value in form.items():
        upload.add_field(name, value)
    upload.add_field("attachment", io.BytesIO(b"%PDF-1.7 " + b"x" * 200_000), filename="offer.pdf")
    async with b.http.post(f"{gw.url}{CLIENTS_ADD_PATH}", data=upload, allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (303, "/_gateway/challenge")
    status, _, r = await b.answer(b.code(secret, 31))
    assert (status, r.headers["Location"]) == (302, CLIENTS_PATH)
    assert [c["name"] for c in django.app[CLIENTS][before:]] == ["Müller GmbH"]

    gw.clock.advance(8 * HOUR)
    big = aiohttp.FormData()
    for name, value in form.items():
        big.add_field(name, value)
    big.add_field("attachment", io.BytesIO(b"x" * (1024 * 1024 + 1)), filename="scan.tif")
    async with b.http.post(f"{gw.url}{CLIENTS_ADD_PATH}", data=big, allow_redirects=False) as r:
        assert r.status == 413
        page = await r.text()
    assert "too large to keep" in page and 'href="/_gateway/challenge"' in page
    assert len(django.app[CLIENTS]) == before + 1  # never sent, never kept


async def test_a_kept_form_that_waited_too_long_is_never_sent(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret = await signed_in(b)
    _, before = await keep_a_form(b, gw, django)
    gw.clock.advance(KEEP_FOR + 1)
    status, html, _ = await b.answer(b.code(secret, 31))
    assert status == 410
    assert "was not sent" in html
    assert django.app[CLIENTS] == before


async def test_a_kept_form_that_was_tampered_with_is_never_sent(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret = await signed_in(b)
    _, before = await keep_a_form(b, gw, django)
    shared = gw.signin.shared
    [key] = [k for k in shared._data if k.startswith("kept:")]  # type: ignore[attr-defined]
    sealed = await shared.get(key)
    assert sealed is not None
    await shared.put(key, sealed[:-1] + bytes([sealed[-1] ^ 1]), 60)
    status, html, _ = await b.answer(b.code(secret, 31))
    assert status == 410 and "was not sent" in html
    assert django.app[CLIENTS] == before


async def test_a_fresh_path_asks_for_its_factor_inside_a_fresh_session(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    (secret,) = [await signed_in(b)]
    assert (await b.get("/exports/q3.csv"))[0] == 404  # Django has no such page: it went
    gw.clock.advance(16 * 60)  # inside the 8 h, past the path's 15 minutes
    status, _, r = await b.get("/exports/q3.csv")
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 200
    assert "?factor=recovery" not in html  # only an authenticator counts there
    status, _, r = await b.answer(b.code(secret, 31))
    assert (status, r.headers["Location"]) == (303, "/exports/q3.csv")
    assert (await b.get("/exports/q3.csv"))[0] == 404
    assert (await b.get(CLIENTS_PATH))[0] == 200  # elsewhere, nothing was asked
