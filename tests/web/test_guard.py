"""The guard end to end: real gateway, real echo CRM, clients bound to other loopback
addresses (127.0.0.2, 127.0.0.3, 127.0.0.4, ::1), real SQLite token store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.audit import AuditTrail
from gateway.clock import SystemClock
from gateway.policy.load import load_policies
from gateway.policy.tokens import digest
from gateway.policy.view import PolicyView
from gateway.signin.decision import Asks, Kind, Request, Who, still_verified
from gateway.stores.sqlite import SqliteDurableStore
from gateway.web.guard import GUARD, MEMO_PATH, Guard
from gateway.web.keys import DURABLE
from tests.conftest import GatewayFactory, Served, send_raw

POLICY = """
networks:
  office: [127.0.0.2/32, "::1/128"]
  integration: [127.0.0.3/32]
  blocked: [127.0.0.4/32]
organisation:
  deny: [blocked]
roles:
  admin: {networks: [office]}
  integration: {networks: [integration]}
users:
  alice: {roles: [admin]}
  sync: {roles: [integration]}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: /api/**, allow: [token]}
  - {path: /**, allow: [anyone]}
api:
  tokens:
    - {header: Authorization, schemes: [Bearer, Token]}
    - {header: X-API-Key}
    - {query: api_key}
  unknown_tokens: {networks: [integration]}
"""

SYNC_TOKEN = "sync-token-0123456789abcdef"
ALICE_TOKEN = "alice-token-0123456789abcdef"


def write_policy(folder: Path, text: str = POLICY) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "policy.yaml").write_text(textwrap.dedent(text))


@pytest.fixture
async def guarded(upstream: Served, start_gateway: GatewayFactory, tmp_path: Path) -> Served:
    folder = tmp_path / "policies"
    write_policy(folder)
    gw = await start_gateway(upstream.url, f"policies: {folder}\n")
    store = gw.app[DURABLE]
    await store.add_token("tok_sync", "sync", digest(SYNC_TOKEN), "", 0.0)
    await store.add_token("tok_alice", "alice", digest(ALICE_TOKEN), "", 0.0)
    await gw.app[GUARD].refresh_tokens()
    return gw


async def client_from(address: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


# A client per loopback source address, by that address.
Clients = dict[str, aiohttp.ClientSession]


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    sessions = {
        a: await client_from(a) for a in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
    }
    yield sessions
    for session in sessions.values():
        await session.close()


async def _get(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, dict[str, str], str]:
    async with session.get(url, allow_redirects=False, **kwargs) as r:
        text = await r.text()
        return r.status, dict(r.headers), text


async def test_token_from_its_owners_network_is_forwarded(
    guarded: Served, clients: Clients
) -> None:
    status, _, body = await _get(
        clients["127.0.0.3"],
        f"{guarded.url}/api/contacts",
        headers={"Authorization": f"Bearer {SYNC_TOKEN}"},
    )
    assert status == 200
    assert json.loads(body)["raw_path"] == "/api/contacts"


async def test_token_from_another_address_gets_json_403_never_a_page(
    guarded: Served, clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = {
        "Authorization": f"Token {SYNC_TOKEN}",
        "Accept": "text/html",
        "X-Forwarded-For": "127.0.0.3",
    }
    status, response_headers, body = await _get(
        clients["127.0.0.2"], f"{guarded.url}/api/contacts", headers=headers
    )
    assert status == 403
    assert response_headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"] == "ip_not_allowed"
    out = capsys.readouterr().out  # the audit trail's JSON lines go to stdout by default
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "token.denied"
    assert events[-1]["ip"] == "127.0.0.2"
    assert events[-1]["user"] == "sync"
    assert events[-1]["reason"] == "ip_not_allowed"
    assert SYNC_TOKEN not in out


@pytest.mark.parametrize("where", ["header", "query"])
async def test_token_in_api_key_header_or_query_is_judged_too(
    guarded: Served, clients: Clients, where: str
) -> None:
    kwargs = (
        {"headers": {"X-API-Key": SYNC_TOKEN}}
        if where == "header"
        else {"params": {"api_key": SYNC_TOKEN}}
    )
    assert (await _get(clients["127.0.0.3"], f"{guarded.url}/api/x", **kwargs))[0] == 200
    assert (await _get(clients["127.0.0.2"], f"{guarded.url}/api/x", **kwargs))[0] == 403


async def test_unknown_token_only_from_unknown_token_networks(
    guarded: Served, clients: Clients
) -> None:
    headers = {"Authorization": "Bearer not-registered-0123456789"}
    assert (await _get(clients["127.0.0.3"], f"{guarded.url}/api/x", headers=headers))[0] == 200
    status, _, body = await _get(clients["127.0.0.2"], f"{guarded.url}/api/x", headers=headers)
    assert status == 403
    assert json.loads(body)["error"] == "token_ip_not_allowed"


async def test_unknown_token_denied_with_401_when_policy_says_deny(
    upstream: Served, start_gateway: GatewayFactory, tmp_path: Path, clients: Clients
) -> None:
    folder = tmp_path / "p2"
    write_policy(
        folder, POLICY.replace("unknown_tokens: {networks: [integration]}", "unknown_tokens: deny")
    )
    gw = await start_gateway(upstream.url, f"policies: {folder}\n")
    status, _, body = await _get(
        clients["127.0.0.3"],
        f"{gw.url}/api/x",
        headers={"Authorization": "Bearer whatever-0123456789"},
    )
    assert status == 401
    assert json.loads(body)["error"] == "token_unknown"


async def test_path_rule_by_role_through_token(guarded: Served, clients: Clients) -> None:
    alice = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    sync = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    assert (await _get(clients["127.0.0.2"], f"{guarded.url}/admin/users", headers=alice))[0] == 200
    status, _, body = await _get(clients["127.0.0.3"], f"{guarded.url}/admin/users", headers=sync)
    assert status == 403
    assert json.loads(body)["error"] == "path_not_allowed"


async def test_anonymous_browser_gets_translated_pages(guarded: Served, clients: Clients) -> None:
    browser = {"Accept": "text/html", "Accept-Language": "nl-NL,nl;q=0.9"}
    status, _headers, page = await _get(
        clients["127.0.0.2"], f"{guarded.url}/admin/", headers=browser
    )
    assert status == 403
    assert "U hebt geen toegang tot deze pagina" in page
    status, _, page = await _get(clients["127.0.0.4"], f"{guarded.url}/contacts", headers=browser)
    assert status == 403
    assert "Toegang geweigerd vanaf dit IP-adres" in page
    english = {"Accept": "text/html"}
    status, _, page = await _get(clients["127.0.0.4"], f"{guarded.url}/contacts", headers=english)
    assert "Access denied from this IP address" in page
    assert (await _get(clients["127.0.0.5"], f"{guarded.url}/contacts", headers=browser))[0] == 200


@pytest.mark.parametrize(
    "path", ["/x/../admin/", "/%61dmin/", "//admin/", "/./admin/users", "/public/%2e%2e/admin/"]
)
async def test_path_tricks_are_judged_as_the_crm_would_see_them(
    guarded: Served, clients: Clients, path: str
) -> None:
    status, _, _ = await _get(
        clients["127.0.0.5"], f"{guarded.url}{path}", headers={"Accept": "application/json"}
    )
    assert status == 403


@pytest.mark.parametrize(
    "path",
    [
        "/admin%2fx",
        "/admin%5cx",
        "/admin;x/",
        "/%c0%ae%c0%ae/admin",
        "/a%00b",
        "/admin#/x",
        "/admin%23/x",
        "/../admin",
    ],
)
async def test_ambiguous_paths_are_refused_with_400(guarded: Served, path: str) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\n\r\n"
    raw = await send_raw(guarded.port, request.encode(), timeout=5)
    assert raw.startswith(b"HTTP/1.1 400"), raw[:100]
    assert b"path_ambiguous" in raw


async def test_the_judged_path_is_the_forwarded_path(guarded: Served) -> None:
    raw = await send_raw(
        guarded.port,
        b"GET /a/./b//c/../%7Ed?q=%2F.. HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        timeout=5,
    )
    assert raw.startswith(b"HTTP/1.1 200")
    # The path is canonical; the query is passed untouched.
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["raw_path"] == "/a/b/~d?q=%2F.."


async def test_ipv6_client(upstream: Served, start_gateway: GatewayFactory, tmp_path: Path) -> None:
    folder = tmp_path / "p6"
    write_policy(folder)
    gw = await start_gateway(upstream.url, f"policies: {folder}\n", host="::1")
    await gw.app[DURABLE].add_token("tok_alice", "alice", digest(ALICE_TOKEN), "", 0.0)
    await gw.app[GUARD].refresh_tokens()
    async with aiohttp.ClientSession() as http:
        status, _, body = await _get(
            http, f"{gw.url}/admin/", headers={"Authorization": f"Bearer {ALICE_TOKEN}"}
        )
    assert status == 200
    assert json.loads(body)["headers"]


async def test_revoked_token_is_refused_after_refresh(guarded: Served, clients: Clients) -> None:
    headers = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    assert (await _get(clients["127.0.0.3"], f"{guarded.url}/api/x", headers=headers))[0] == 200
    assert await guarded.app[DURABLE].revoke_token("tok_sync", 1.0)
    await guarded.app[GUARD].refresh_tokens()
    # Now unknown: still allowed from the integration network by api.unknown_tokens, so
    # judge it where unknown tokens may not come from.
    _status, _, body = await _get(clients["127.0.0.2"], f"{guarded.url}/api/x", headers=headers)
    assert json.loads(body)["error"] == "token_ip_not_allowed"


async def test_a_decision_remembered_for_a_token_ends_when_the_token_is_revoked(
    guarded: Served, clients: Clients
) -> None:
    """Decisions are remembered per worker by who asks, from where and what: the same
    request once its token is revoked is another question, answered afresh."""
    headers = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    url = f"{guarded.url}/admin/users"
    for _ in range(2):
        assert (await _get(clients["127.0.0.2"], url, headers=headers))[0] == 200
    assert await guarded.app[DURABLE].revoke_token("tok_alice", 1.0)
    await guarded.app[GUARD].refresh_tokens()
    status, _, body = await _get(clients["127.0.0.2"], url, headers=headers)
    assert (status, json.loads(body)["error"]) == (403, "token_ip_not_allowed")


async def test_a_remembered_decision_is_never_another_askers(
    guarded: Served, clients: Clients
) -> None:
    """Decisions are remembered by what decides them: the kind of asker (a token, nobody),
    whose, whether the request reads two ways, the address, the method and the path. The
    same path from the same address, asked in turn each way and again, gets each its own."""
    url = f"{guarded.url}/admin/users"
    office = clients["127.0.0.2"]
    alice = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    sync = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    overriding = {**alice, "X-HTTP-Method-Override": "DELETE"}
    for _ in range(2):
        assert (await _get(office, url, headers=alice))[0] == 200
        status, _, body = await _get(office, url)
        assert (status, "path_not_allowed") == (403, json.loads(body)["error"])
        status, _, body = await _get(office, url, headers=sync)  # sync's role: not from here
        assert (status, "ip_not_allowed") == (403, json.loads(body)["error"])
        status, _, body = await _get(office, url, headers=overriding)
        assert (status, "method_ambiguous") == (400, json.loads(body)["error"])
        assert (await _get(clients["127.0.0.3"], url, headers=alice))[0] == 403
        async with office.post(url, headers=alice) as r:
            assert r.status == 200


async def test_every_denial_is_audited_even_when_its_decision_is_remembered(
    guarded: Served, clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    for _ in range(3):
        assert (await _get(clients["127.0.0.4"], f"{guarded.url}/public"))[0] == 403
    out = capsys.readouterr().out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(e["event"], e["reason"]) for e in events] == [("ip.denied", "ip_denied")] * 3


async def test_reload_applies_to_the_next_request_and_broken_edits_keep_the_policy(
    guarded: Served, clients: Clients, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    guard = guarded.app[GUARD]
    alice = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    assert (await _get(clients["127.0.0.2"], f"{guarded.url}/admin/", headers=alice))[0] == 200
    folder = tmp_path / "policies"
    # A broken edit: the running policy stays, every problem is logged.
    write_policy(
        folder, POLICY.replace("alice: {roles: [admin]}", "alice: {roles: [nosuchrole], bogus: 1}")
    )
    caplog.set_level(logging.ERROR, logger="gateway.policy")
    assert await guard.reload("test") is False
    assert "nosuchrole" in caplog.text
    assert "bogus" in caplog.text
    assert (await _get(clients["127.0.0.2"], f"{guarded.url}/admin/", headers=alice))[0] == 200
    # A good edit that removes alice's access: refused at her next request.
    write_policy(folder, POLICY.replace("alice: {roles: [admin]}", "alice: {}"))
    assert await guard.reload("test") is True
    status, _, body = await _get(clients["127.0.0.2"], f"{guarded.url}/admin/", headers=alice)
    assert status == 403
    assert json.loads(body)["error"] == "path_not_allowed"


async def test_file_change_is_noticed_without_a_signal(
    guarded: Served, clients: Clients, tmp_path: Path
) -> None:
    """The running gateway's own watcher (it looks every 2 s) picks the edit up."""
    guard = guarded.app[GUARD]
    write_policy(
        tmp_path / "policies",
        POLICY.replace("blocked: [127.0.0.4/32]", "blocked: [127.0.0.5/32]"),
    )
    for _ in range(100):
        if "127.0.0.5/32" in str(guard.policy.networks.get("blocked")):
            break
        await asyncio.sleep(0.1)
    assert (await _get(clients["127.0.0.5"], f"{guarded.url}/contacts"))[0] == 403
    assert (await _get(clients["127.0.0.4"], f"{guarded.url}/contacts"))[0] == 200


async def test_trusted_proxy_forwarded_address_is_judged(
    upstream: Served, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "pt"
    write_policy(folder)
    gw = await start_gateway(upstream.url, f"policies: {folder}\ntrusted_proxies: [127.0.0.1/32]\n")
    async with aiohttp.ClientSession() as http:
        # Through the trusted proxy, the client is the right-most untrusted address.
        assert (await _get(http, f"{gw.url}/contacts", headers={"X-Forwarded-For": "127.0.0.4"}))[
            0
        ] == 403
        assert (
            await _get(
                http, f"{gw.url}/contacts", headers={"X-Forwarded-For": "127.0.0.4, 127.0.0.5"}
            )
        )[0] == 200
        assert (await _get(http, f"{gw.url}/contacts", headers={"X-Forwarded-For": "not-an-ip"}))[
            0
        ] == 400


async def _expecting(address: str, port: int, token: str) -> tuple[bytes, bytes]:
    """A POST that waits for 100 Continue before its 11-byte body: the answers' heads as they
    came, and the final answer's body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    try:
        writer.write(
            b"POST /api/contacts HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 11\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if head.startswith(b"HTTP/1.1 100 "):
            writer.write(b"hello world")
            await writer.drain()
            head += await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = re.search(rb"\r\ncontent-length: (\d+)", head, re.IGNORECASE)
        body = await reader.readexactly(int(length[1])) if length else b""
        return head, body
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_refused_request_is_answered_before_its_body_is_asked_for(
    guarded: Served,
) -> None:
    """Expect: 100-continue (RFC 9110 §10.1.1): a request the rules refuse gets its 403 as the
    first answer, so its client never sends the body; one they let through gets 100 Continue,
    sends its body and the CRM has it."""
    refused, body = await _expecting("127.0.0.2", guarded.port, SYNC_TOKEN)
    assert refused.startswith(b"HTTP/1.1 403 "), refused
    assert json.loads(body)["error"] == "ip_not_allowed"

    allowed, body = await _expecting("127.0.0.3", guarded.port, SYNC_TOKEN)
    assert allowed.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), allowed
    assert json.loads(body)["body_bytes"] == 11


async def test_a_long_path_is_decided_but_not_remembered(guarded: Served, clients: Clients) -> None:
    """The decision memo holds short paths only: long ones (up to the parser's line limit)
    would let anyone fill it with tens of MB per worker. Both are decided the same way."""
    guard = guarded.app[GUARD]
    headers = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    long_path = "/api/" + "x" * (MEMO_PATH + 1)
    for path in ("/api/contacts", long_path):
        before = len(guard._memo)
        for _ in range(2):
            status, _, body = await _get(
                clients["127.0.0.3"], f"{guarded.url}{path}", headers=headers
            )
            assert status == 200
            assert json.loads(body)["raw_path"] == path
        assert len(guard._memo) == before + (path != long_path)


# -- still_verified remembered per session and decision (issue 14) ----------------------------

VERIFY_POLICY = """
defaults: {interval: 1d, factors: [totp, recovery], reverify: 8h}
paths:
  - {path: /exports/**, allow: [authenticated], fresh: 15m, factors: [totp]}
  - {path: /**, allow: [authenticated]}
"""


async def test_a_remembered_verification_asks_exactly_when_still_verified_does(
    store: SqliteDurableStore, tmp_path: Path
) -> None:
    """Guard._still_verified keeps, per Who and Decision, when a verification is first asked
    for; asked again and again with the same two (as every request of a session is), at
    times around that moment and after it, before and after a policy reload that shortens
    `reverify`, it answers as still_verified does each time."""
    folder = tmp_path / "policies"
    write_policy(folder, VERIFY_POLICY)
    guard = Guard(str(folder), load_policies(folder), store, AuditTrail(store, SystemClock()))
    t, hour = 1_800_000_000.0, 3600.0
    whos = [
        Who(Kind.SESSION, "amy", verified=t),
        Who(Kind.SESSION, "amy", verified=t, verified_by=(("totp", t - 60),)),
        Who(Kind.SESSION, "amy", verified=t, chosen_interval=hour),
        Who(Kind.SESSION, "amy", verified=0.0),
        Who(Kind.TOKEN, "amy", token_known=True),
    ]
    moments = [t, t + 14 * 60, t - 60 + 15 * 60, t + hour - 0.001, t + hour, t + 8 * hour]
    asked = 0
    for policy in (VERIFY_POLICY, VERIFY_POLICY.replace("8h", "2h")):
        write_policy(folder, policy)
        view = PolicyView.of(load_policies(folder))
        for who in whos:
            for path in ("/contacts", "/exports/a"):
                ask = Request(Asks.CRM, "10.0.0.1", "GET", path)
                decision, _ = guard.decided(view, who, ask, False)
                for now in moments * 2:  # the second time from what was remembered
                    expected = still_verified(view, who, decision, now)
                    assert guard._still_verified(view, who, decision, now) == expected
                    asked += expected.action is not decision.action
    assert asked > 10  # challenges among them: reverify, fresh, the user's own hour
