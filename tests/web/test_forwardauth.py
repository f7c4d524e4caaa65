"""The forward-auth endpoint against a real gateway and the echo CRM, asked the way nginx and
Caddy/Traefik ask it, from trusted and untrusted loopback addresses: who may name a request,
which headers name it, and that its path is judged exactly as the standalone proxy judges the
same bytes (the same gateway answers both ways, compared case by case)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.policy.tokens import digest
from gateway.web.guard import GUARD
from gateway.web.keys import DURABLE
from tests.conftest import GatewayFactory, Served, send_raw

POLICY = """
networks:
  office: [10.1.0.0/16]
  integration: [10.2.0.0/16]
roles:
  admin: {networks: [office]}
  integration: {networks: [integration]}
users:
  sync: {roles: [integration]}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: /api/**, allow: [token]}
  - {path: /reports/**, methods: [GET], allow: [anyone]}
  - {path: /reports/**, methods: [POST], allow: [anyone]}
  - {path: /public/**, allow: [anyone]}
"""
SYNC_TOKEN = "sync-token-0123456789abcdef"
AUTH = "/_gateway/auth"
NGINX = ("X-Original-Method", "X-Original-URI")
CADDY = ("X-Forwarded-Method", "X-Forwarded-Uri")


@pytest.fixture
async def gw(upstream: Served, start_gateway: GatewayFactory, tmp_path: Path) -> Served:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(textwrap.dedent(POLICY))
    extra = f"policies: {folder}\ntrusted_proxies: [127.0.0.1/32]\nforward_auth: {{}}\n"
    served = await start_gateway(upstream.url, extra)
    await served.app[DURABLE].add_token("tok_sync", "sync", digest(SYNC_TOKEN), "", 0.0)
    await served.app[GUARD].refresh_tokens()
    return served


@pytest.fixture
async def untrusted() -> AsyncIterator[aiohttp.ClientSession]:
    """A client on 127.0.0.3: not in trusted_proxies."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def asked(names: tuple[str, str], method: str, target: str, **more: str) -> dict[str, str]:
    return {names[0]: method, names[1]: target, **more}


async def ask(
    http: aiohttp.ClientSession, gw: Served, headers: dict[str, str]
) -> tuple[int, dict[str, str], str]:
    async with http.get(gw.url + AUTH, headers=headers, allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.text()


def audit_lines(out: str, event: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, out.splitlines()) if e.get("event") == event]


async def test_a_trusted_proxy_is_answered_and_an_untrusted_peer_is_refused_and_audited(
    gw: Served,
    http: aiohttp.ClientSession,
    untrusted: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    open_page = asked(NGINX, "GET", "/public/x")
    assert (await ask(http, gw, open_page))[0] == 200
    capsys.readouterr()
    # The same question from 127.0.0.3, and a forged one naming an open page for /admin.
    status, headers, body = await ask(untrusted, gw, open_page)
    assert status == 403
    assert json.loads(body)["error"] == "forward_auth_untrusted"
    assert headers["X-Gateway-Reason"] == "forward_auth_untrusted"
    forged = asked(NGINX, "GET", "/public/../public/x", **{"X-Forwarded-For": "10.1.0.9"})
    assert (await ask(untrusted, gw, forged))[0] == 403
    events = audit_lines(capsys.readouterr().out, "forward_auth.untrusted")
    assert [(e["ip"], e["outcome"], e["reason"]) for e in events] == [
        ("127.0.0.3", "refused", "peer_not_trusted")
    ] * 2


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 400),  # nothing names the original request
        ({"X-Forwarded-Uri": "/public/x"}, 400),  # no method
        ({"X-Forwarded-Method": "GET"}, 400),  # no target
        ({"X-Forwarded-Method": "G T", "X-Forwarded-Uri": "/public/x"}, 400),
        # A client's X-Original-URI passed on by Caddy beside Caddy's own X-Forwarded-Uri.
        ({**asked(CADDY, "GET", "/admin/x"), "X-Original-URI": "/public/x"}, 403),
        ({**asked(NGINX, "GET", "/admin/x"), "X-Forwarded-Uri": "/public/x"}, 403),
        # One of them twice, in another spelling.
        ({**asked(CADDY, "GET", "/admin/x"), "X_Forwarded_Uri": "/public/x"}, 400),
    ],
)
async def test_an_original_request_named_badly_or_two_ways_is_refused(
    gw: Served, http: aiohttp.ClientSession, headers: dict[str, str], status: int
) -> None:
    got, answer_headers, body = await ask(http, gw, headers)
    assert (got, json.loads(body)["error"]) == (status, "forward_auth_headers")
    assert answer_headers["X-Gateway-Reason"] == "forward_auth_headers"


@pytest.mark.parametrize("header", ["Remote-User", "remote_user", "Remote-Groups"])
async def test_an_identity_header_from_the_client_is_refused(
    gw: Served, http: aiohttp.ClientSession, header: str
) -> None:
    status, _, body = await ask(http, gw, asked(CADDY, "GET", "/public/x", **{header: "admin"}))
    assert (status, json.loads(body)["error"]) == (400, "identity_header_sent")


async def test_an_allowed_request_gets_200_with_nothing_else(
    gw: Served, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await ask(http, gw, asked(CADDY, "GET", "/public/x?a=1"))
    assert (status, body) == (200, "")
    assert "Remote-User" not in headers
    assert headers["Cache-Control"] == "no-store"


async def test_a_token_passes_from_its_network_and_is_refused_elsewhere(
    gw: Served, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    token = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    allowed = asked(CADDY, "GET", "/api/contacts", **token, **{"X-Forwarded-For": "10.2.0.7"})
    assert (await ask(http, gw, allowed))[0] == 200
    capsys.readouterr()
    refused = {**allowed, "X-Forwarded-For": "203.0.113.9", "Accept": "text/html"}
    status, headers, body = await ask(http, gw, refused)
    assert status == 403
    assert headers["Content-Type"].startswith("application/json")  # never a page to a token
    assert json.loads(body)["error"] == "ip_not_allowed"
    [event] = audit_lines(capsys.readouterr().out, "token.denied")
    assert (event["ip"], event["path"], event["method"]) == ("203.0.113.9", "/api/contacts", "GET")
    assert event["details"] == {"rule": event["details"]["rule"], "via": "forward_auth"}
    # An API key in the original's query is found there, as the proxy mode finds it.
    unknown = asked(CADDY, "GET", "/api/contacts", **{"Authorization": "Bearer nobody-0000000"})
    assert (await ask(http, gw, unknown))[0] == 401


# Raw targets a client may send, judged by the proxy mode and by the endpoint. The CRM
# behind the front proxy receives these very bytes (nginx sends $request_uri on).
TRICKS = [
    # (target, whether it reaches /admin or reads two ways: refused for an anonymous client)
    ("/%2e%2e/admin/x", True),
    ("//admin/x", True),
    ("/admin/x;jsessionid=1", True),
    ("/public/..;/admin/x", True),
    ("/public/%2e%2e/admin/x", True),
    ("/public/%2e%2e%2fadmin/x", True),
    ("/public/.%2e/admin/x", True),
    ("/public/x/../../admin/x", True),
    ("/public/x%3b/../../admin", True),
    ("/%61dmin/x", True),
    ("/public/x%00", True),
    ("/public/x#/admin", True),
    ("/admin%2fx", True),
    ("/public//x", False),
    ("/public/./x", False),  # the endpoint refuses it: a dot segment (below)
    ("/admin/../public/x", False),  # judged /public/x; the front proxy sends it as it is
    ("/admin//../public/x", False),
    ("/admin/%2e%2e/public/x", False),
    ("/public/%252e%252e/admin", False),  # decoded once: a segment named %2e%2e
    ("/ADMIN/x", True),  # case-sensitive rules: no rule for /ADMIN (path_no_rule)
    ("/public/x?next=/admin/x", False),  # the query is never the path
]


async def proxy_says(gw: Served, target: str) -> tuple[int, str]:
    """The standalone proxy's answer to the same bytes on the wire."""
    raw = await send_raw(
        gw.port, f"GET {target} HTTP/1.1\r\nHost: crm\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status == 200:
        return 200, "forward"
    return status, json.loads(body)["error"]


def dot_segment(target: str) -> bool:
    path = target.partition("?")[0].lower().replace("%2e", ".")
    return any(segment in (".", "..") for segment in path.split("/"))


@pytest.mark.parametrize(("target", "refused"), TRICKS)
async def test_the_original_path_is_judged_exactly_as_the_proxy_mode_judges_it(
    gw: Served, http: aiohttp.ClientSession, target: str, refused: bool
) -> None:
    """The same answer as the proxy mode, but where it would forward a path that held a dot
    segment: the proxy mode forwards the path it judged, a front proxy the target as written
    (and a CRM may read `/admin/../public/x` as /admin), so the endpoint refuses it."""
    expected = await proxy_says(gw, target)
    assert (expected[0] != 200) == refused, expected
    if expected[0] == 200 and dot_segment(target):
        expected = (400, "path_ambiguous")
    status, _, body = await ask(http, gw, asked(CADDY, "GET", target))
    assert (status, "forward" if status == 200 else json.loads(body)["error"]) == expected
    # nginx's auth_request knows 2xx, 401 and 403: the same reason, any other refusal a 403.
    status, headers, _ = await ask(http, gw, asked(NGINX, "GET", target))
    assert (status == 200) == (expected[0] == 200)
    if status != 200:
        assert status == (401 if expected[0] == 401 else 403)
        assert headers["X-Gateway-Reason"] == expected[1]


async def test_the_gateway_prefix_in_any_spelling_is_never_let_through_to_the_crm(
    gw: Served, http: aiohttp.ClientSession
) -> None:
    for target in ("/_gateway/healthz", "/_GATEWAY/account", "//_gateway/x", "/%5fgateway/x"):
        status, _, body = await ask(http, gw, asked(CADDY, "GET", target))
        assert (status, json.loads(body)["error"]) == (403, "reserved_prefix"), target


async def test_methods_are_judged_as_sent_and_a_body_that_may_override_is_refused(
    gw: Served, http: aiohttp.ClientSession
) -> None:
    # A rule for GET and one for POST on /reports: DELETE has none (path_no_rule).
    assert (await ask(http, gw, asked(CADDY, "GET", "/reports/q3")))[0] == 200
    status, _, body = await ask(http, gw, asked(CADDY, "DELETE", "/reports/q3"))
    assert (status, json.loads(body)["error"]) == (403, "path_no_rule")
    # A form POST could carry `_method=DELETE`: the proxy mode reads it, this endpoint never
    # sees a body, so it refuses one that could; a POST that carries no form passes.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = await ask(http, gw, asked(CADDY, "POST", "/reports/q3", **form))
    assert (status, json.loads(body)["error"]) == (400, "method_ambiguous")
    # So could a POST with no media type (Rack reads it as a form) and one that names JSON
    # anywhere in its type (Laravel reads it as JSON).
    for could in ("", "; charset=utf-8", "text/plain; x=/json", "application/vnd.api+json"):
        typed = {"Content-Type": could} if could else {}
        status, _, body = await ask(http, gw, asked(CADDY, "POST", "/reports/q3", **typed))
        assert (status, json.loads(body)["error"]) == (400, "method_ambiguous"), could
    octets = {"Content-Type": "application/octet-stream"}
    assert (await ask(http, gw, asked(CADDY, "POST", "/reports/q3", **octets)))[0] == 200
    # The override in the original's query or a header: refused as the proxy mode refuses it.
    status, _, body = await ask(http, gw, asked(CADDY, "POST", "/reports/q3?_method=DELETE"))
    assert (status, json.loads(body)["error"]) == (400, "method_ambiguous")
    override = {"X-HTTP-Method-Override": "DELETE"}
    assert (await ask(http, gw, asked(CADDY, "GET", "/public/x", **override)))[0] == 400


async def test_without_the_forward_auth_section_there_is_no_endpoint(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    plain = await start_gateway(upstream.url, "trusted_proxies: [127.0.0.1/32]\n")
    status, _, body = await ask(http, plain, asked(CADDY, "GET", "/public/x"))
    assert (status, json.loads(body)["error"]) == (404, "not_found")


async def test_a_header_that_is_not_utf8_is_a_refusal_nginx_can_pass_on(gw: Served) -> None:
    """The gateway refuses such a header before the endpoint runs (400 header_not_utf8);
    nginx, which copies the client's raw bytes into X-Original-URI, would make its own 500 of
    any answer but 2xx, 401 and 403: it hears 403 with the reason, Caddy's names the 400."""
    for names, status in ((NGINX, 403), (CADDY, 400)):
        head = (
            f"GET {AUTH} HTTP/1.1\r\nHost: crm.test\r\n{names[0]}: GET\r\n".encode()
            + f"{names[1]}: ".encode()
            + b"/admin\xff/x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        )
        top, _, body = (await send_raw(gw.port, head)).partition(b"\r\n\r\n")
        assert top.split(b" ", 2)[1] == str(status).encode(), (names, top)
        assert b"\r\nX-Gateway-Reason: header_not_utf8" in top or status == 400, top
        assert json.loads(body)["error"] == "header_not_utf8"
