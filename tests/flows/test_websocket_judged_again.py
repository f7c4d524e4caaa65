"""An open WebSocket is judged again while it is open (issue 16): it closes, 1008 with the
reason, when its session's verification runs out (`reverify`, an interval chosen after it
opened, a `fresh` path), when the session signs out in another tab or is revoked by an
administrator (on another worker too), when its API token is revoked, and when a policy
reload refuses it; a socket within its time goes on, and the closing is audited. The real
gateway in front of the demo CRM (its /ws echoes; the echo upstream for API tokens), real
TOTP codes, a fake clock; what the relay sees at its next look (LOOK_EVERY) is waited for in
a bounded loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from gateway.admin.accounts import revoke_sessions
from gateway.model import AuditEvent
from gateway.policy.tokens import digest
from gateway.web.guard import GUARD
from gateway.web.keys import DURABLE
from gateway.web.socketwatch import LOOK_EVERY
from tests.conftest import GatewayFactory, Served
from tests.flows.test_forward_auth_signin import two_workers
from tests.flows.test_interval_choice import HOUR, POLICY, choose, crm, gw
from tests.redis_server import RedisServer
from tests.signin_kit import DEMO_LOGIN, Browsers, SignInGateway, Start, audit_trail, enrolled

__all__ = ["crm", "gw"]  # the fixtures, by name

WS = ("crm.v1",)  # the demo CRM's protocol


async def closed_by_the_gateway(
    ws: aiohttp.ClientWebSocketResponse,
) -> tuple[int, str | None]:
    """Wait for the close, a bounded number of looks: its code and reason."""
    for _ in range(int(10 * LOOK_EVERY)):  # ten looks' worth, a second at a time
        try:
            message = await ws.receive(timeout=1.0)
        except TimeoutError:
            continue
        assert message.type is WSMsgType.CLOSE, message
        return message.data, message.extra
    raise AssertionError("the socket was never closed")


async def echoes(ws: aiohttp.ClientWebSocketResponse, text: str) -> bool:
    await ws.send_str(text)
    message = await ws.receive(timeout=5)
    return message.type is WSMsgType.TEXT and message.data == f"echo: {text}"


async def closed_events(gw: SignInGateway | Served) -> list[AuditEvent]:
    return await audit_trail(gw.served if isinstance(gw, SignInGateway) else gw, "websocket.closed")


async def test_a_socket_within_its_time_goes_on(gw: SignInGateway, browsers: Browsers) -> None:
    """No false close: bob asks to be verified hourly; at 59 minutes his socket still echoes,
    through the relay's looks at his session (waited for: two of them)."""
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    assert await choose(b, "1h") == "/_gateway/account?interval_saved=1"
    async with b.http.ws_connect(f"{gw.url}/ws", protocols=WS) as ws:
        assert await echoes(ws, "at once")
        gw.clock.advance(HOUR - 60)
        for n in range(3):  # the frames straddle at least two looks
            assert await echoes(ws, f"still in time {n}")
            if n < 2:
                try:
                    message = await ws.receive(timeout=LOOK_EVERY)
                except TimeoutError:
                    continue
                raise AssertionError(f"nothing was sent, yet {message}")
    assert await closed_events(gw) == []


