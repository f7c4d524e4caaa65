"""A second factor on file cannot be stepped around by adding another one (issue #12, item 1).

A user with an SMS or e-mail contact, recovery codes or an app on file passes one of them
before enrolling, skipping or replacing anything; enrolment counts as the second factor only
for a user who has none. Every case runs the real gateway in front of the demo CRM, with the
attacker's own authenticator key producing real codes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import pytest

from gateway.crypto import recovery_digest
from gateway.factors import recovery
from tests.conftest import Served
from tests.flows.test_signin_codes import last_code, outbox_config, send
from tests.signin_kit import Browser, Browsers, SignInGateway, Start, field

POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  remember_device: 30d
users:
  carol: {factors: [sms, totp, recovery], phone: "+31 6 1234 5678"}
  bob: {factors: [email, totp, recovery], email: bob@example.com}
  alice: {factors: [sms, totp, recovery]}
paths:
  - {path: "/**", allow: [anyone]}
"""


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox.jsonl"


@pytest.fixture
async def gw(crm: Served, start: Start, outbox: Path) -> SignInGateway:
    return await start(crm.url, policy=POLICY, extra=outbox_config(outbox))


async def try_to_enrol_own_key(b: Browser) -> tuple[int, str]:
    """The attacker's move: open the enrolment page and confirm a key of their own. Returns
    the status and where the gateway sends them."""
    status, html, r = await b.get("/_gateway/enrol")
    if status != 200:
        return status, r.headers.get("Location", "")
    key = re.search(r'id="secret-key"><code>([^<]+)</code>', html)
    assert key
    own = pyotp.TOTP(key.group(1).replace(" ", "")).at(b.gw.clock.now())
    status, _, r = await b.post(
        "/_gateway/enrol", {"csrf": field(html, "csrf"), "name": "Mine", "code": own}
    )
    return status, r.headers.get("Location", "")


@pytest.mark.parametrize("user", ["carol", "bob"])
async def test_a_user_with_a_phone_or_address_on_file_cannot_enrol_instead_of_the_code(
    gw: SignInGateway, browsers: Browsers, user: str
) -> None:
    b = browsers(gw)
    assert await b.crm_login(user, f"{user}-demo") == "/_gateway/challenge"
    assert await try_to_enrol_own_key(b) == (303, "/_gateway/challenge")
    assert b.cookie("crm_session") is None
    assert await gw.signin.totp.authenticators(user) == []
    assert await gw.signin.recovery.left(user) == 0


async def test_a_user_with_only_recovery_codes_answers_one_instead_of_enrolling(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """No app and no phone, but recovery codes (an administrator issued them): those are the
    factor, and a new app is added only after one of them passed."""
    codes = recovery.new_codes()
    store = gw.signin.durable
    await store.replace_recovery_codes(
        "alice", [recovery_digest("alice", c) for c in codes], gw.clock.now()
    )
    b = browsers(gw)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    assert await try_to_enrol_own_key(b) == (303, "/_gateway/challenge")
    assert b.cookie("crm_session") is None
    status, _, r = await b.answer(codes[0], factor="recovery")
    assert (status, r.headers["Location"]) == (303, "/contacts")
    assert b.cookie("crm_session")


async def test_a_user_with_a_phone_on_file_cannot_postpone_before_their_date(
    crm: Served, start: Start, browsers: Browsers, outbox: Path
) -> None:
    """`required_from` in the future lets a user with nothing on file postpone enrolment;
    a user whose phone is on file has nothing to enrol and answers the code."""
    later = POLICY.replace(
        'phone: "+31 6 1234 5678"}',
        'phone: "+31 6 1234 5678", enforcement: {required_from: 2099-01-01}}',
    )
    gw = await start(crm.url, policy=later, extra=outbox_config(outbox))
    b = browsers(gw)
    assert await b.crm_login("carol", "carol-demo") == "/_gateway/challenge"
    _, html, _ = await b.get("/_gateway/challenge")
    status, _, r = await b.post("/_gateway/skip", {"csrf": field(html, "csrf")})
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    assert b.cookie("crm_session") is None


async def test_a_signed_in_sms_user_passes_a_fresh_code_before_adding_an_app(
    gw: SignInGateway, browsers: Browsers, outbox: Path
) -> None:
    b = browsers(gw)
    await b.crm_login("carol", "carol-demo")
    await send(b, "sms")
    _, html, _ = await b.get("/_gateway/challenge?factor=sms")
    code = last_code(outbox, "+31612345678")
    data = {"csrf": field(html, "csrf"), "factor": "sms", "code": code, "remember": "1"}
    status, _, r = await b.post("/_gateway/challenge", data)
    assert (status, r.headers["Location"]) == (303, "/contacts")
    # Later, on the remembered device: signed in without a code, so nothing is fresh.
    gw.clock.advance(3600)
    await b.crm_login("carol", "carol-demo")
    status, _, r = await b.get("/_gateway/enrol")
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    # The code passes: now the app may be added.
    await send(b, "sms")
    _, html, _ = await b.get("/_gateway/challenge?factor=sms")
    data = {"csrf": field(html, "csrf"), "factor": "sms", "code": last_code(outbox, "+31612345678")}
    status, _, r = await b.post("/_gateway/challenge", data)
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    assert await try_to_enrol_own_key(b) == (303, "/_gateway/recovery-codes")
    assert len(await gw.signin.totp.authenticators("carol")) == 1


async def test_a_user_with_nothing_on_file_still_enrols_as_their_second_factor(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """alice may use SMS but has no phone on file, and no app: enrolling an app is how she
    signs in the first time."""
    b = browsers(gw)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/enrol"
    assert await try_to_enrol_own_key(b) == (303, "/_gateway/recovery-codes")
    _, html, _ = await b.get("/_gateway/recovery-codes")
    status, _, r = await b.post(
        "/_gateway/recovery-codes", {"csrf": field(html, "csrf"), "saved": "1"}
    )
    assert (status, r.headers["Location"]) == (303, "/contacts")


async def remembered(gw: SignInGateway, b: Browser, secret: str) -> None:
    """alice signs in on `b` and ticks "remember this device"; the next sign-in there skips."""
    gw.clock.advance(60)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    _, _, r = await b.answer(b.code(secret), remember=True)
    assert r.headers["Location"] == "/contacts"
    gw.clock.advance(60)
    assert await b.crm_login("alice", "alice-demo") == "/contacts"


async def test_a_recovery_code_used_elsewhere_forgets_the_remembered_devices(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """Security catalogue OTP-9: a recovery code used (the phone may be lost), a factor added
    or removed, new codes made: no remembered device stands in for a factor any more."""
    home = browsers(gw)
    assert await home.crm_login("alice", "alice-demo") == "/_gateway/enrol"
    secret, codes = await home.enrol()
    await home.confirm_codes()
    await remembered(gw, home, secret)

    elsewhere = browsers(gw)
    await elsewhere.crm_login("alice", "alice-demo")
    _, _, r = await elsewhere.answer(codes[0], factor="recovery")
    assert r.headers["Location"] == "/contacts"

    gw.clock.advance(60)
    assert await home.crm_login("alice", "alice-demo") == "/_gateway/challenge"
