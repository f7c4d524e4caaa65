"""What the helpdesk console refuses, and how: unknown users, forged CSRF tokens, tampered
fields, two users in one request, huge query strings, acting on oneself or on a higher admin
role, too many pages a minute. Each is a page that says why, an audit event naming the
administrator, and never a 500. Also what each action does to the user, done by a scripted
browser against the real gateway."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.crypto import normalize_recovery_code, recovery_digest
from gateway.stores import AuditQuery
from gateway.web.keys import AUDIT
from tests.conftest import Served, send_raw
from tests.helpdesk_kit import (
    ADMIN,
    CONSOLE_POLICY,
    alice,
    console_gateway,
    csrf_of,
    gw,
)
from tests.signin_kit import Browser, Browsers, SignInGateway, Start, audit_trail, enrolled

__all__ = ["alice", "gw"]  # the fixtures, by name


async def refusals(gw: SignInGateway) -> list[tuple[str, str, str]]:
    """(reason, user acted on, by) of every console refusal so far."""
    found = await audit_trail(gw.served, "admin.console_refused")
    return [(e.reason, e.user, str(dict(e.details).get("by"))) for e in found]


async def act(b: Browser, data: dict[str, str]) -> tuple[int, str]:
    async with b.http.post(f"{b.gw.url}{ADMIN}act", data=data, allow_redirects=False) as r:
        return r.status, await r.text() if r.status != 303 else r.headers["Location"]


async def test_bad_input_is_said_plainly_audited_and_never_a_500(
    gw: SignInGateway, alice: Browser
) -> None:
    csrf = await csrf_of(alice)
    status, html, _ = await alice.get(f"{ADMIN}user?u=nobody")
    assert status == 404 and "There is no user with this name" in html
    status, html = await act(alice, {"csrf": "forged", "user": "carol", "action": "reset"})
    assert status == 403  # the CSRF page, and csrf.failed in the trail
    status, html = await act(alice, {"csrf": csrf, "user": "carol", "action": "drop_table"})
    assert status == 400 and "This request was changed" in html
    status, html = await act(alice, {"csrf": csrf, "user": "carol", "action": "unlock", "x": "1"})
    assert status == 400
    bulk = [("csrf", csrf), ("user", "carol"), ("user", "bob"), ("action", "revoke")]
    async with alice.http.post(f"{gw.url}{ADMIN}act", data=bulk, allow_redirects=False) as r:
        assert r.status == 400 and "One user at a time" in await r.text()
    status, html = await act(
        alice, {"csrf": csrf, "user": "carol", "action": "forget", "device": "x"}
    )
    assert status == 403 and "remembered devices (any more)" in html
    regenerate = {"csrf": csrf, "user": "carol", "action": "regenerate", "delivery": "fax"}
    assert (await act(alice, regenerate))[0] == 400
    status, html, _ = await alice.get(f"{ADMIN}activity?ip=not-an-address")
    assert status == 400 and "Address: enter an IP address" in html
    status, html, _ = await alice.get(f"{ADMIN}activity?since=yesterday")
    assert status == 400 and "From: enter a time" in html
    status, html, _ = await alice.get(f"{ADMIN}activity?per=hour&since=300d")
    assert status == 400 and "too long for this chart" in html
    status, html, _ = await alice.get(f"{ADMIN}sms?quarter=2027Q5")
    assert status == 400
    status, html, _ = await alice.get(f"{ADMIN}?q=" + "a" * 3000)
    assert status == 414 and "too long" in html
    # Past aiohttp's own limit for a request line: refused before any page, and not a 500.
    cookie = "; ".join(f"{c.key}={c.value}" for c in alice.jar)
    raw = await send_raw(
        gw.served.port,
        f"GET {ADMIN}?q={'a' * 9000} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode(),
    )
    # (414 under `crm-gateway run`'s GatewayRunner, gateway.web.protocol; 400 in this harness)
    assert raw.split(b" ", 2)[1] in (b"400", b"414")
    assert await gw.signin.durable.authenticators("carol")  # nothing was changed
    await gw.served.app[AUDIT].flush()
    csrf_failed = await gw.signin.durable.audit_events(AuditQuery(names=("csrf.failed",)))
    assert [e.user for _, e in csrf_failed] == ["alice"]
    assert await refusals(gw) == [
        ("unknown_user", "alice", "alice"),
        ("tampered", "alice", "alice"),
        ("tampered", "alice", "alice"),
        ("bulk", "alice", "alice"),
        ("unknown_device", "carol", "alice"),
        ("tampered", "alice", "alice"),
        ("tampered", "alice", "alice"),  # the quarter 2027Q5
        ("query_too_long", "alice", "alice"),
    ]
    bad = await gw.signin.durable.audit_events(AuditQuery(names=("admin.bad_input",)))
    assert [e.reason for _, e in bad] == ["ip", "since", "range"]


async def test_nobody_lowers_their_own_protection_or_a_higher_admins(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    policy = CONSOLE_POLICY.replace("carol: {groups", "carol: {roles: [admin], groups")
    gw = await console_gateway(start, crm.url, policy=policy)
    carol = browsers(gw)
    await enrolled(carol, "carol", "carol-demo")
    gw.clock.advance(30)
    alice = browsers(gw)
    await enrolled(alice, "alice", "alice-demo")
    csrf = await csrf_of(alice, "alice")
    for action in ("reset", "revoke", "unlock"):
        status, html = await act(
            alice, {"csrf": csrf, "user": "alice", "action": action, "confirm": "1"}
        )
        assert status == 403 and "cannot change your own sign-in here" in html
    status, html = await act(
        alice, {"csrf": csrf, "user": "Carol", "action": "reset", "confirm": "1"}
    )
    assert status == 403 and "higher admin role" in html
    _, page, _ = await alice.get(f"{ADMIN}user?u=carol")
    assert "Reset two-step verification" not in page and "higher admin role" in page
    assert len(await gw.signin.durable.authenticators("alice")) == 1
    assert len(await gw.signin.durable.authenticators("carol")) == 1
    # An admin may act on a helpdesk user: a lower rank.
    status, location = await act(
        carol, {"csrf": await csrf_of(carol, "alice"), "user": "alice", "action": "unlock"}
    )
    assert (status, location) == (303, f"{ADMIN}user?u=alice&done=unlocked")
    assert await refusals(gw) == [
        ("self", "alice", "alice"),
        ("self", "alice", "alice"),
        ("self", "alice", "alice"),
        ("higher_role", "carol", "alice"),
    ]


async def test_each_administrator_has_a_page_rate(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    gw = await start(  # the default is 120 pages a minute; this gateway allows 5
        crm.url,
        policy=CONSOLE_POLICY,
        extra="admin:\n  console: {networks: [office], rate: {read: 5, act: 2}}\n",
    )
    alice = browsers(gw)
    await enrolled(alice, "alice", "alice-demo")
    statuses = [(await alice.get(ADMIN))[0] for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    gw.clock.advance(60)  # the next minute
    assert (await alice.get(ADMIN))[0] == 200
    assert await refusals(gw) == [("rate_limited", "alice", "alice")]  # once a minute


async def test_not_signed_in_is_sent_to_sign_in_and_the_console_can_be_off(
    gw: SignInGateway, browsers: Browsers, crm: Served, start: Start
) -> None:
    b = browsers(gw)
    status, html, _ = await b.get(ADMIN)
    assert status == 401 and "Sign in first" in html and 'href="/login"' in html
    off = await start(crm.url, policy=CONSOLE_POLICY)
    assert (await browsers(off).get(ADMIN))[0] == 404


async def test_actions_change_what_the_cli_changes_at_once(
    crm: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    extra = f"email:\n  provider: {{type: outbox, path: {outbox}}}\n"
    gw = await console_gateway(start, crm.url, extra=extra)
    carol = browsers(gw)
    _, old_codes = await enrolled(carol, "carol", "carol-demo")
    gw.clock.advance(30)
    alice = browsers(gw)
    await enrolled(alice, "alice", "alice-demo")
    csrf = await csrf_of(alice)

    # New codes, shown once: ten, and the old ones stop working.
    status, html = await act(
        alice, {"csrf": csrf, "user": "carol", "action": "regenerate", "delivery": "show"}
    )
    assert status == 200
    shown = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", html)
    assert len(shown) == 10 and not set(shown) & set(old_codes)
    store = gw.signin.durable
    old = recovery_digest("carol", normalize_recovery_code(old_codes[0]))
    assert not await store.use_recovery_code("carol", old, gw.clock.now())
    # … or sent: by e-mail, the codes in the message, the ledger has it.
    status, location = await act(
        alice, {"csrf": csrf, "user": "carol", "action": "regenerate", "delivery": "send"}
    )
    assert (status, location) == (303, f"{ADMIN}user?u=carol&done=sent")
    sent = [json.loads(line) for line in outbox.read_text().splitlines()]
    to_carol = [m for m in sent if "recovery codes" in m.get("subject", "")]
    assert to_carol[-1]["to"] == "carol@example.nl"
    mailed = re.findall(r"\b[a-z0-9]{5}-[a-z0-9]{5}\b", to_carol[-1]["text"])
    assert len(mailed) == 10 and not set(mailed) & set(shown)
    assert [r.channel for r in await store.messages(0, float("inf"))][-1] == "email"

    # Sign out everywhere: her session ends at once.
    assert (await carol.get("/contacts"))[0] == 200
    status, _ = await act(alice, {"csrf": csrf, "user": "carol", "action": "revoke"})
    assert status == 303
    assert (await carol.get("/contacts"))[0] == 302
    await gw.served.app[AUDIT].flush()
    trail = await store.audit_events(AuditQuery(names=("admin.*",)))
    assert [
        (e.name, e.user, dict(e.details)["by"]) for _, e in trail if e.name != "admin.user_viewed"
    ] == [
        ("admin.recovery_regenerated", "carol", "alice"),
        ("admin.recovery_regenerated", "carol", "alice"),
        ("admin.sessions_revoked", "carol", "alice"),
    ]
    # No code in the trail, wherever it was shown or sent.
    text = json.dumps([e.details for _, e in await store.audit_events(AuditQuery())])
    assert not any(code in text for code in shown + mailed)
