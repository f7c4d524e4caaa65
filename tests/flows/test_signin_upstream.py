"""The second factor behind the demo CRM's own login: every flow through the real gateway, the
real demo CRM, real TOTP codes and a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.demo.crm import STATE
from tests.conftest import Served
from tests.signin_kit import (
    DEMO_POLICY,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    at_the_challenge,
    enrolled,
    field,
    gateway_in_front,
    start_signin_gateway,
    wrong_code,
)

# The demo CRM (conftest's `crm`) and a gateway in front of it; the kit's browsers.
gw = pytest.fixture(name="gw")(gateway_in_front)

# bob may sign in only from 10.0.0.0/8: from here, his password never reaches the CRM.
BOB_ELSEWHERE_POLICY = (DEMO_POLICY + "networks:\n  elsewhere: [10.0.0.0/8]\n").replace(
    "  bob: {interval: 1d}", "  bob: {interval: 1d, networks: [elsewhere]}"
)


async def test_first_sign_in_enrols_and_then_releases_the_crm_session(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/enrol"
    # The password passed, but the CRM's session cookie is held back.
    assert b.cookie("crm_session") is None
    status, _, r = await b.get("/contacts")
    assert (status, r.headers["Location"]) == (302, "/login?next=/contacts")
    await b.enrol()
    assert b.cookie("crm_session") is None  # not before the codes are saved
    r = await b.confirm_codes()
    assert r.headers["Location"] == "/contacts"
    assert b.cookie("crm_session")
    status, html, _ = await b.get("/contacts")
    assert status == 200
    assert "Contacts" in html


async def test_enrolment_needs_a_right_code_before_the_authenticator_counts(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    await b.crm_login("alice", "alice-demo")
    status, html, _ = await b.get("/_gateway/enrol")
    status, html, _ = await b.post(
        "/_gateway/enrol", {"csrf": field(html, "csrf"), "name": "Phone", "code": "000000"}
    )
    assert status == 400
    assert "does not match" in html
    assert await gw.signin.totp.authenticators("alice") == []


async def test_a_crm_cookie_without_a_gateway_session_never_reaches_the_crm(
    gw: SignInGateway, browsers: Browsers, crm: Served
) -> None:
    b = browsers(gw)
    await enrolled(b)
    stolen = b.cookie("crm_session")
    assert stolen in crm.app[STATE].sessions
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw,
        raw.get(
            b.gw.url + "/contacts",
            headers={"Cookie": f"crm_session={stolen}"},
            allow_redirects=False,
        ) as r,
    ):
        assert r.status == 302  # the CRM saw no session: to its login page
        assert r.headers["Location"].startswith("/login")


async def test_second_sign_in_asks_for_a_code_and_a_code_counts_once(
    browsers: Browsers, gw: SignInGateway
) -> None:
    second, _, secret, _ = await at_the_challenge(gw, browsers)
    status, html, _ = await second.answer(wrong_code(second, secret))
    assert status == 400
    assert "not correct" in html
    code = second.code(secret)
    status, _, r = await second.answer(code)
    assert (status, r.headers["Location"]) == (303, "/contacts")
    # The same code from another browser, in the same 30 s step: refused as replayed.
    third = browsers(gw)
    assert await third.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    status, html, _ = await third.answer(code)
    assert status == 400
    assert "already used" in html


async def test_codes_one_step_either_side_are_accepted_two_are_not(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b)
    for offset, ok in ((-60, False), (60, False), (-30, True), (30, True)):
        gw.clock.advance(120)
        other = browsers(gw)
        await other.crm_login("alice", "alice-demo")
        status, _, _ = await other.answer(other.code(secret, offset))
        assert (status == 303) is ok, offset


async def test_recovery_code_signs_in_once(browsers: Browsers, gw: SignInGateway) -> None:
    b = browsers(gw)
    _, codes = await enrolled(b)
    other = browsers(gw)
    await other.crm_login("alice", "alice-demo")
    status, _, r = await other.answer(codes[3].upper(), factor="recovery")
    assert (status, r.headers["Location"]) == (303, "/contacts")
    assert await gw.signin.recovery.left("alice") == 9
    again = browsers(gw)
    await again.crm_login("alice", "alice-demo")
    status, html, _ = await again.answer(codes[3], factor="recovery")
    assert status == 400
    assert "already used" in html


async def test_remembered_device_skips_the_challenge_until_it_expires(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b)
    gw.clock.advance(60)
    await b.post("/logout", {"csrf_token": "x"})  # the CRM's logout (CSRF refused by CRM is fine)
    b.jar.clear(lambda c: c.key != "crm_gateway_device")
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    status, _, _ = await b.answer(b.code(secret), remember=True)
    assert status == 303
    b.jar.clear(lambda c: c.key != "crm_gateway_device")
    gw.clock.advance(29 * 86400)
    assert await b.crm_login("alice", "alice-demo") == "/contacts"  # remembered: straight in
    b.jar.clear(lambda c: c.key != "crm_gateway_device")
    gw.clock.advance(2 * 86400)  # 31 days after remembering
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"


async def test_interval_of_a_day_skips_the_challenge_on_the_same_device(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    b.jar.clear(lambda c: c.key != "crm_gateway_device")
    gw.clock.advance(3600)
    assert await b.crm_login("bob", "bob-demo") == "/contacts"
    # Another device is asked.
    other = browsers(gw)
    assert await other.crm_login("bob", "bob-demo") == "/_gateway/challenge"
    b.jar.clear(lambda c: c.key != "crm_gateway_device")
    gw.clock.advance(86400)
    assert await b.crm_login("bob", "bob-demo") == "/_gateway/challenge"


async def test_remember_is_not_offered_where_policy_forbids_it(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    policy = DEMO_POLICY.replace("remember_device: 30d", "remember_device: off")
    gw = await start(crm.url, policy=policy)
    secret, _ = await enrolled(browsers(gw))
    other = browsers(gw)
    await other.crm_login("alice", "alice-demo")
    _, html, _ = await other.get("/_gateway/challenge")
    assert 'name="remember"' not in html
    # A forged "remember" is ignored.
    gw.clock.advance(60)
    await other.answer(other.code(secret), remember=True)
    devices = await gw.signin.durable.devices("alice")
    assert all(d.remembered_until == 0 for d in devices)


async def test_failed_codes_lock_the_user_across_sessions_then_unlock(
    browsers: Browsers, gw: SignInGateway
) -> None:
    attacker, _, secret, _ = await at_the_challenge(gw, browsers)
    wrong = wrong_code(attacker, secret)
    for _ in range(4):
        status, _, _ = await attacker.answer(wrong)
        assert status == 400
    status, html, r = await attacker.answer(wrong)
    assert status == 429
    assert int(r.headers["Retry-After"]) == 61
    assert "Too many wrong codes" in html
    # Another session (the real user) is locked too: no form, the time to come back.
    victim = browsers(gw)
    await victim.crm_login("alice", "alice-demo")
    status, html, _ = await victim.get("/_gateway/challenge")
    assert status == 429
    assert 'name="code"' not in html
    assert "Too many wrong codes" in html
    gw.clock.advance(61)
    status, _, r = await victim.answer(victim.code(secret))
    assert (status, r.headers["Location"]) == (303, "/contacts")


async def test_lockouts_grow_longer(browsers: Browsers, gw: SignInGateway) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b)
    seen = []
    for _ in range(2):
        gw.clock.advance(3600)
        a = browsers(gw)
        await a.crm_login("alice", "alice-demo")
        wrong = wrong_code(a, secret)
        for _ in range(4):
            await a.answer(wrong)
        status, _, r = await a.answer(wrong)
        assert status == 429
        seen.append(int(r.headers["Retry-After"]))
    assert seen == [61, 121]


async def test_the_crm_logout_ends_the_gateway_session(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    await enrolled(b)
    old = b.cookie("crm_gateway")
    status, _html, _ = await b.get("/contacts")
    assert status == 200
    async with b.http.post(
        b.gw.url + "/logout",
        data={"csrf_token": b.cookie("crm_csrf") or ""},
        allow_redirects=False,
    ) as r:
        assert r.status == 302
        cleared = [c for c in r.headers.getall("Set-Cookie") if c.startswith("crm_gateway=")]
        assert cleared
        assert "Max-Age=0" in cleared[0]
    assert await gw.signin.book.load(old) is None


async def test_session_id_changes_when_the_second_factor_passes(
    browsers: Browsers, gw: SignInGateway
) -> None:
    other, _, secret, _ = await at_the_challenge(gw, browsers)
    before = other.cookie("crm_gateway")
    await other.answer(other.code(secret))
    after = other.cookie("crm_gateway")
    assert before and after
    assert before != after
    assert await gw.signin.book.load(before) is None


async def test_a_planted_session_cookie_is_not_adopted(
    browsers: Browsers, gw: SignInGateway
) -> None:
    """Fixation: a victim given the attacker's pre-login cookie gets a new session at login."""
    victim = browsers(gw)
    _, html, _ = await victim.get("/login")
    planted = {"crm_gateway": "attacker-chosen", "crm_csrf": victim.cookie("crm_csrf") or ""}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw,
        raw.post(
            gw.url + "/login",
            data={
                "csrf_token": field(html, "csrf_token"),
                "username": "alice",
                "password": "alice-demo",
            },
            headers={"Cookie": "; ".join(f"{k}={v}" for k, v in planted.items())},
            allow_redirects=False,
        ) as r,
    ):
        issued = [c for c in r.headers.getall("Set-Cookie") if c.startswith("crm_gateway=")]
    assert len(issued) == 1
    assert not issued[0].startswith("crm_gateway=attacker-chosen")