async def test_a_request_in_another_tab_keeps_the_socket_of_an_active_session_open(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    """The socket's deadline holds the session's idle end as last looked at; when it passes,
    the record is looked at once more before the socket is closed: a request in another tab
    (the same session) put it later, so the socket goes on. Past the new end, it closes."""
    idle = "sessions: {idle_timeout: 1h, absolute_timeout: 24h}\n"
    gw = await start(crm.url, login=DEMO_LOGIN, policy=POLICY, extra=idle)
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")  # bob: no reverify, a week's interval
    async with b.http.ws_connect(f"{gw.url}/ws", protocols=WS) as ws:
        assert await echoes(ws, "at once")
        gw.clock.advance(50 * 60)
        assert (await b.get("/contacts"))[0] == 200  # the other tab: idle end at 1h50
        gw.clock.advance(20 * 60)  # past the idle end the socket last saw
        assert await echoes(ws, "after the other tab's request")
        gw.clock.advance(HOUR)  # past the session's idle end
        await ws.send_str("idle too long")
        assert await closed_by_the_gateway(ws) == (WSCloseCode.POLICY_VIOLATION, "session_expired")


async def test_a_socket_is_closed_when_the_verification_runs_out(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    assert await choose(b, "1h") == "/_gateway/account?interval_saved=1"
    async with b.http.ws_connect(f"{gw.url}/ws", protocols=WS) as ws:
        assert await echoes(ws, "in time")
        gw.clock.advance(HOUR)
        # No frame sent: the relay's look closes it all the same.
        assert await closed_by_the_gateway(ws) == (WSCloseCode.POLICY_VIOLATION, "reverify_due")
    (event,) = await closed_events(gw)
    assert (event.outcome, event.user, event.path, event.reason) == (
        "refused",
        "bob",
        "/ws",
        "reverify_due",
    )
    # The page connects again: the upgrade is a request of a script, told where to verify.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await b.http.ws_connect(
            f"{gw.url}/ws", protocols=WS, headers={"Sec-Fetch-Mode": "websocket"}
        )
    assert refused.value.status == 401
    status, _, r = await b.get("/contacts")  # and a page goes to the challenge
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")


async def test_a_stricter_interval_chosen_in_another_tab_reaches_the_open_socket(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """The socket's session is read again at each look: bob's choice, made after the socket
    opened, holds for it (no frame sent: the look closes it)."""
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")  # the policy: no reverify, a week's interval
    async with b.http.ws_connect(f"{gw.url}/ws", protocols=WS) as ws:
        assert await echoes(ws, "no verification due")
        assert await choose(b, "1h") == "/_gateway/account?interval_saved=1"
        gw.clock.advance(HOUR)
        assert await closed_by_the_gateway(ws) == (WSCloseCode.POLICY_VIOLATION, "reverify_due")


FRESH_SOCKET = POLICY.replace(
    '  - {path: "/**"', '  - {path: /ws, allow: [authenticated], fresh: 15m}\n  - {path: "/**"'
)


async def test_a_socket_on_a_fresh_path_is_closed_when_its_factor_is_no_longer_fresh(
    crm: Served, start: Start, browsers: Browsers
) -> None:
    gw = await start(crm.url, login=DEMO_LOGIN, policy=FRESH_SOCKET)
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    async with b.http.ws_connect(f"{gw.url}/ws", protocols=WS) as ws:
        gw.clock.advance(14 * 60)
        assert await echoes(ws, "fresh for another minute")
        gw.clock.advance(60)
        await ws.send_str("stale")
        assert await closed_by_the_gateway(ws) == (WSCloseCode.POLICY_VIOLATION, "fresh_due")


async def test_a_socket_is_closed_when_the_session_signs_out_in_another_tab(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await enrolled(b, "bob", "bob-demo")
    async with b.http.ws_connect(f"{gw.url}/ws", protocols=WS) as ws:
        assert await echoes(ws, "signed in")
        await b.post("/logout", {})  # the other tab: the CRM's logout ends our session
        assert await closed_by_the_gateway(ws) == (WSCloseCode.POLICY_VIOLATION, "session_ended")
    assert [e.reason for e in await closed_events(gw)] == ["session_ended"]


async def test_a_socket_on_another_worker_is_closed_when_the_session_is_revoked(
    crm: Served, tmp_path: Path, browsers: Browsers, own_redis: RedisServer
) -> None:
    """`sessions revoke` (what the CLI calls) on one worker; the socket is on the other, which
    reads the revocation at its own look."""
    one, other = await two_workers(crm, tmp_path, own_redis.url, "1m")
    try:
        alice = browsers(one)
        await enrolled(alice)
        cookie = "; ".join(f"{c.key}={c.value}" for c in alice.jar)
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
            http.ws_connect(f"{other.url}/ws", protocols=WS, headers={"Cookie": cookie}) as ws,
        ):
            assert await echoes(ws, "on the other worker")
            one.clock.advance(1.0)  # a revocation ends the sessions made before it
            await revoke_sessions(one.served.app[DURABLE], "alice", one.clock.now())
            assert await closed_by_the_gateway(ws) == (WSCloseCode.POLICY_VIOLATION, "revoked")
        assert [e.reason for e in await closed_events(other)] == ["revoked"]
    finally:
        for gw in (one, other):
            await gw.served.runner.cleanup()


TOKEN_POLICY = """
users:
  sync: {}
paths:
  - {path: /**, allow: [token]}
api:
  tokens:
    - {header: Authorization, schemes: [Bearer]}
"""
TOKEN = "sync-token-0123456789abcdef"


async def token_gateway(upstream: Served, start_gateway: GatewayFactory, folder: Path) -> Served:
    """A gateway before the echo upstream whose policy (TOKEN_POLICY, in `folder`) lets the
    token of `sync`, TOKEN, anywhere."""
    folder.mkdir()
    (folder / "policy.yaml").write_text(TOKEN_POLICY)
    gw = await start_gateway(upstream.url, f"policies: {folder}\n")
    await gw.app[DURABLE].add_token("tok_sync", "sync", digest(TOKEN), "", 0.0)
    await gw.app[GUARD].refresh_tokens()
    return gw


@asynccontextmanager
async def token_socket(gw: Served) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A socket to `gw`'s /ws opened with TOKEN, once it has echoed a first frame."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{gw.url}/ws", headers=headers) as ws,
    ):
        assert await echoes(ws, "hello")
        yield ws


async def test_a_socket_opened_with_an_api_token_is_closed_when_the_token_is_revoked(
    upstream: Served, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await token_gateway(upstream, start_gateway, tmp_path / "policies")
    durable, guard = gw.app[DURABLE], gw.app[GUARD]
    async with token_socket(gw) as ws:
        await durable.revoke_token("tok_sync", 1.0)
        await guard.refresh_tokens()
        assert await closed_by_the_gateway(ws) == (WSCloseCode.POLICY_VIOLATION, "token_revoked")
    assert [e.reason for e in await closed_events(gw)] == ["token_revoked"]


async def test_a_socket_is_closed_when_a_policy_reload_refuses_it(
    upstream: Served, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "policies"
    gw = await token_gateway(upstream, start_gateway, folder)
    guard = gw.app[GUARD]
    async with token_socket(gw) as ws:
        closed = TOKEN_POLICY.replace(
            "{path: /**, allow: [token]}", "{path: /api/**, allow: [token]}"
        )
        (folder / "policy.yaml").write_text(closed)
        assert await guard.reload("test")
        assert await closed_by_the_gateway(ws) == (WSCloseCode.POLICY_VIOLATION, "denied")
