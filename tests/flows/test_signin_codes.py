"""Codes by SMS and e-mail behind the demo CRM's login: sent through the outbox (read back as
a person reads their phone), a real HTTP SMS provider on loopback that fails, the limits
under a flood, the ledger and `sms-usage`."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.admin.ledger import bill
from gateway.metrics import MESSAGE_COST, MESSAGES
from gateway.stores import LedgerRow
from tests.conftest import Served, serve
from tests.process import run_command
from tests.signin_kit import Browser, Browsers, SignInGateway, Start, field

POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  remember_device: 30d
users:
  carol: {factors: [sms, totp, recovery], phone: "+31 6 1234 5678", groups: [customers]}
  bob: {factors: [email, totp, recovery], email: bob@example.com, groups: [staff]}
  alice: {factors: [sms, recovery]}
groups:
  customers: {}
  staff: {}
paths:
  - {path: "/**", allow: [anyone]}
"""


def outbox_config(outbox: Path, sms_provider: str = "") -> str:
    provider = sms_provider or f"{{type: outbox, path: {outbox}}}"
    return (
        f"sms:\n  provider: {provider}\n  cost: {{per_message: '0.10', currency: EUR}}\n"
        f"email:\n  provider: {{type: outbox, path: {outbox}}}\n"
        "codes: {hourly_cap: 5, ip_hourly_cap: 8}\n"
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.jsonl"


@pytest.fixture
async def gw(crm: Served, start: Start, outbox: Path) -> SignInGateway:
    return await start(crm.url, policy=POLICY, extra=outbox_config(outbox))


def messages(outbox: Path) -> list[dict[str, str]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines()]


def last_code(outbox: Path, to: str) -> str:
    found = [m for m in messages(outbox) if m["to"] == to]
    assert found, f"no message to {to}"
    code = re.search(r"\b(\d{6})\b", found[-1]["text"])
    assert code
    return code.group(1)


async def send(b: Browser, factor: str) -> tuple[int, str]:
    _, html, _ = await b.get(f"/_gateway/challenge?factor={factor}")
    status, _, r = await b.post(
        "/_gateway/challenge/send", {"csrf": field(html, "csrf"), "factor": factor}
    )
    return status, r.headers.get("Location", "")


async def answer(b: Browser, factor: str, code: str) -> tuple[int, str, str]:
    _, html, _ = await b.get(f"/_gateway/challenge?factor={factor}")
    status, page, r = await b.post(
        "/_gateway/challenge", {"csrf": field(html, "csrf"), "factor": factor, "code": code}
    )
    return status, page, r.headers.get("Location", "")


async def test_a_user_allowed_sms_signs_in_with_a_texted_code(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    assert await b.crm_login("carol", "carol-demo") == "/_gateway/challenge"
    _, html, _ = await b.get("/_gateway/challenge")
    assert "+31 6 ••••••78" in html  # masked
    assert "12345678" not in html
    assert await send(b, "sms") == (303, "/_gateway/challenge?factor=sms")
    (message,) = messages(outbox)
    assert message["to"] == "+31612345678"
    assert "verification code" in message["text"]
    _, html, _ = await b.get("/_gateway/challenge?factor=sms")
    assert 'autocomplete="one-time-code"' in html
    status, _, location = await answer(b, "sms", last_code(outbox, "+31612345678"))
    assert (status, location) == (303, "/contacts")
    assert b.cookie("crm_session")
    # The last factor used is preselected next time.
    gw.clock.advance(3600)
    other = browsers(gw)
    await other.crm_login("carol", "carol-demo")
    _, html, _ = await other.get("/_gateway/challenge")
    assert 'action="/_gateway/challenge/send"' in html


async def test_e_mail_codes_work_the_same_way(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    await b.crm_login("bob", "bob-demo")
    await send(b, "email")
    (message,) = messages(outbox)
    assert message["to"] == "bob@example.com"
    assert "verification code" in message["subject"]
    status, _, location = await answer(b, "email", last_code(outbox, "bob@example.com"))
    assert (status, location) == (303, "/contacts")


async def test_a_code_is_good_once_and_for_five_minutes(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    await send(b, "sms")
    code = last_code(outbox, "+31612345678")
    gw.clock.advance(301)
    status, page, _ = await answer(b, "sms", code)
    assert status == 400
    assert "expired" in page
    fresh = browsers(gw)  # the CRM's held cookies are gone by now: sign in again
    await fresh.crm_login("carol", "carol-demo")
    await send(fresh, "sms")
    code = last_code(outbox, "+31612345678")
    assert (await answer(fresh, "sms", code))[0] == 303
    again = browsers(gw)
    await again.crm_login("carol", "carol-demo")
    status, _, _ = await answer(again, "sms", code)
    assert status == 400


async def test_five_wrong_entries_void_a_code(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    await send(b, "sms")
    code = last_code(outbox, "+31612345678")
    wrong = "000000" if code != "000000" else "111111"
    statuses = [(await answer(b, "sms", wrong))[0] for _ in range(5)]
    assert statuses == [400, 400, 400, 400, 429]  # the fifth also locks the user
    gw.clock.advance(61)
    status, page, _ = await answer(b, "sms", code)
    assert status == 400
    assert "expired" in page  # the code itself is void now


async def test_resend_waits_for_the_cooldown_and_the_hour_is_capped(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    assert (await send(b, "sms"))[1] == "/_gateway/challenge?factor=sms"
    _, location = await send(b, "sms")
    assert location.startswith("/_gateway/challenge?factor=sms&sent=cooldown&wait=")
    _, html, _ = await b.get(location)
    assert "You can ask for a new code in 60 seconds" in html
    for _ in range(4):
        gw.clock.advance(61)
        assert (await send(b, "sms"))[1] == "/_gateway/challenge?factor=sms"
    gw.clock.advance(61)
    assert (await send(b, "sms"))[1] == "/_gateway/challenge?factor=sms&sent=hourly_cap"
    assert len(messages(outbox)) == 5


async def test_a_scripted_flood_sends_no_more_than_the_caps_allow(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    """Many browsers, many sends, at once: per user at most the hourly cap, per address at
    most its cap, whatever the concurrency."""
    flood = [browsers(gw) for _ in range(6)]
    for b in flood:
        await b.crm_login("carol", "carol-demo")
    pages = [(await b.get("/_gateway/challenge?factor=sms"))[1] for b in flood]

    async def hammer(b: Browser, html: str) -> None:
        for _ in range(8):  # 48 sends, 61 s apart on the shared clock: all within the hour
            await b.post("/_gateway/challenge/send", {"csrf": field(html, "csrf"), "factor": "sms"})
            gw.clock.advance(61)

    await asyncio.gather(*(hammer(b, html) for b, html in zip(flood, pages, strict=True)))
    assert len(messages(outbox)) == 5  # carol's hourly cap
    bobs = [browsers(gw) for _ in range(6)]
    for b in bobs:
        await b.crm_login("bob", "bob-demo")
        await send(b, "email")
        gw.clock.advance(61)
    # The address's cap (8 an hour) across users: carol's 5 and bob's first 3.
    assert len(messages(outbox)) == 8


async def test_a_user_without_a_number_is_told_to_ask_the_administrator(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    await b.crm_login("alice", "alice-demo")  # sms allowed, no phone on file, no authenticator
    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 403
    assert "no mobile number on file" in html
    assert "administrator" in html
    # A send asked for anyway (the page offers none, so without its token) sends nothing.
    status, _, _ = await b.post("/_gateway/challenge/send", {"csrf": "x", "factor": "sms"})
    assert status == 403
    assert messages(outbox) == []


async def test_every_message_is_in_the_ledger_and_sms_usage_adds_it_up(
    gw: SignInGateway, browsers: Browsers, outbox: Path, tmp_path: Path
) -> None:
    for _ in range(3):
        b = browsers(gw)
        await b.crm_login("carol", "carol-demo")
        await send(b, "sms")
        gw.clock.advance(3601)
    b = browsers(gw)
    await b.crm_login("bob", "bob-demo")
    await send(b, "email")
    durable = gw.signin.durable
    rows = await durable.messages(0, 4e9)
    assert [(r.user, r.channel, r.status, r.cost, r.currency) for r in rows] == [
        ("carol", "sms", "sent", "0.10", "EUR"),
        ("carol", "sms", "sent", "0.10", "EUR"),
        ("carol", "sms", "sent", "0.10", "EUR"),
        ("bob", "email", "sent", "0", "EUR"),
    ]
    # Rows of other quarters and failed sends, written as the gateway writes them.
    await durable.record_message(
        LedgerRow(
            1_790_000_000.0, "dave", "staff,customers", "sms", "http", "failed", 3, "0", "EUR"
        )
    )
    await durable.record_message(
        LedgerRow(
            1_800_000_000.0 + 86400 * 120,
            "carol",
            "customers",
            "sms",
            "outbox",
            "sent",
            1,
            "0.10",
            "EUR",
        )
    )
    cfg = tmp_path / "usage.yaml"
    cfg.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:1'}\n"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gw0/gateway.db}}\n"
    )

    def usage(*args: str) -> str:
        done = run_command("sms-usage", "-c", str(cfg), *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    # The fake clock starts at 2027-01-15: quarter 2027Q1.
    assert usage("--quarter", "2027Q1", "--format", "csv").splitlines() == [
        "user,sent,failed,cost,currency",
        "carol,3,0,0.30,EUR",
        "TOTAL,3,0,0.30,EUR",
    ]
    assert usage("--quarter", "2027Q1", "--by", "group", "--format", "csv").splitlines() == [
        "group,sent,failed,cost,currency",
        "customers,3,0,0.30,EUR",
        "TOTAL,3,0,0.30,EUR",
    ]
    table = usage("--quarter", "2027q1", "--channel", "all")
    assert "bob" in table
    assert "TOTAL" in table
    assert usage("--quarter", "2026Q3", "--format", "csv").splitlines()[1] == ("dave,0,1,0.00,EUR")


# -- a real HTTP SMS provider on loopback that fails ------------------------------------------


@pytest.fixture
async def failing_provider() -> AsyncIterator[Served]:
    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text="provider down")

    app = web.Application()
    app.router.add_post("/send", refuse)
    served = await serve(app)
    yield served
    await served.runner.cleanup()


async def test_a_provider_failure_says_so_and_offers_another_factor(
    crm: Served, start: Start, failing_provider: Served, outbox: Path, browsers: Browsers
) -> None:
    provider = f"{{type: http, url: '{failing_provider.url}/send', retries: 1, timeout: 2s}}"
    gw = await start(crm.url, policy=POLICY, extra=outbox_config(outbox, provider))
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    _, location = await send(b, "sms")
    assert location == "/_gateway/challenge?factor=sms&sent=failed"
    _, html, _ = await b.get(location)
    assert "could not be sent" in html
    assert "Use a code from the authenticator app" not in html  # carol has no authenticator
    rows = await gw.signin.durable.messages(0, 4e9)
    assert [(r.status, r.provider, r.attempts, r.cost) for r in rows] == [
        ("failed", "http", 1, "0")
    ]
    # Failed sends do not hold the cooldown: the user may try again at once.
    _, location = await send(b, "sms")
    assert location == "/_gateway/challenge?factor=sms&sent=failed"


async def test_counters_count_messages_and_their_cost(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    sent = MESSAGES.labels("sms", "outbox", "sent")
    cost = MESSAGE_COST.labels("sms", "EUR")
    before, before_cost = sent._value.get(), cost._value.get()
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    await send(b, "sms")
    assert sent._value.get() == before + 1
    assert round(cost._value.get() - before_cost, 2) == 0.10


async def test_the_code_is_never_logged(
    gw: SignInGateway,
    browsers: Browsers,
    outbox: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    await send(b, "sms")
    code = last_code(outbox, "+31612345678")
    await answer(b, "sms", "000000" if code != "000000" else "111111")
    await answer(b, "sms", code)
    audit_lines = capsys.readouterr().out
    assert code not in caplog.text
    assert code not in audit_lines
    assert '"event": "code.sent"' in audit_lines  # the audit line is there, without the code
    assert await gw.signin.shared.get("otp:sms:carol") is None  # used: gone


async def test_message_texts_can_be_set_in_gateway_yaml(
    crm: Served, start: Start, outbox: Path, browsers: Browsers
) -> None:
    extra = (
        f"sms:\n  provider: {{type: outbox, path: {outbox}}}\n"
        "  text: {en: 'ACME code {code}', nl: 'ACME-code {code}'}\n"
    )
    gw = await start(crm.url, policy=POLICY, extra=extra)
    for language, expected in (("en", "ACME code "), ("nl", "ACME-code "), ("de", "ACME code ")):
        b = browsers(gw, headers={"Accept": "text/html", "Accept-Language": language})
        await b.crm_login("carol", "carol-demo")
        await send(b, "sms")
        assert messages(outbox)[-1]["text"].startswith(expected)
        gw.clock.advance(61)


# -- regressions from the review of this feature ----------------------------------------------


@pytest.fixture
async def slow_provider() -> AsyncIterator[Served]:
    """Takes the message, then answers late (or never in time)."""
    received: list[str] = []

    async def take(request: web.Request) -> web.Response:
        received.append(await request.text())
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.json_response({"id": "late"}, status=202)

    app = web.Application()
    app[RECEIVED] = received
    app.router.add_post("/send", take)
    served = await serve(app, handler_cancellation=True)
    yield served
    await served.runner.cleanup()


RECEIVED = web.AppKey("received", list[str])


async def test_a_provider_too_slow_to_answer_is_charged_once_and_the_code_stands(
    crm: Served, start: Start, slow_provider: Served, outbox: Path, browsers: Browsers
) -> None:
    url = f"{slow_provider.url}/send?delay=5"
    provider = f"{{type: http, url: '{url}', retries: 2, timeout: 0.3s}}"
    gw = await start(crm.url, policy=POLICY, extra=outbox_config(outbox, provider))
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    for _ in range(3):
        await send(b, "sms")  # the first times out; the others hit the cooldown
    assert len(slow_provider.app[RECEIVED]) == 1  # never sent twice
    rows = await gw.signin.durable.messages(0, 4e9)
    assert [(r.status, r.attempts, r.cost) for r in rows] == [("unknown", 1, "0.10")]
    _, html, _ = await b.get("/_gateway/challenge?factor=sms")
    assert "Code from the message" in html  # the code it may have got still works


async def test_a_browser_that_leaves_mid_send_still_gets_its_message_billed(
    crm: Served, start: Start, slow_provider: Served, outbox: Path, browsers: Browsers
) -> None:
    url = f"{slow_provider.url}/send?delay=0.5"
    provider = f"{{type: http, url: '{url}', timeout: 3s}}"
    gw = await start(crm.url, policy=POLICY, extra=outbox_config(outbox, provider))
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    _, html, _ = await b.get("/_gateway/challenge?factor=sms")
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.1):
            await b.post("/_gateway/challenge/send", {"csrf": field(html, "csrf"), "factor": "sms"})
    for _ in range(40):
        if await gw.signin.durable.messages(0, 4e9):
            break
        await asyncio.sleep(0.05)
    rows = await gw.signin.durable.messages(0, 4e9)
    assert [(r.status, r.cost) for r in rows] == [("sent", "0.10")]


async def test_a_code_works_only_in_the_sign_in_that_asked_for_it(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    asker, other = browsers(gw), browsers(gw)
    await asker.crm_login("carol", "carol-demo")
    await other.crm_login("carol", "carol-demo")
    await send(asker, "sms")
    code = last_code(outbox, "+31612345678")
    _, html, _ = await other.get("/_gateway/challenge?factor=sms")
    assert "Send the code" in html  # no code is waiting for this sign-in
    status, _, _ = await answer(other, "sms", code)
    assert status == 400
    assert (await answer(asker, "sms", code))[0] == 303


async def test_one_number_shared_by_two_accounts_gets_no_more_than_one_cap(
    crm: Served, start: Start, outbox: Path, browsers: Browsers
) -> None:
    policy = POLICY.replace(
        "  bob: {factors: [email, totp, recovery], email: bob@example.com, groups: [staff]}",
        '  bob: {factors: [sms], phone: "+31 6 1234 5678"}',
    )
    gw = await start(crm.url, policy=policy, extra=outbox_config(outbox))
    for _ in range(5):
        for user in ("carol", "bob"):
            b = browsers(gw)
            await b.crm_login(user, f"{user}-demo")
            await send(b, "sms")
        gw.clock.advance(61)
    assert len(messages(outbox)) == 5


async def test_the_send_endpoint_refuses_odd_bodies_and_foreign_origins(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    _, html, _ = await b.get("/_gateway/challenge?factor=sms")
    csrf = field(html, "csrf")
    url = gw.url + "/_gateway/challenge/send"
    for body, content_type in (
        (b"csrf=\xff&factor=sms", "application/x-www-form-urlencoded; charset=bogus"),
        (b"--x\r\n\r\n", "multipart/form-data"),
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
    ):
        async with b.http.post(url, data=body, headers={"Content-Type": content_type}) as r:
            assert r.status == 400, (body, content_type)
    data = {"csrf": csrf, "factor": "sms\r\nX-Evil: 1"}
    status, _, r = await b.post("/_gateway/challenge/send", data)
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    async with b.http.post(
        url,
        data={"csrf": csrf, "factor": "sms"},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    ) as r:
        assert r.status == 403
    assert messages(outbox) == []
    _, html, _ = await b.get(
        "/_gateway/challenge?factor=sms&sent=cooldown&wait=9999999%20call%20us"
    )
    assert "call us" not in html
    assert "in 60 seconds" in html


async def test_nothing_is_sent_while_the_user_is_locked(
    crm: Served, start: Start, outbox: Path, browsers: Browsers
) -> None:
    extra = outbox_config(outbox) + "limits: {lockout: 10m}\n"
    gw = await start(crm.url, policy=POLICY, extra=extra)
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    await send(b, "sms")
    for _ in range(5):
        await answer(b, "sms", "000000")
    assert await gw.signin.regulator.locked_until("carol", "127.0.0.1")
    session = await gw.signin.book.load(b.cookie("crm_gateway"))
    assert session is not None
    gw.clock.advance(120)  # the resend cooldown is over; the lockout (10 min) is not
    await b.post("/_gateway/challenge/send", {"csrf": session.csrf, "factor": "sms"})
    assert len(messages(outbox)) == 1


async def test_a_stale_last_choice_falls_back_to_a_factor_that_works(
    gw: SignInGateway, browsers: Browsers
) -> None:
    await gw.signin.durable.set_factor_choice("alice", "totp")  # alice has no authenticator
    await gw.signin.durable.set_factor_choice("carol", "email")  # carol has no address
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 200
    assert "Send the code" in html


def test_the_lines_of_a_bill_add_up_to_its_total() -> None:
    rows = [
        LedgerRow(float(i), user, "", "sms", "http", "sent", 1, "0.0079", "USD")
        for i, user in enumerate(("ann", "bo", "cy"))
    ]
    lines = bill(rows, "user")
    assert [(who, str(cost)) for who, _, _, cost, _ in lines] == [
        ("ann", "0.0079"),
        ("bo", "0.0079"),
        ("cy", "0.0079"),
        ("TOTAL", "0.0237"),
    ]
