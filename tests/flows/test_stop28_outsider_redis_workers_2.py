"""Outsider attacks on two gateway processes sharing one Redis and one SQLite file (stop 28),
second part: an API token revoked and a policy file tightened while both run, one texted
code sent to both at once, sends of texts spread over both at once, one account guessed from
four addresses through both, a sign-out and the forward-auth endpoint's session cache on
the other, a worker replaced after a crash. One hole: a policy edit the running process
holds back is served by a process started after it. Two real `python -m gateway run`
processes, the noting demo CRM, real codes from the outbox."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.flows.test_signin_codes import POLICY as CODES_POLICY
from tests.flows.test_signin_codes import last_code, messages, outbox_config, send
from tests.flows.test_stop28_outsider_redis_workers import (
    SLACK,
    STATED_DELAY,
    Pair,
    at_challenge,
    kept_cookies,
    post_code,
    signed_in,
    status_with_cookies,
    two_processes,
)
from tests.process import GatewayProcess, run_command, run_command_async, start_gateway_process
from tests.signin_kit import (
    DEMO_POLICY,
    Browser,
    challenge_csrf,
    field,
    noted_crm,
    posts_to_login,
)

crm = pytest.fixture(name="crm")(noted_crm)  # the demo CRM, noting what reached it
pair = pytest.fixture(name="pair")(two_processes)


# -- API tokens and the policy, changed while both run ------------------------------------------


async def status_with_token(on: GatewayProcess, token: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.get(
            on.url + "/contacts",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            allow_redirects=False,
        ) as r,
    ):
        await r.read()
        return r.status


async def test_a_revoked_api_token_is_refused_by_both_processes_within_the_stated_delay(
    pair: Pair,
) -> None:
    token = secrets.token_urlsafe(24)
    added = await asyncio.to_thread(
        run_command, "tokens", "add", "--user", "alice", "-c", str(pair.config), stdin=token
    )
    assert added.returncode == 0, added.stderr
    found = re.search(r"tok_[0-9a-f]+", added.stdout)
    assert found, added.stdout
    await asyncio.sleep(STATED_DELAY + SLACK)  # "running gateways pick up added tokens"
    assert [await status_with_token(on, token) for on in (pair.a, pair.b)] != [401, 401]
    code, out, err = await run_command_async(
        "tokens", "revoke", found.group(), "-c", str(pair.config)
    )
    assert code == 0, (out, err)
    await asyncio.sleep(STATED_DELAY + SLACK)
    assert [await status_with_token(on, token) for on in (pair.a, pair.b)] == [401, 401]


TIGHTER = DEMO_POLICY.replace("  bob: {interval: 1d}", "  bob: {interval: 1d, roles: [admin]}")
TIGHTER = "roles: {admin: {}}\n" + TIGHTER.replace(
    "paths:\n", "paths:\n  - {path: /contacts, allow: [role:admin]}\n"
)


async def test_a_tighter_policy_file_reaches_both_processes(pair: Pair) -> None:
    """alice reads /contacts through both; the file now keeps it for admins: once the
    watcher's looks have passed (2 s each, the file unchanged for a whole look), neither
    process forwards her request."""
    b, _ = await signed_in(pair, pair.a)
    old = kept_cookies(b)
    assert [await status_with_cookies(on, old, "/contacts") for on in (pair.a, pair.b)] == [
        200,
        200,
    ]
    policy = pair.config.parent / "policies" / "policy.yaml"
    policy.write_text(TIGHTER)
    statuses: list[int] = []
    for _ in range(40):  # the watcher needs two looks: up to ~4 s, here at most 10 s
        await asyncio.sleep(0.25)
        statuses = [await status_with_cookies(on, old, "/contacts") for on in (pair.a, pair.b)]
        if 200 not in statuses:
            break
    assert statuses == [403, 403]


# -- texted codes: one code on both processes, sends spread over both ------------------------------

TEXTED = (CODES_POLICY, outbox_config(Path("OUTBOX")))
CAROL = "+31612345678"


@pytest.mark.parametrize("pair", [TEXTED], indirect=True)
async def test_one_texted_code_sent_to_both_processes_at_once_passes_once(pair: Pair) -> None:
    here = await at_challenge(pair, pair.a, "carol")
    assert await send(here, "sms") == (303, "/_gateway/challenge?factor=sms")
    there = await pair.browser(pair.b, like=here)
    code = last_code(pair.config.parent / "outbox.jsonl", CAROL)
    csrf = await challenge_csrf(here, "sms")
    statuses = await asyncio.gather(
        post_code(here, csrf, code, "sms"), post_code(there, csrf, code, "sms")
    )
    assert statuses.count(303) == 1, statuses


@pytest.mark.parametrize("pair", [TEXTED], indirect=True)
async def test_code_sends_spread_over_both_processes_at_once_send_one_text(pair: Pair) -> None:
    """Six sign-ins of carol, three through each process, each asking for a text twice at
    once: the resend cooldown lets one text go."""
    browsers = [await at_challenge(pair, pair.a if i % 2 else pair.b, "carol") for i in range(6)]
    csrfs = [await challenge_csrf(b, "sms") for b in browsers]
    await asyncio.gather(
        *(
            b.post("/_gateway/challenge/send", {"csrf": c, "factor": "sms"})
            for b, c in [*zip(browsers, csrfs, strict=True)] * 2
        )
    )
    assert len(messages(pair.config.parent / "outbox.jsonl")) == 1


# -- one account guessed from four addresses through both processes at once ---------------------


async def guess_from(pair: Pair, on: GatewayProcess, address: str) -> Browser:
    """A browser on `on` whose connections come from `address` (a loopback address)."""
    b = await pair.browser(on)
    await b.http.close()
    b.http = aiohttp.ClientSession(
        cookie_jar=b.jar,
        headers={"Accept": "text/html"},
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(local_addr=(address, 0)),
    )
    return b


async def test_password_guesses_from_four_addresses_through_both_processes_are_held_to_the_pause(
    pair: Pair,
) -> None:
    """20 wrong passwords for carol at once, five from each of four loopback addresses (each
    address's own limit), half through each process: the account's slow-down (10) holds,
    the CRM checks at most 10."""
    guessers = [
        await guess_from(pair, (pair.a, pair.b)[i % 2], f"127.0.0.{2 + i % 4}") for i in range(20)
    ]
    forms = await asyncio.gather(
        *(g.crm_login_form("carol", f"guess-{i}") for i, g in enumerate(guessers))
    )
    started = time.monotonic()
    answers = await asyncio.gather(
        *(g.post("/login", f) for g, f in zip(guessers, forms, strict=True))
    )
    statuses = [s for s, _, _ in answers]
    # The slow-down lets 10 go, then one at a time as each pause ends (1 s, 2 s, 4 s … of
    # real time): a burst that outlasts the first pause on a busy machine may see one more.
    took, ended, pauses = time.monotonic() - started, 0, 1.0
    while pauses <= took:
        ended, pauses = ended + 1, pauses + 2.0 ** (ended + 1)
    assert len(posts_to_login(pair.crm)) <= 10 + ended, (statuses, took)


# -- a door-opening edit held back by the running process, served by one that starts after it ----

STRICT = TIGHTER.replace(
    "paths:\n", "paths:\n  - {path: /contacts/**, allow: [role:admin]}\n"
)  # three path rules: alice (no role) is refused /contacts
OPENED = DEMO_POLICY  # the file cut down to `paths: [{path: /**, allow: [anyone]}]`


@pytest.mark.parametrize("pair", [(STRICT, "")], indirect=True)
async def test_a_held_back_policy_edit_is_held_back_by_a_process_started_after_it(
    pair: Pair,
) -> None:
    b, _ = await signed_in(pair, pair.a)
    old = kept_cookies(b)
    assert [await status_with_cookies(on, old, "/contacts") for on in (pair.a, pair.b)] == [
        403,
        403,
    ]
    (pair.config.parent / "policies" / "policy.yaml").write_text(OPENED)
    for _ in range(40):  # the watcher's two looks, at most 10 s
        if b"held back" in pair.a.log and b"held back" in pair.b.log:
            break
        await asyncio.sleep(0.25)
    assert b"held back" in pair.a.log
    assert await status_with_cookies(pair.a, old, "/contacts") == 403  # A holds the edit back
    later = await start_gateway_process(pair.config)  # B restarted, or a third instance
    try:
        assert await status_with_cookies(later, old, "/contacts") == 403
    finally:
        await later.stop()


# -- the forward-auth endpoint's session cache on the other process -----------------------------

FORWARD_AUTH = (DEMO_POLICY, "forward_auth: {}\ntrusted_proxies: [127.0.0.1/32]\n")
SESSION_CACHE = 2.0  # forward_auth.session_cache's default


async def auth_status(on: GatewayProcess, cookies: dict[str, str]) -> int:
    """What the endpoint answers a front proxy asking for GET /contacts with these cookies."""
    sent = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/contacts",
        "X-Forwarded-Host": "crm.test",
        "Accept": "*/*",
        "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
    }
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(on.url + "/_gateway/auth", headers=sent, allow_redirects=False) as r,
    ):
        await r.read()
        return r.status


@pytest.mark.parametrize("pair", [FORWARD_AUTH], indirect=True)
async def test_a_sign_out_reaches_the_other_process_endpoint_within_its_session_cache(
    pair: Pair,
) -> None:
    """B's endpoint answers alice's requests from the record it read (session_cache, 2 s);
    she signs out through A: once the cache's time has passed, B refuses her old cookies,
    however often they were asked about meanwhile."""
    b, _ = await signed_in(pair, pair.a)
    old = kept_cookies(b)
    assert await auth_status(pair.b, old) == 200
    status, html, _ = await b.get("/_gateway/account")
    assert status == 200
    status, _, _ = await b.post("/_gateway/logout", {"csrf": field(html, "csrf")})
    assert status in (302, 303)
    for _ in range(int((SESSION_CACHE + SLACK) / 0.25)):  # asked again and again meanwhile
        await auth_status(pair.b, old)
        await asyncio.sleep(0.25)
    assert await auth_status(pair.b, old) != 200
    assert await auth_status(pair.a, old) != 200


@pytest.mark.parametrize("pair", [(STRICT, "workers: 2\n")], indirect=True)
async def test_a_held_back_policy_edit_is_held_back_by_a_replaced_worker(pair: Pair) -> None:
    """What the docs promise, and what holds: a worker the supervisor forks after a crash
    reads the changed files before it serves, and holds the edit back as the rest do."""
    b, _ = await signed_in(pair, pair.a)
    old = kept_cookies(b)
    (pair.config.parent / "policies" / "policy.yaml").write_text(OPENED)
    for _ in range(40):  # the watchers' two looks, at most 10 s
        if pair.a.log.count(b"policy change held back (file changed)") >= 2:
            break
        await asyncio.sleep(0.25)
    before = set(pair.a.children())
    os.kill(min(before), signal.SIGKILL)
    for _ in range(80):  # the supervisor forks a new one, which reads the files: at most 20 s
        if b"(changed since it was read)" in pair.a.log:
            break
        await asyncio.sleep(0.25)
    assert len(set(pair.a.children()) - before) == 1
    await asyncio.sleep(0.5)  # its policy read, it starts listening
    # New connections each: answered by either worker, the new one too.
    assert {await status_with_cookies(pair.a, old, "/contacts") for _ in range(12)} == {403}
