"""The admin commands for users, run as the real `python -m gateway` process against the store
of a running gateway (in front of the demo CRM): what IT does when a phone is lost."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from gateway.cli.output import when_utc
from gateway.clock import FakeClock
from gateway.stores import AuditQuery
from gateway.web.keys import AUDIT
from gateway.web.revocations import LOOK_EVERY
from tests.conftest import Served
from tests.flows.test_interval_choice import choose
from tests.process import run_command_async
from tests.signin_kit import Browser, Browsers, SignInGateway, Start, enrolled, field


@pytest.fixture
async def gw(crm: Served, start: Start) -> SignInGateway:
    # The commands stamp with the real clock: the gateway's fake one starts a day before it,
    # so a revocation "now" is after every session the tests make, and a device remembered
    # for 30 days is still remembered "now".
    return await start(crm.url, clock=FakeClock(time.time() - 86400))


def cli_config(tmp_path: Path) -> Path:
    """A config naming the same store and policies as the gateway `start` made (in gw0)."""
    folder = tmp_path / "gw0"
    path = tmp_path / "admin.yaml"
    path.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:1'}\n"
        f"state:\n  durable: {{type: sqlite, path: {folder}/gateway.db}}\n"
        f"policies: {folder}/policies\n"
    )
    return path


async def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    return await run_command_async(*args, "-c", str(cli_config(tmp_path)))


# The running gateway looks every LOOK_EVERY seconds; ten looks' worth of polling, so a slow
# look on a loaded machine is waited for (bounded, and no assertion on how fast).
LOOKS = int(10 * LOOK_EVERY / 0.1)


async def signed_out(b: Browser) -> bool:
    """True once the gateway has ended the browser's session (it looks every LOOK_EVERY s)."""
    for _ in range(LOOKS):
        if (await b.get("/contacts"))[0] == 302:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_users_list_and_show(gw: SignInGateway, browsers: Browsers, tmp_path: Path) -> None:
    await enrolled(browsers(gw))
    code, out, _ = await cli(tmp_path, "users", "list")
    assert code == 0
    assert out.splitlines()[0].startswith("USER")
    alice = next(line for line in out.splitlines() if line.startswith("alice"))
    assert alice.split()[1:4] == ["1", "10", "0"]
    code, out, _ = await cli(tmp_path, "users", "list", "--json")
    listed = {row["user"]: row for row in json.loads(out)}
    assert {"alice", "bob", "carol", "dave"} <= set(listed)
    assert listed["bob"]["authenticators"] == []
    code, out, _ = await cli(tmp_path, "users", "show", "ALICE", "--json")
    shown = json.loads(out)
    assert (code, shown["user"], shown["recovery_codes_left"]) == (0, "alice", 10)
    assert shown["authenticators"][0]["name"] == "Phone"
    code, _, err = await cli(tmp_path, "users", "show", "nobody")
    assert code == 1
    assert "no user 'nobody'" in err


