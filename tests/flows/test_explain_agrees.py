"""`crm-gateway policy explain` and the running gateway answer every request the same way:
both ask gateway.signin.decision.decide (issue #13, item 1). A table of requests, each sent to a
real gateway (addresses given by a trusted proxy, tokens registered in its store), asked of
its forward-auth endpoint as nginx and as Caddy/Traefik ask it (issue #18), and asked of the
CLI, compared decision for decision: anonymous requests and API tokens first, then users
signed in with a real session (below)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.cli.main import main
from gateway.crypto import hash_password
from gateway.policy.tokens import digest
from gateway.web.guard import GUARD
from gateway.web.keys import CONFIG, DURABLE
from tests.conftest import GatewayFactory, Served
from tests.signin_kit import Browsers, SignInGateway, Start, field

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


# -- signed-in users ---------------------------------------------------------------------------
#
# The same comparison for sessions: users of different roles and groups sign in through the
# gateway's own login page (login.mode gateway) with a real TOTP code, then ask paths their role
# allows or refuses, paths that want a fresh factor, a factor of one kind, a passkey, and a
# request after their `reverify` time. `policy explain` cannot know a session's factors: it
# says what the path and the user's settings demand ("this path: totp passed within 15m",
# "verify again within a session: 8h"), and the session the test made meets it or not. The
# endpoint, asked as nginx and as Caddy, for a page load and for a script, and the standalone
# proxy (the same gateway, the same cookie) must give that answer.

SIGNED_IN_POLICY = """
networks:
  office: [10.0.0.0/8]
  blocked: [10.9.9.9/32]
organisation:
  deny: [blocked]
defaults: {interval: always, factors: [totp, recovery, webauthn], enforcement: required}
roles:
  admin: {networks: [office]}
  manager: {}
groups:
  sales: {}
