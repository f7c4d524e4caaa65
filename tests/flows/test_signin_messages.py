"""Messages that fit the situation (issue #12, items 1 and 14): what a user is told when a
sent code is wrong, when an enrolment code was just used, when enrolment is locked, when a
sign-in method is added, and recovery codes never confirmed shown again at the next sign-in.
Real gateway in front of the demo CRM, codes read from the outbox as a person reads them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import pytest

from tests.conftest import Served
from tests.flows.test_signin_codes import last_code, messages, outbox_config, send
from tests.signin_kit import (
    Browser,
    Browsers,
    SignInGateway,
    Start,
    field,
    notices_sent,
    wrong_codes,
)

POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
users:
  carol: {factors: [sms, totp, recovery], phone: "+31 6 1234 5678", email: carol@example.nl}
  bob: {factors: [totp, recovery], email: bob@example.com}
  alice: {factors: [sms, totp, recovery], phone: "+31 6 9999 0000"}
paths:
  - {path: "/**", allow: [anyone]}
"""


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.jsonl"


@pytest.fixture
async def gw(crm: Served, start: Start, outbox: Path) -> SignInGateway:
    return await start(crm.url, policy=POLICY, extra=outbox_config(outbox))


async def test_a_wrong_texted_code_is_not_blamed_on_the_phones_clock(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    await send(b, "sms")
    status, html, _ = await b.answer("000000", factor="sms")
    assert status == 400
    assert "newest message" in html
    assert "time on your phone" not in html


async def enrol_page(b: Browser) -> tuple[str, str]:
    status, html, _ = await b.get("/_gateway/enrol")
    assert status == 200, status
    key = re.search(r'id="secret-key"><code>([^<]+)</code>', html)
    assert key
    return key.group(1).replace(" ", ""), field(html, "csrf")


async def test_an_enrolment_code_used_a_moment_ago_is_called_used_not_wrong(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """bob enrols a first app, then adds a second from the account page within the same
    30 seconds: the right code of the new app falls in the step just used (codes count once
    per user and step)."""
    b = browsers(gw)
    assert await b.crm_login("bob", "bob-demo") == "/_gateway/enrol"
    await b.enrol()
    await b.confirm_codes()
    second, csrf = await enrol_page(b)
    code = pyotp.TOTP(second).at(gw.clock.now())
    status, html, _ = await b.post(
        "/_gateway/enrol", {"csrf": csrf, "name": "Second", "code": code}
    )
    assert status == 400
    assert "just used" in html
    assert "does not match" not in html


async def test_a_locked_enrolment_says_when_to_return_and_offers_no_way_back_in(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    assert await b.crm_login("bob", "bob-demo") == "/_gateway/enrol"
    secret, csrf = await enrol_page(b)
    for code in wrong_codes(b, secret, 5):
        status, html, r = await b.post("/_gateway/enrol", {"csrf": csrf, "name": "x", "code": code})
    assert status == 429
    assert int(r.headers["Retry-After"]) > 0
    assert 'role="alert"' in html
    assert "<form" not in html.split("</header>")[-1].replace('action="/_gateway/logout"', "")
    status, html, _ = await b.get("/_gateway/enrol")  # a reload is still the lockout
    assert status == 429
    gw.clock.advance(61)
    assert (await b.get("/_gateway/enrol"))[0] == 200


async def test_adding_an_app_is_told_to_the_user_by_e_mail(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw, headers={"Accept": "text/html", "Accept-Language": "de"})
    await b.crm_login("bob", "bob-demo")
    await b.enrol(name="Diensthandy")
    await notices_sent(gw, "bob")
    (notice,) = messages(outbox)
    assert notice["to"] == "bob@example.com"
    assert "Anmeldemethode" in notice["subject"]
    assert "„Diensthandy“" in notice["text"]
    assert "127.0.0.1" in notice["text"]
    assert "2027-01-15" in notice["text"] or "UTC" in notice["text"]


async def test_a_user_reachable_only_by_phone_is_told_by_text_and_billed(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    await b.crm_login("alice", "alice-demo")
    await send(b, "sms")
    _, _, r = await b.answer(last_code(outbox, "+31699990000"), factor="sms")
    assert r.headers["Location"] == "/contacts"
    await b.enrol()
    await notices_sent(gw, "alice")  # sent in the background, its ledger row written last
    code, notice = messages(outbox)
    assert (code["to"], notice["to"]) == ("+31699990000", "+31699990000")
    assert 'sign-in method ("Phone") was added' in notice["text"]
    ledger = await gw.signin.durable.messages(0, gw.clock.now() + 1)
    assert [(row.user, row.channel, row.cost) for row in ledger] == [
        ("alice", "sms", "0.10"),
        ("alice", "sms", "0.10"),
    ]


async def test_recovery_codes_never_confirmed_are_shown_again_at_the_next_sign_in(
    gw: SignInGateway, browsers: Browsers
) -> None:
    first = browsers(gw)
    assert await first.crm_login("bob", "bob-demo") == "/_gateway/enrol"
    secret, codes = await first.enrol()
    # The tab is closed here: the codes were never confirmed.
    gw.clock.advance(120)
    later = browsers(gw)
    assert await later.crm_login("bob", "bob-demo") == "/_gateway/challenge"
    status, _, r = await later.answer(later.code(secret))
    assert (status, r.headers["Location"]) == (303, "/_gateway/recovery-codes")
    status, html, _ = await later.get("/_gateway/recovery-codes")
    assert re.findall(r"<li><code>([a-z0-9-]+)</code></li>", html) == codes
    status, _, r = await later.post(
        "/_gateway/recovery-codes", {"csrf": field(html, "csrf"), "saved": "1"}
    )
    assert (status, r.headers["Location"]) == (303, "/contacts")  # where the sign-in went
    # Confirmed: the next sign-in goes straight on.
    gw.clock.advance(120)
    third = browsers(gw)
    await third.crm_login("bob", "bob-demo")
    status, _, r = await third.answer(third.code(secret))
    assert r.headers["Location"] == "/contacts"
