"""`crm-gateway policy explain` and the running gateway answer every request the same way:
both ask gateway.signin.decision.decide (issue #13, item 1). A table of requests, each sent to a
real gateway (addresses given by a trusted proxy, tokens registered in its store), asked of
its forward-auth endpoint as nginx and as Caddy/Traefik ask it (issue #18), and asked of the
CLI, compared decision for decision."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import aiohttp
import pytest

from gateway.cli.main import main
from gateway.policy.tokens import digest
from gateway.web.guard import GUARD
from gateway.web.keys import DURABLE
from tests.conftest import GatewayFactory, Served

POLICY = """
networks:
  office: [10.0.0.0/8]
  blocked: [10.9.9.9/32]
organisation:
  deny: [blocked]
roles:
  admin: {networks: [office]}
  integration: {}
users:
  ann: {roles: [admin]}
  sync: {roles: [integration]}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: /reports/**, methods: [GET], allow: [role:admin]}
  - {path: /api/**, allow: [token]}
  - {path: /public/**, allow: [anyone]}
api:
  unknown_tokens: {networks: [office]}
"""
TOKENS = {"ann": "ann-token-0123456789abcdef", "sync": "sync-token-0123456789abcdef"}

CASES = [
    # (token owner or "" or "unknown", ip, method, path)
    ("", "10.1.1.1", "GET", "/public/x"),
    ("", "10.1.1.1", "GET", "/admin/x"),
    ("", "10.9.9.9", "GET", "/public/x"),
    ("", "10.1.1.1", "GET", "/nowhere"),
    ("ann", "10.1.1.1", "GET", "/admin/x"),
    ("ann", "203.0.113.5", "GET", "/admin/x"),
    ("ann", "10.1.1.1", "HEAD", "/reports/q3"),
    ("sync", "203.0.113.5", "GET", "/api/contacts"),
    ("sync", "203.0.113.5", "GET", "/admin/x"),
    ("unknown", "10.1.1.1", "GET", "/api/contacts"),
    ("unknown", "203.0.113.5", "GET", "/api/contacts"),
    ("", "10.1.1.1", "POST", "/public/x?_method=DELETE"),
    ("", "10.1.1.1", "GET", "/public/%2e%2e/admin/x"),
    ("", "10.1.1.1", "GET", "//admin/x"),
    ("", "10.1.1.1", "GET", "/public/..;/admin/x"),
    ("ann", "10.1.1.1", "DELETE", "/reports/q3"),
    ("sync", "10.1.1.1", "POST", "/api/contacts?_method=DELETE"),
]


@pytest.fixture
async def gw(upstream: Served, start_gateway: GatewayFactory, tmp_path: Path) -> Served:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(textwrap.dedent(POLICY))
    served = await start_gateway(
        upstream.url, f"policies: {folder}\ntrusted_proxies: [127.0.0.1/32]\nforward_auth: {{}}\n"
    )
    for user, token in TOKENS.items():
        await served.app[DURABLE].add_token(f"tok_{user}", user, digest(token), "", 0.0)
    await served.app[GUARD].refresh_tokens()
    return served


async def gateway_says(gw: Served, who: str, ip: str, method: str, path: str) -> str:
    headers = {"X-Forwarded-For": ip}
    if who:
        headers["Authorization"] = f"Bearer {TOKENS.get(who, 'not-a-registered-token-000')}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, gw.url + path, headers=headers, allow_redirects=False) as r,
    ):
        if r.status < 400:
            return "forward"
        body = json.loads(await r.text()) if method != "HEAD" else {}
        return f"deny ({body.get('error', r.status)})"


async def endpoint_says(
    gw: Served, who: str, ip: str, method: str, path: str, *, nginx: bool
) -> str:
    """The forward-auth endpoint's answer about the same request (the reason code it gives;
    nginx hears every refusal but a 401 as a 403, so the status is not compared)."""
    names = ("X-Original-Method", "X-Original-URI") if nginx else CADDY
    headers = {"X-Forwarded-For": ip, names[0]: method, names[1]: path}
    if who:
        headers["Authorization"] = f"Bearer {TOKENS.get(who, 'not-a-registered-token-000')}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(gw.url + "/_gateway/auth", headers=headers, allow_redirects=False) as r,
    ):
        if r.status == 200:
            return "forward"
        return f"deny ({json.loads(await r.text())['error']})"


CADDY = ("X-Forwarded-Method", "X-Forwarded-Uri")


def explain_says(
    policies: Path, who: str, ip: str, method: str, path: str, capsys: pytest.CaptureFixture[str]
) -> str:
    args = ["policy", "explain", "--policies", str(policies), "--ip", ip, "--method", method]
    args += ["--path", path]
    if who == "unknown":
        args += ["--unknown-token"]
    elif who:
        args += ["--user", who, "--token"]
    capsys.readouterr()
    assert main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("decision:"))
    verdict = line.removeprefix("decision: ")
    if verdict.startswith("forward"):
        return "forward"
    if verdict.startswith("deny (400 "):  # a path the gateway refuses before any rule
        return f"deny ({verdict.split()[2].rstrip('):')})"
    return verdict.split(":")[0]


@pytest.mark.parametrize(("who", "ip", "method", "path"), CASES)
async def test_explain_and_the_gateway_agree(
    gw: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    who: str,
    ip: str,
    method: str,
    path: str,
) -> None:
    seen = await gateway_says(gw, who, ip, method, path)
    told = explain_says(tmp_path / "policies", who, ip, method, path, capsys)
    assert told == seen, (who, ip, method, path)
    for nginx in (False, True):
        asked = await endpoint_says(gw, who, ip, method, path, nginx=nginx)
        assert asked == told, (who, ip, method, path, "nginx" if nginx else "caddy")