users:
  ann: {roles: [admin]}
  mia: {roles: [manager], groups: [sales]}
  sam: {groups: [sales], reverify: 8h}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: /reports/**, methods: [GET], allow: [role:admin, role:manager]}
  - {path: /reports/**, allow: [role:admin]}
  - {path: /exports/**, allow: [group:sales], fresh: 15m}
  - {path: /vault/**, allow: [authenticated], factors: [totp]}
  - {path: /keys/**, allow: [role:admin], phishing_resistant: true}
  - {path: /public/**, allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""
PASSWORDS = {"ann": "ann-password-1", "mia": "mia-password-1", "sam": "sam-password-1"}
MINUTE, HOUR = 60.0, 3600.0

# (session, ip, method, path, seconds after the sign-in). A session is a user signed in with
# their app at the start ("sam/recovery": sam again, by a recovery code). Asked in this order,
# the clock only going forward.
SIGNED_IN_CASES = [
    ("ann", "10.1.1.1", "GET", "/admin/x", MINUTE),
    ("ann", "203.0.113.5", "GET", "/admin/x", MINUTE),
    ("ann", "10.9.9.9", "GET", "/public/x", MINUTE),
    ("ann", "10.1.1.1", "DELETE", "/reports/q3", MINUTE),
    ("ann", "10.1.1.1", "GET", "/exports/all", MINUTE),
    ("ann", "10.1.1.1", "GET", "/keys/signing", MINUTE),
    ("ann", "10.1.1.1", "GET", "/public/..;/admin/x", MINUTE),
    ("mia", "203.0.113.5", "GET", "/admin/x", MINUTE),
    ("mia", "203.0.113.5", "GET", "/reports/q3", MINUTE),
    ("mia", "203.0.113.5", "HEAD", "/reports/q3", MINUTE),
    ("mia", "203.0.113.5", "DELETE", "/reports/q3", MINUTE),
    ("mia", "203.0.113.5", "POST", "/reports/q3?_method=GET", MINUTE),
    ("mia", "203.0.113.5", "GET", "/exports/all", MINUTE),
    ("mia", "203.0.113.5", "GET", "/keys/signing", MINUTE),
    ("mia", "203.0.113.5", "GET", "/public/%2e%2e/admin/x", MINUTE),
    ("sam", "203.0.113.5", "GET", "/vault/x", MINUTE),
    ("sam/recovery", "203.0.113.5", "GET", "/vault/x", MINUTE),
    ("sam/recovery", "203.0.113.5", "GET", "/contacts", MINUTE),
    ("sam", "203.0.113.5", "GET", "/exports/all", MINUTE),
    ("mia", "203.0.113.5", "GET", "/exports/all", 20 * MINUTE),
    ("mia", "203.0.113.5", "GET", "/contacts", 20 * MINUTE),
    ("sam", "203.0.113.5", "GET", "/contacts", 20 * MINUTE),
    ("sam", "203.0.113.5", "GET", "/contacts", 9 * HOUR),
    ("sam", "203.0.113.5", "GET", "/admin/x", 9 * HOUR),
    ("mia", "203.0.113.5", "GET", "/contacts", 9 * HOUR),
]


@dataclass(frozen=True)
class SignedIn:
    user: str
    cookie: str
    factor: str  # the factor the session passed, at the sign-in


async def sign_in_with(
    gw: SignInGateway, browsers: Browsers, user: str, ip: str, recovery: list[str] | None = None
) -> tuple[SignedIn, list[str]]:
    """`user` through our login page from `ip` (a trusted proxy's X-Forwarded-For): enrolled
    with a TOTP app at a first sign-in, or, given the `recovery` codes enrolment showed,
    answering the challenge with one. (the session, the recovery codes)"""
    b = browsers(gw, headers={"Accept": "text/html", "X-Forwarded-For": ip})
    status, html, _ = await b.get("/_gateway/login?next=/contacts")
    assert status == 200
    form = {"csrf": field(html, "csrf"), "next": "/contacts", "username": user}
    status, _, r = await b.post("/_gateway/login", {**form, "password": PASSWORDS[user]})
    assert status == 303, (user, status)
    if recovery is None:
        assert r.headers["Location"] == "/_gateway/enrol", r.headers["Location"]
        _, recovery = await b.enrol()
        assert (await b.confirm_codes()).headers["Location"] == "/contacts"
        factor = "totp"  # enrolment passes the app's first code
    else:
        assert r.headers["Location"].startswith("/_gateway/challenge"), r.headers["Location"]
        status, _, r = await b.answer(recovery[0], factor="recovery")
        assert (status, r.headers["Location"]) == (303, "/contacts")
        factor = "recovery"
    cookie = "; ".join(f"{c.key}={c.value}" for c in b.jar)
    return SignedIn(user, cookie, factor), recovery


def explain_lines(policies: Path, user: str, ip: str, method: str, path: str) -> dict[str, str]:
    """`crm-gateway policy explain` for a session of `user`: its lines by what they say."""
    args = ["policy", "explain", "--policies", str(policies), "--ip", ip, "--method", method]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main([*args, "--path", path, "--user", user]) == 0
    lines = (x.partition(": ") for x in out.getvalue().splitlines() if not x.startswith(" "))
    return {what: said for what, _, said in lines}


def seconds(said: str) -> float:
    """`15m`, `8h`, `1d` as policy explain writes them; `never` and `in this session`: inf."""
    if said in ("never", "in this session"):
        return math.inf
    return float(said[:-1]) * {"m": 60, "h": 3600, "d": 86400}[said[-1]]


def expected_of(explained: dict[str, str], session: SignedIn, since: float) -> str:
    """What explain's verdict means for this session, `since` seconds after its factor."""
    verdict = explained["decision"]
    if not verdict.startswith("forward"):
        if verdict.startswith("deny (400 "):  # a path refused before any rule
            return f"deny ({verdict.split()[2].rstrip('):')})"
        return verdict.split(":")[0]
    if since >= seconds(explained["verify again within a session"]):
        return "challenge (reverify)"
    demand = explained.get("this path", "")
    if demand:  # "totp or recovery passed within 15m", "webauthn passed in this session"
        factors, _, window = demand.partition(" passed ")
        window = window.removeprefix("within ")
        kinds = factors.split(" or ")
        if (factors != "any factor" and session.factor not in kinds) or since >= seconds(window):
            return "challenge (fresh)"
    return f"forward as {session.user}"


async def endpoint_answers(
    gw: SignInGateway, session: SignedIn, ip: str, method: str, path: str, *, nginx: bool
) -> str:
    """The endpoint's answer as the front proxy would act on it, for a page load and for a
    script; they must say the same thing each in its own way."""
    names = ("X-Original-Method", "X-Original-URI") if nginx else CADDY
    sent = {"X-Forwarded-For": ip, names[0]: method, names[1]: path, "Cookie": session.cookie}
    page = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    script = {"Accept": "application/json", "Sec-Fetch-Mode": "cors"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        url = gw.url + "/_gateway/auth"
        async with http.get(url, headers={**sent, **page}, allow_redirects=False) as r:
            as_page = (r.status, r.headers.get("Location"), r.headers.get("Remote-User"))
            refused = r.headers.get("X-Gateway-Reason", "")
        async with http.get(url, headers={**sent, **script}, allow_redirects=False) as r:
            as_script = (r.status, r.headers.get("Remote-User"))
            body = await r.json() if r.status != 200 else {}
    if as_page == (200, None, session.user) and as_script == (200, session.user):
        return f"forward as {session.user}"
    if body.get("error") == "verification_required":
        assert as_script[0] == 401, as_script
        assert as_page[:2] == (401 if nginx else 302, "/_gateway/challenge"), as_page
        return f"challenge ({body['reason']})"
    # A refusal: 403 (nginx hears every refusal but a 401 as a 403), the same reason to both.
    assert as_page[2] is None and as_script[1] is None, (as_page, as_script)
    assert refused == body["error"], (refused, body)
    if nginx:
        assert as_page[0] == as_script[0] == 403, (as_page, as_script)
    return f"deny ({body['error']})"


async def proxy_answers(
    gw: SignInGateway, session: SignedIn, ip: str, method: str, path: str
) -> str:
    """The standalone proxy's answer to the same request from a script (JSON when refused)."""
    headers = {"X-Forwarded-For": ip, "Cookie": session.cookie, "Accept": "application/json"}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.request(method, gw.url + path, headers=headers, allow_redirects=False) as r,
    ):
        if r.status < 400:
            echoed = json.loads(await r.text()) if method != "HEAD" else {}
            seen = {k.lower(): v for k, v in echoed.get("headers", [])}
            return f"forward as {seen.get('remote-user', session.user)}"
        body = json.loads(await r.text()) if method != "HEAD" else {"error": "?"}
        if body["error"] == "verification_required":
            return f"challenge ({body['reason']})"
        return f"deny ({body['error']})"


async def test_explain_the_endpoint_and_the_proxy_agree_on_signed_in_users(
    upstream: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("".join(f"{u}: '{hash_password(p)}'\n" for u, p in PASSWORDS.items()))
    login = f"login:\n  mode: gateway\n  users_file: {users}\n"
    extra = (
        "forward_auth: {}\ntrusted_proxies: [127.0.0.1/32]\npublic_url: http://localhost:9\n"
        "sessions: {idle_timeout: 12h, absolute_timeout: 24h}\n"
    )
    gw = await start(upstream.url, login=login, policy=SIGNED_IN_POLICY, extra=extra)
    policies = Path(gw.served.app[CONFIG].policies)
    sessions: dict[str, SignedIn] = {}
    for user, ip in (("ann", "10.1.1.1"), ("mia", "203.0.113.5"), ("sam", "203.0.113.5")):
        sessions[user], codes = await sign_in_with(gw, browsers, user, ip)
    sessions["sam/recovery"], _ = await sign_in_with(gw, browsers, "sam", "203.0.113.5", codes)
    signed_in_at = gw.clock.now()
    disagreements, kinds = [], set()
    for label, ip, method, path, later in SIGNED_IN_CASES:
        gw.clock.advance(signed_in_at + later - gw.clock.now())
        session = sessions[label]
        explained = explain_lines(policies, session.user, ip, method, path)
        told = expected_of(explained, session, later)
        kinds.add(told.split()[0])
        answers = {
            "nginx": await endpoint_answers(gw, session, ip, method, path, nginx=True),
            "caddy": await endpoint_answers(gw, session, ip, method, path, nginx=False),
            "proxy": await proxy_answers(gw, session, ip, method, path),
        }
        if any(said != told for said in answers.values()):
            disagreements.append((label, ip, method, path, later, told, answers))
    assert disagreements == []
    assert kinds == {"forward", "deny", "challenge"}  # the table is not one-sided