async def test_tampered_or_foreign_session_cookie_is_anonymous(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    await enrolled(b)
    value = b.cookie("crm_gateway")
    assert value
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    for cookie in (tampered, "x", value.split(".")[0]):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw:
            headers = {"Cookie": f"crm_gateway={cookie}; crm_session={b.cookie('crm_session')}"}
            async with raw.get(gw.url + "/contacts", headers=headers, allow_redirects=False) as r:
                assert r.status == 302


async def test_idle_and_absolute_timeouts_end_the_session(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    await enrolled(b)
    gw.clock.advance(29 * 60)
    assert (await b.get("/contacts"))[0] == 200
    gw.clock.advance(31 * 60)
    assert (await b.get("/contacts"))[0] == 302  # idle for 31 minutes
    c = browsers(gw)
    await enrolled(c, "bob", "bob-demo")
    for _ in range(12 * 4):
        gw.clock.advance(15 * 60)
        status = (await c.get("/contacts"))[0]
    assert status == 302  # 12 hours after sign-in, however active


async def test_held_crm_cookies_expire_if_the_factor_takes_too_long(
    browsers: Browsers, gw: SignInGateway
) -> None:
    slow, _, secret, _ = await at_the_challenge(gw, browsers)
    gw.clock.advance(6 * 60)
    status, html, _ = await slow.answer(slow.code(secret))
    assert status == 400
    assert "expired" in html
    assert slow.cookie("crm_session") is None


async def test_login_naming_the_user_twice_is_refused_before_the_crm(
    gw: SignInGateway, browsers: Browsers, crm: Served
) -> None:
    b = browsers(gw)
    _, html, _ = await b.get("/login")
    before = crm.app[STATE].logins
    body = f"csrf_token={field(html, 'csrf_token')}&username=alice&password=alice-demo&username=bob"
    async with b.http.post(
        b.gw.url + "/login",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    ) as r:
        assert r.status == 400
    assert crm.app[STATE].logins == before


async def test_address_rules_of_the_user_apply_before_the_password_reaches_the_crm(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    gw = await start(crm.url, policy=BOB_ELSEWHERE_POLICY)
    b = browsers(gw)
    _, html, _ = await b.get("/login")
    before = crm.app[STATE].logins
    status, page, _ = await b.post(
        "/login",
        {"csrf_token": field(html, "csrf_token"), "username": "bob", "password": "bob-demo"},
    )
    assert status == 403
    assert "IP address" in page
    assert crm.app[STATE].logins == before  # the password never reached the CRM
    # alice may still sign in from here.
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/enrol"


async def test_optional_user_is_not_asked_until_they_turn_it_on(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    assert await b.crm_login("carol", "carol-demo") == "/contacts"
    assert b.cookie("crm_session")
    status, html, _ = await b.get("/_gateway/account")
    assert status == 200
    assert "off for your account" in html
    status, html, _ = await b.get("/_gateway/enrol")  # turning it on: no step-up needed
    assert status == 200
    await b.enrol()
    await b.confirm_codes()
    gw.clock.advance(60)
    other = browsers(gw)
    assert await other.crm_login("carol", "carol-demo") == "/_gateway/challenge"


async def test_required_from_a_date_lets_users_postpone_until_then(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    policy = DEMO_POLICY.replace(
        "  carol: {enforcement: optional}",
        "  carol: {enforcement: {required_from: 2027-01-15}}",
    )
    gw = await start(crm.url, policy=policy)  # clock: 2027-01-15T08:00
    gw.clock.advance(-86400 * 10)
    b = browsers(gw)
    assert await b.crm_login("carol", "carol-demo") == "/_gateway/enrol"
    status, html, _ = await b.get("/_gateway/enrol")
    assert "2027-01-15" in html
    assert "Not now" in html
    status, _, r = await b.post("/_gateway/skip", {"csrf": field(html, "csrf")})
    assert (status, r.headers["Location"]) == (303, "/contacts")
    assert b.cookie("crm_session")
    gw.clock.advance(86400 * 11)  # the date has come
    later = browsers(gw)
    await later.crm_login("carol", "carol-demo")
    status, html, _ = await later.get("/_gateway/enrol")
    assert "Not now" not in html
    status, _, r = await later.post("/_gateway/skip", {"csrf": field(html, "csrf")})
    assert r.headers["Location"] == "/_gateway/enrol"


async def test_an_enrolled_user_cannot_add_an_authenticator_before_the_challenge(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b)
    attacker = browsers(gw)  # knows the password only
    await attacker.crm_login("alice", "alice-demo")
    status, _, r = await attacker.get("/_gateway/enrol")
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")


async def test_account_changes_need_a_fresh_factor(browsers: Browsers, gw: SignInGateway) -> None:
    b = browsers(gw)
    secret, _ = await enrolled(b)
    gw.clock.advance(10 * 60)
    status, html, _ = await b.get("/_gateway/account")
    status, _, r = await b.post("/_gateway/account/regenerate", {"csrf": field(html, "csrf")})
    assert r.headers["Location"] == "/_gateway/challenge"
    status, _, r = await b.answer(b.code(secret))
    assert r.headers["Location"] == "/_gateway/account"
    status, html, _ = await b.get("/_gateway/account")
    status, _, r = await b.post("/_gateway/account/regenerate", {"csrf": field(html, "csrf")})
    assert r.headers["Location"] == "/_gateway/recovery-codes"
    status, html, _ = await b.get("/_gateway/recovery-codes")
    assert status == 200


async def test_forms_without_the_csrf_token_are_refused(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b)
    for path in ("/_gateway/account/regenerate", "/_gateway/account/remove", "/_gateway/logout"):
        status, _, _ = await b.post(path, {"csrf": "wrong"})
        assert status == 403, path


async def test_the_last_authenticator_of_a_required_user_cannot_be_removed(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    await enrolled(b)
    rows = await gw.signin.totp.authenticators("alice")
    _, html, _ = await b.get("/_gateway/account")
    _status, _, r = await b.post(
        "/_gateway/account/remove", {"csrf": field(html, "csrf"), "id": rows[0].id}
    )
    assert r.headers["Location"].endswith("?last=1")
    assert len(await gw.signin.totp.authenticators("alice")) == 1


async def test_pages_speak_the_browsers_language_and_switch_on_request(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw, headers={"Accept": "text/html", "Accept-Language": "nl-NL,nl;q=0.9"})
    await b.crm_login("alice", "alice-demo")
    _, html, r = await b.get("/_gateway/enrol")
    assert r.headers["Content-Language"] == "nl"
    assert 'lang="nl"' in html
    _, _, r = await b.get("/_gateway/lang?to=de&next=/_gateway/enrol")
    assert r.headers["Location"] == "/_gateway/enrol"
    _status, html, r = await b.get("/_gateway/enrol")
    assert r.headers["Content-Language"] == "de"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/%2F/evil.example",
        "/\t/evil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "javascript:alert(1)",
    ],
)
async def test_language_switch_never_redirects_off_site(
    gw: SignInGateway, browsers: Browsers, target: str
) -> None:
    b = browsers(gw)
    status, _, r = await b.get(f"/_gateway/lang?to=fr&next={target}")
    assert status == 303
    assert r.headers["Location"] == "/_gateway/account"


async def test_cookies_are_secure_and_host_prefixed_behind_https(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    gw = await start(crm.url, extra="trusted_proxies: [127.0.0.1/32]\n")
    b = browsers(gw, headers={"Accept": "text/html", "X-Forwarded-Proto": "https"})
    _status, html, _ = await b.get("/login")
    async with b.http.post(
        gw.url + "/login",
        data={
            "csrf_token": field(html, "csrf_token"),
            "username": "alice",
            "password": "alice-demo",
        },
        allow_redirects=False,
    ) as r:
        cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("__Host-crm_gateway=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie


async def test_the_language_chosen_behind_https_sticks(crm: Served, start: Start) -> None:
    """Over HTTPS the language cookie is `__Host-` prefixed like our others: it used to be
    set under that name and read under the plain one, so the choice never stuck. Our error
    pages follow the choice too (they read only Accept-Language before)."""
    gw = await start(crm.url, extra="trusted_proxies: [127.0.0.1/32]\n")
    https = {"X-Forwarded-Proto": "https", "Accept": "text/html", "Accept-Language": "en"}
    jar = aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(
            f"{gw.url}/_gateway/lang?to=de&next=/", headers=https, allow_redirects=False
        ) as r:
            cookie = r.headers["Set-Cookie"]
        assert cookie.startswith("__Host-crm_gateway_lang=de;")
        chosen = cookie.split(";", 1)[0]
        async with http.get(
            f"{gw.url}/_gateway/no-such-page", headers={**https, "Cookie": chosen}
        ) as r:
            assert (r.status, r.headers["Content-Language"]) == (404, "de")  # our page


async def test_signed_in_users_are_judged_by_their_roles_on_paths(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    policy = DEMO_POLICY.replace(
        "users:\n",
        "roles:\n  admin: {}\nusers:\n  alice: {roles: [admin]}\n",
    ).replace(
        '  - {path: "/**", allow: [anyone]}',
        '  - {path: /files/**, allow: [role:admin]}\n  - {path: "/**", allow: [anyone]}',
    )
    gw = await start(crm.url, policy=policy)
    alice, bob = browsers(gw), browsers(gw)
    await enrolled(alice)
    await enrolled(bob, "bob", "bob-demo")
    assert (await alice.get("/files"))[0] == 200
    status, html, _ = await bob.get("/files")
    assert status == 403
    assert "do not have access" in html
    assert (await bob.get("/contacts"))[0] == 200


async def test_an_admin_revocation_ends_every_session_of_the_user(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    await enrolled(b)
    assert (await b.get("/contacts"))[0] == 200
    await gw.signin.durable.revoke_sessions("alice", gw.clock.now() + 1)
    for _ in range(50):  # the watcher looks every 2 s
        if (await b.get("/contacts"))[0] == 302:
            break
        await asyncio.sleep(0.1)
    assert (await b.get("/contacts"))[0] == 302


async def test_a_restart_does_not_sign_anyone_out(crm: Served, tmp_path: Path) -> None:
    first = await start_signin_gateway(crm.url, tmp_path)
    b = Browser(first)
    try:
        await enrolled(b)
        cookie = b.cookie("crm_gateway")
        await first.served.runner.cleanup()  # a graceful stop keeps the sessions, sealed
        snapshot = tmp_path / "gateway.db.sessions"
        assert snapshot.exists()
        assert b"alice" not in snapshot.read_bytes()  # sealed, not readable on disk
        second = await start_signin_gateway(crm.url, tmp_path, reuse_keys=True, clock=first.clock)
        try:
            b.gw = second
            assert b.cookie("crm_gateway") == cookie
            status, html, _ = await b.get("/contacts")
            assert status == 200
            assert "Contacts" in html
            assert not snapshot.exists()  # used once
        finally:
            await second.served.runner.cleanup()
    finally:
        await b.close()


async def test_wrong_crm_passwords_are_limited_before_they_reach_the_crm(
    browsers: Browsers, gw: SignInGateway, crm: Served
) -> None:
    b = browsers(gw)
    for _ in range(5):
        _, html, _ = await b.get("/login")
        status, page, _ = await b.post(
            "/login",
            {"csrf_token": field(html, "csrf_token"), "username": "alice", "password": "guess"},
        )
        assert status == 200  # the CRM's own "wrong password" page
        assert "Wrong user name or password" in page
    before = crm.app[STATE].logins
    _, html, _ = await b.get("/login")
    status, page, r = await b.post(
        "/login",
        {"csrf_token": field(html, "csrf_token"), "username": "alice", "password": "alice-demo"},
    )
    assert status == 429
    assert "Too many failed attempts" in page
    assert int(r.headers["Retry-After"]) == 61
    assert crm.app[STATE].logins == before
    gw.clock.advance(61)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/enrol"


async def test_a_login_in_another_charset_is_refused(
    gw: SignInGateway, browsers: Browsers, crm: Served
) -> None:
    b = browsers(gw)
    _, html, _ = await b.get("/login")
    before = crm.app[STATE].logins
    async with b.http.post(
        b.gw.url + "/login",
        data=f"csrf_token={field(html, 'csrf_token')}&username=alice&password=alice-demo",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=ISO-8859-1"},
        allow_redirects=False,
    ) as r:
        assert r.status == 400
        assert "could not be read" in await r.text()
    assert crm.app[STATE].logins == before


async def test_a_user_allowed_no_factor_this_version_checks_gets_a_clear_page(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    policy = DEMO_POLICY.replace("  bob: {interval: 1d}", "  bob: {factors: [sms]}")
    gw = await start(crm.url, policy=policy)
    b = browsers(gw)
    location = await b.crm_login("bob", "bob-demo")
    status, html, _ = await b.get(location)
    assert status == 403
    assert "IT department" in html
    assert b.cookie("crm_session") is None


async def test_a_stale_form_gets_a_page_that_says_so(gw: SignInGateway, browsers: Browsers) -> None:
    b = browsers(gw)
    await enrolled(b)
    status, html, _ = await b.post("/_gateway/account/regenerate", {"csrf": "stale"})
    assert status == 403
    assert "This form has expired" in html


async def test_access_removed_by_a_reload_refuses_an_open_session_at_its_next_request(
    browsers: Browsers, gw: SignInGateway
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    assert (await b.get("/contacts"))[0] == 200
    (Path(gw.signin.guard.folder) / "policy.yaml").write_text(BOB_ELSEWHERE_POLICY)
    assert await gw.signin.guard.reload("test")
    status, html, _ = await b.get("/contacts")
    assert status == 403
    assert "IP address" in html