async def test_reset_2fa_after_a_lost_phone(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    b = browsers(gw)
    await enrolled(b)
    assert (await b.get("/contacts"))[0] == 200
    gw.clock.advance(1)
    code, out, _ = await cli(tmp_path, "users", "reset-2fa", "alice")
    assert code == 0
    assert "1 authenticators removed" in out
    assert await signed_out(b)  # the open session ended
    assert await gw.signin.totp.authenticators("alice") == []
    assert await gw.signin.recovery.left("alice") == 0
    again = browsers(gw)
    gw.clock.advance(1)
    assert await again.crm_login("alice", "alice-demo") == "/_gateway/enrol"


async def test_unlock_ends_a_lockout_in_the_running_gateway(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b)
    gw.clock.advance(60)
    locked = browsers(gw)
    await locked.crm_login("alice", "alice-demo")
    wrong = "000000" if locked.code(secret) != "000000" else "111111"
    for _ in range(5):
        status, _, _ = await locked.answer(wrong)
    assert status == 429
    code, out, _ = await cli(tmp_path, "users", "unlock", "alice")
    assert (code, out.strip()) == (0, "alice unlocked")
    status, _, r = await locked.answer(locked.code(secret))
    assert (status, r.headers["Location"]) == (303, "/contacts")


async def test_sessions_revoke_signs_the_user_out_everywhere(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    b = browsers(gw)
    await enrolled(b)
    gw.clock.advance(1)
    code, out, _ = await cli(tmp_path, "sessions", "revoke", "alice")
    assert (code, out.strip()) == (0, "sessions of alice revoked; 0 remembered devices forgotten")
    assert await signed_out(b)


async def test_recovery_regenerate_prints_new_codes_once_and_voids_the_old(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    b = browsers(gw)
    _, old = await enrolled(b)
    code, out, _ = await cli(tmp_path, "recovery", "regenerate", "alice", "--json")
    new = json.loads(out)["recovery_codes"]
    assert code == 0
    assert len(new) == 10
    assert not set(new) & set(old)
    other = browsers(gw)
    await other.crm_login("alice", "alice-demo")
    status, _, _ = await other.answer(old[0], factor="recovery")
    assert status == 400
    status, _, _ = await other.answer(new[0], factor="recovery")
    assert status == 303
    code, _, err = await cli(tmp_path, "recovery", "regenerate", "bob")
    assert code == 1
    assert "no authenticator" in err


DEVICE_COOKIE = "crm_gateway_device"


async def remembered(gw: SignInGateway, browsers: Browsers) -> tuple[Browser, str]:
    """alice enrols, then signs in again ticking "remember this device": the browser (only
    its device cookie kept) and her authenticator's key."""
    b = browsers(gw)
    secret, _ = await enrolled(b)
    gw.clock.advance(60)
    b.jar.clear(lambda c: c.key != DEVICE_COOKIE)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    status, _, _ = await b.answer(b.code(secret), remember=True)
    assert status == 303
    b.jar.clear(lambda c: c.key != DEVICE_COOKIE)
    gw.clock.advance(60)
    assert await b.crm_login("alice", "alice-demo") == "/contacts"  # remembered: straight in
    return b, secret


async def test_sessions_revoke_forgets_remembered_devices(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    b, _ = await remembered(gw, browsers)
    code, out, _ = await cli(tmp_path, "sessions", "revoke", "alice", "--json")
    assert code == 0
    assert json.loads(out) == {"user": "alice", "sessions": "revoked", "devices_forgotten": 1}
    assert await signed_out(b)
    # The old device cookie no longer skips the second factor (the store is read at sign-in).
    b.jar.clear(lambda c: c.key != DEVICE_COOKIE)
    gw.clock.advance(60)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    assert await gw.signin.durable.devices("alice") == []


async def test_sessions_revoke_with_keep_devices_leaves_them_remembered(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    b, _ = await remembered(gw, browsers)
    code, out, _ = await cli(tmp_path, "sessions", "revoke", "alice", "--keep-devices")
    assert (code, out.strip()) == (
        0,
        "sessions of alice revoked; remembered devices kept (--keep-devices)",
    )
    assert await signed_out(b)
    b.jar.clear(lambda c: c.key != DEVICE_COOKIE)
    gw.clock.advance(60)
    assert await b.crm_login("alice", "alice-demo") == "/contacts"


async def test_reset_2fa_counts_only_the_devices_that_were_remembered(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    _, secret = await remembered(gw, browsers)
    # Two more browsers that passed a code without ticking "remember": known, not trusted.
    for _ in range(2):
        other = browsers(gw)
        gw.clock.advance(60)
        assert await other.crm_login("alice", "alice-demo") == "/_gateway/challenge"
        status, _, _ = await other.answer(other.code(secret))
        assert status == 303
    code, out, _ = await cli(tmp_path, "users", "show", "alice", "--json")
    assert len(json.loads(out)["remembered_devices"]) == 1
    code, out, _ = await cli(tmp_path, "users", "reset-2fa", "alice")
    assert code == 0
    assert "1 remembered device forgotten" in out
    code, out, _ = await cli(tmp_path, "users", "reset-2fa", "alice", "--json")
    assert json.loads(out)["devices_forgotten"] == 0  # nothing left to forget


CODES_POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
users:
  carol: {factors: [sms], phone: "+31 6 1234 5678"}
  bob: {factors: [email], email: bob@example.com}
paths:
  - {path: "/**", allow: [anyone]}
"""


async def sign_in_with_a_sent_code(b: Browser, user: str, factor: str, outbox: Path) -> None:
    assert await b.crm_login(user, f"{user}-demo") == "/_gateway/challenge"
    _, html, _ = await b.get(f"/_gateway/challenge?factor={factor}")
    status, _, _ = await b.post(
        "/_gateway/challenge/send", {"csrf": field(html, "csrf"), "factor": factor}
    )
    assert status == 303
    sent = json.loads(outbox.read_text().splitlines()[-1])
    code = re.search(r"\b(\d{6})\b", sent["text"])
    assert code
    _, html, _ = await b.get(f"/_gateway/challenge?factor={factor}")
    form = {"csrf": field(html, "csrf"), "factor": factor, "code": code.group(1)}
    status, _, r = await b.post("/_gateway/challenge", form)
    assert (status, r.headers["Location"]) == (303, "/contacts")


async def test_users_list_counts_sms_e_mail_and_recovery_sign_ins_as_verifications(
    crm: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    extra = (
        f"sms: {{provider: {{type: outbox, path: {outbox}}}}}\n"
        f"email: {{provider: {{type: outbox, path: {outbox}}}}}\n"
    )
    gw = await start(
        crm.url, policy=CODES_POLICY, extra=extra, clock=FakeClock(time.time() - 86400)
    )
    _, codes = await enrolled(browsers(gw))  # alice: an app, and recovery codes
    gw.clock.advance(3600)
    b = browsers(gw)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    status, _, _ = await b.answer(codes[0], factor="recovery")
    assert status == 303
    expected = {"alice": when_utc(gw.clock.now())}
    for user, factor in (("carol", "sms"), ("bob", "email")):
        gw.clock.advance(60)
        await sign_in_with_a_sent_code(browsers(gw), user, factor, outbox)
        expected[user] = when_utc(gw.clock.now())
    await gw.served.app[AUDIT].flush()  # what the gateway does every few seconds
    code, out, _ = await cli(tmp_path, "users", "list", "--json")
    assert code == 0
    assert {row["user"]: row["last_verified"] for row in json.loads(out)} == expected
    code, out, _ = await cli(tmp_path, "users", "show", "carol", "--json")
    assert json.loads(out)["last_verified"] == expected["carol"]


async def test_users_show_and_reset_interval_of_a_user_who_chose_one(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")  # the policy's interval for bob: 1d
    assert await choose(b, "1h") == "/_gateway/account?interval_saved=1"
    chosen_at = when_utc(gw.clock.now())
    code, out, _ = await cli(tmp_path, "users", "show", "bob")
    assert code == 0
    assert f"interval: 1h in force (the policy's: 1d; chosen: 1h on {chosen_at})" in out
    code, out, _ = await cli(tmp_path, "users", "show", "bob", "--json")
    assert json.loads(out)["interval"] == {
        "policy": "1d",
        "chosen": "1h",
        "chosen_at": chosen_at,
        "in_force": "1h",
        "overruled": None,
    }

    code, out, _ = await cli(tmp_path, "users", "reset-interval", "bob")
    assert (code, out.strip()) == (
        0,
        "bob's own interval forgotten: the policy's holds (open sessions follow soon)",
    )
    assert await gw.signin.durable.interval_choice("bob") is None
    assert await sessions_follow(gw, "bob")  # the running gateway acts within seconds
    code, out, _ = await cli(tmp_path, "users", "show", "bob")
    assert "interval: 1d in force (the policy's: 1d; none chosen)" in out
    code, out, _ = await cli(tmp_path, "users", "reset-interval", "bob")
    assert (code, out.strip()) == (
        0,
        "bob chose no interval of their own: the policy's holds already",
    )
    await gw.served.app[AUDIT].flush()
    events = await gw.signin.durable.audit_events(AuditQuery(names=("admin.interval_reset",)))
    assert [(e.user, e.outcome, e.reason) for _, e in events] == [
        ("bob", "ok", ""),
        ("bob", "refused", "none_chosen"),
    ]


async def sessions_follow(gw: SignInGateway, user: str) -> bool:
    """True once the user's open sessions carry no choice of their own (it looks every LOOK_EVERY s)."""
    for _ in range(LOOKS):
        if all(s.chosen_interval is None for s in await gw.signin.book.sessions_of(user)):
            return True
        await asyncio.sleep(0.1)
    return False
