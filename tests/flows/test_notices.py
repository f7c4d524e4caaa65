"""The user is told of changes to their own account (issue #16, item 6): an app added or
removed, new recovery codes, a recovery code used, a password from a network they never
signed in from, two-step verification reset by IT. In their language, with when, where from
and which browser; each audited, each kind can be turned off. Real gateway before the demo
CRM; messages read from the outbox file and from an SMTP server on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.stores import AuditQuery
from tests.conftest import Served
from tests.flows.test_signin_codes import messages, outbox_config
from tests.process import run_command_async
from tests.senders.test_senders import Inbox, LoopbackController, read_mail
from tests.signin_kit import Browser, Browsers, SignInGateway, Start, field

POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: optional
users:
  bob: {email: bob@example.com}
paths:
  - {path: "/**", allow: [anyone]}
"""
# The sign-ins come through a trusted proxy that names the client: another network is
# another X-Forwarded-For.
PROXIED = "trusted_proxies: [127.0.0.1/32]\n"
OFFICE, CAFE = "203.0.113.5", "198.51.100.7"


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.jsonl"


async def told(outbox: Path, n: int) -> list[dict[str, str]]:
    """The first `n` messages once they are there (notices go in the background)."""
    for _ in range(300):
        found = messages(outbox)
        if len(found) >= n:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(messages(outbox))} messages, not {n}: {messages(outbox)}")


def from_(gw: SignInGateway, browsers: Browsers, address: str, lang: str = "en") -> Browser:
    return browsers(
        gw,
        headers={"Accept": "text/html", "X-Forwarded-For": address, "Accept-Language": lang},
    )


async def sign_in_with_an_app(b: Browser) -> str:
    """bob signs in (nothing on file: straight in) and adds an app from the account page."""
    assert await b.crm_login("bob", "bob-demo") == "/contacts"
    secret, _ = await b.enrol(name="Work phone")
    await b.confirm_codes()
    return secret


async def test_every_change_to_the_account_is_told_in_the_users_language(
    crm: Served, start: Start, browsers: Browsers, outbox: Path
) -> None:
    gw = await start(crm.url, policy=POLICY, extra=PROXIED + outbox_config(outbox))
    b = from_(gw, browsers, OFFICE, "de")
    secret = await sign_in_with_an_app(b)
    added = (await told(outbox, 1))[0]
    assert added["to"] == "bob@example.com"
    assert "„Work phone“" in added["text"] and OFFICE in added["text"]

    # New recovery codes from the account page (a factor passed just now: no step-up).
    status, html, _ = await b.get("/_gateway/account")
    assert status == 200
    await b.post("/_gateway/account/regenerate", {"csrf": field(html, "csrf")})
    regenerated = (await told(outbox, 2))[1]
    assert "neue Wiederherstellungscodes" in regenerated["subject"]

    # A second app, then the first removed.
    gw.clock.advance(31)  # the next code of the authenticator (each code is good once)
    await b.enrol(name="Tablet")
    await told(outbox, 3)
    rows = await gw.signin.totp.authenticators("bob")
    first = next(row for row in rows if row.name == "Work phone")
    status, html, _ = await b.get("/_gateway/account")
    await b.post("/_gateway/account/remove", {"csrf": field(html, "csrf"), "id": first.id})
    removed = (await told(outbox, 4))[3]
    assert "entfernt" in removed["subject"] and "„Work phone“" in removed["text"]
    assert secret  # the app bob still has: "Tablet"


async def test_a_recovery_code_used_is_told(
    crm: Served, start: Start, browsers: Browsers, outbox: Path
) -> None:
    gw = await start(crm.url, policy=POLICY, extra=PROXIED + outbox_config(outbox))
    first = from_(gw, browsers, OFFICE)
    assert await first.crm_login("bob", "bob-demo") == "/contacts"
    await first.enrol(name="Work phone")
    codes_page = first.last_page
    recovery = codes_page.split("<li><code>")[1].split("</code>")[0]
    await first.confirm_codes()
    await told(outbox, 1)
    gw.clock.advance(60)
    other = from_(gw, browsers, OFFICE)
    assert await other.crm_login("bob", "bob-demo") == "/_gateway/challenge"
    status, _, _ = await other.answer(recovery, factor="recovery")
    assert status == 303
    used = (await told(outbox, 2))[1]
    assert used["subject"].endswith("a recovery code was used")
    assert OFFICE in used["text"]
    for _ in range(100):  # the trail reaches the store in batches
        events = await gw.signin.durable.audit_events(AuditQuery(user="bob"))
        if "notice.recovery_used" in [event.name for _, event in events]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the notice was not audited")


async def test_a_password_from_a_new_network_is_told_by_e_mail_over_smtp(
    crm: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    inbox = Inbox()
    server = LoopbackController(inbox)
    server.start()
    try:
        email = (
            "email:\n  provider: {type: smtp, host: 127.0.0.1, port: "
            f"{server.port}, security: none, from: gateway@example.org}}\n"
        )
        gw = await start(crm.url, policy=POLICY, extra=PROXIED + email)
        b = from_(gw, browsers, OFFICE, "nl")
        assert await b.crm_login("bob", "bob-demo") == "/contacts"  # the first: the baseline
        gw.clock.advance(3600)
        assert await from_(gw, browsers, OFFICE, "nl").crm_login("bob", "bob-demo")
        assert await from_(gw, browsers, CAFE, "nl").crm_login("bob", "bob-demo")
        for _ in range(300):
            if inbox.received:
                break
            await asyncio.sleep(0.02)
        [received] = inbox.received
        mail = read_mail(received)
        assert mail["To"] == "bob@example.com"
        assert "nieuw netwerk" in str(mail["Subject"])
        assert CAFE in mail.get_content()
    finally:
        server.stop()


async def test_a_kind_turned_off_is_not_sent_and_the_others_are(
    crm: Served, start: Start, browsers: Browsers, outbox: Path
) -> None:
    off = "notices: {factor_added: off}\n"
    gw = await start(crm.url, policy=POLICY, extra=PROXIED + outbox_config(outbox) + off)
    b = from_(gw, browsers, OFFICE)
    assert await b.crm_login("bob", "bob-demo") == "/contacts"
    await b.enrol(name="Work phone")
    await b.confirm_codes()
    _, html, _ = await b.get("/_gateway/account")
    await b.post("/_gateway/account/regenerate", {"csrf": field(html, "csrf")})
    [only] = await told(outbox, 1)
    assert only["subject"].endswith("new recovery codes")


async def test_a_reset_by_it_is_told_by_the_running_gateway(
    crm: Served, start: Start, browsers: Browsers, outbox: Path, tmp_path: Path
) -> None:
    # The command stamps with the real clock; the gateway's is a day behind it.
    gw = await start(
        crm.url,
        policy=POLICY,
        extra=PROXIED + outbox_config(outbox),
        clock=FakeClock(time.time() - 86400),
    )
    b = from_(gw, browsers, OFFICE, "fr")
    assert await b.crm_login("bob", "bob-demo") == "/contacts"
    await b.enrol(name="Work phone")
    await b.confirm_codes()
    await told(outbox, 1)
    config = tmp_path / "admin.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:1'}\n"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gw0/gateway.db}}\n"
        f"policies: {tmp_path}/gw0/policies\n"
    )
    code, out, err = await run_command_async("users", "reset-2fa", "bob", "-c", str(config))
    assert code == 0, err
    assert "the running gateway tells them so" in out
    reset = (await told(outbox, 2))[1]  # within the gateway's look (every 2 s)
    assert "réinitialisée" in reset["subject"]  # the language of bob's last sign-in
