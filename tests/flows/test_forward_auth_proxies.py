"""Forward auth for real: nginx and Caddy (Debian's packages) started from deploy/forward-auth/
as docs/deployment.md shows them, in front of the demo CRM (or the echo CRM), asking a real
gateway's `/_gateway/auth`. A person signs in in headless Chromium through each; API tokens
come from an allowed and a refused address; a forged original URI is refused; path tricks
never reach a path the proxy mode refuses; the CRM notes every request it received."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pyotp
import pytest
from playwright.async_api import Browser, Page, expect

from gateway.crypto import hash_password
from gateway.policy.tokens import digest
from gateway.web.guard import GUARD
from gateway.web.keys import DURABLE
from tests import browser as chromium
from tests.conftest import Served, send_raw
from tests.front_proxies import DEPLOY, PROXIES, FrontProxy, start_proxy
from tests.signin_kit import ARRIVED, Start, noted_crm

browser = chromium.browser  # the fixture, by name
crm = pytest.fixture(name="crm")(noted_crm)  # the demo CRM, noting what reached it

FORWARD_AUTH = "forward_auth: {}\ntrusted_proxies: [127.0.0.1/32]\n"
POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
networks:
  office: [127.0.0.1/32]
roles:
  admin: {}
users:
  alice: {roles: [admin]}
  bob: {networks: [office]}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: /api/**, allow: [token]}
  - {path: "/**", allow: [anyone]}
"""
FrontStarter = Callable[[int, int], FrontProxy]


@pytest.fixture(params=sorted(PROXIES))
def front(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FrontStarter]:
    """Starts the proxy of this run (nginx, then Caddy) before a gateway and a CRM."""
    started: list[FrontProxy] = []

    def start(gateway_port: int, crm_port: int) -> FrontProxy:
        folder = tmp_path / f"{request.param}-{len(started)}"
        proxy = start_proxy(request.param, folder, gateway_port, crm_port)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def arrived_paths(crm: Served) -> list[str]:
    return [a.path for a in crm.app[ARRIVED]]


async def raw_get(proxy: FrontProxy, target: str, extra: str = "") -> tuple[int, bytes]:
    """`GET target` written byte for byte (no client library would keep `..`): status, body."""
    host = proxy.url.removeprefix("http://")  # Caddy serves its site's host only
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    answer = await send_raw(proxy.port, request.encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def enrol_in_the_page(page: Page, now: float) -> str:
    """The enrolment page, as a person uses it with the text key: the key."""
    await page.get_by_text("Cannot scan the code?").click()
    key = (await page.locator("#secret-key").inner_text()).replace(" ", "")
    await page.get_by_label("A name for this authenticator").fill("My phone")
    await page.get_by_label("Enter the 6-digit code the app now shows").fill(
        pyotp.TOTP(key).at(now)
    )
    await page.get_by_role("button", name="Turn on").click()
    await expect(page).to_have_url(re.compile(r"/_gateway/recovery-codes$"))
    await page.get_by_label("I have saved these codes somewhere safe").check()
    await page.get_by_role("button", name="Continue").click()
    return key


async def crm_login(page: Page) -> None:
    await page.get_by_label("User name").fill("alice")
    await page.get_by_label("Password").fill("alice-demo")
    await page.get_by_role("button", name="Log in").click()


async def test_a_person_signs_in_with_the_crms_login_in_chromium_through_the_front_proxy(
    browser: Browser, crm: Served, start: Start, front: FrontStarter
) -> None:
    gw = await start(crm.url, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, crm.port)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        # The CRM itself asks for its login (nobody signed in passes); the login goes
        # through the gateway, which holds the CRM's cookies and asks for the factor.
        await page.goto(f"{proxy.url}/contacts")
        await expect(page).to_have_url(re.compile(r"/login\?next=/contacts$"))
        await crm_login(page)
        await expect(page).to_have_url(re.compile(r"/_gateway/enrol$"))
        key = await enrol_in_the_page(page, gw.clock.now())
        await expect(page).to_have_url(f"{proxy.url}/contacts")
        await expect(page.get_by_role("heading", name="Contacts")).to_be_visible()
        await expect(page.get_by_text("Ingrid Hansen")).to_be_visible()
        styled = await page.evaluate("getComputedStyle(document.body).fontFamily")
        assert "sans-serif" in styled  # the CRM's stylesheet passed the endpoint too
        crm_cookie = next(c for c in await context.cookies() if c["name"] == "crm_session")

        # Its logout (through the gateway) ends both sessions; the next sign-in asks a code.
        await page.get_by_role("button", name=re.compile("Log out")).click()
        await expect(page).to_have_url(re.compile(r"/login$"))
        gw.clock.advance(60)
        await page.goto(f"{proxy.url}/contacts")
        await crm_login(page)
        await expect(page).to_have_url(re.compile(r"/_gateway/challenge$"))
        await page.locator("#code").fill(pyotp.TOTP(key).at(gw.clock.now()))
        await page.locator("#code").press("Enter")
        await expect(page).to_have_url(f"{proxy.url}/contacts")
        await expect(page.get_by_text("Ingrid Hansen")).to_be_visible()

        # The CRM's session cookie alone, in another browser: never the CRM's pages. The
        # endpoint sends it to remove the cookie, and the CRM then asks for its login.
        stolen = await browser.new_context()
        # Copied field by field: playwright types a cookie read and a cookie to set apart (the
        # CRM's cookie is not partitioned, so partitionKey is all that is left out).
        await stolen.add_cookies(
            [
                {
                    "name": crm_cookie["name"],
                    "value": crm_cookie["value"],
                    "domain": crm_cookie["domain"],
                    "path": crm_cookie["path"],
                    "expires": crm_cookie["expires"],
                    "httpOnly": crm_cookie["httpOnly"],
                    "secure": crm_cookie["secure"],
                    "sameSite": crm_cookie["sameSite"],
                }
            ]
        )
        thief = await stolen.new_page()
        await thief.goto(f"{proxy.url}/contacts")
        await expect(thief).to_have_url(re.compile(r"/login\?next=/contacts$"))
        assert "crm_session" not in {c["name"] for c in await stolen.cookies()}
        await stolen.close()
    finally:
        await context.close()


async def test_gateway_login_in_chromium_through_the_front_proxy_names_the_user_to_the_crm(
    browser: Browser, upstream: Served, start: Start, front: FrontStarter, tmp_path: Path
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"erin: '{hash_password('erin-password')}'\n")
    policy = (
        "defaults: {interval: always, factors: [totp, recovery], enforcement: required}\n"
        "groups: {sales: {}}\nusers:\n  erin: {enforcement: optional, groups: [sales]}\n"
        'paths:\n  - {path: "/**", allow: [authenticated]}\n'
    )
    login = f"login:\n  mode: gateway\n  users_file: {users}\n"
    gw = await start(upstream.url, login=login, policy=policy, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, upstream.port)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{proxy.url}/reports/q3?x=1")
        await expect(page).to_have_url(re.compile(r"/_gateway/login\?next=%2Freports%2Fq3"))
        await page.get_by_label("User name").fill("erin")
        await page.get_by_label("Password").fill("erin-password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{proxy.url}/reports/q3?x=1")
        seen = json.loads(await page.locator("body").inner_text())
        headers = {name.lower(): value for name, value in seen["headers"]}
        assert (headers["remote-user"], headers["remote-groups"]) == ("erin", "sales")
        assert seen["raw_path"] == "/reports/q3?x=1"
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in await context.cookies())
    finally:
        await context.close()
    # The signed-in browser's cookies with identity headers of its own: nginx asks with them
    # and the endpoint refuses; Caddy removes them first (the Caddyfile's route) and the CRM
    # gets the gateway's alone. Either way the CRM never sees the client's.
    spoofed = {"Cookie": cookie, "Remote-User": "admin", "Remote-Groups": "admins"}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(f"{proxy.url}/reports/q3", headers=spoofed) as r,
    ):
        if proxy.name == "nginx":
            assert r.status == 403
            assert r.headers["Content-Type"].startswith("application/json")
            assert (await r.json())["error"] == "identity_header_sent"
        else:
            headers = {name.lower(): value for name, value in (await r.json())["headers"]}
            assert (headers["remote-user"], headers["remote-groups"]) == ("erin", "sales")


@pytest.fixture
def client_on() -> Callable[[str], aiohttp.ClientSession]:
    def make(address: str) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return make


async def test_an_api_token_passes_from_an_allowed_address_and_not_from_another(
    crm: Served,
    start: Start,
    front: FrontStarter,
    client_on: Callable[[str], aiohttp.ClientSession],
) -> None:
    gw = await start(crm.url, policy=POLICY, extra=FORWARD_AUTH)
    await gw.served.app[DURABLE].add_token("tok_bob", "bob", digest("demo-token-bob"), "", 0.0)
    await gw.served.app[GUARD].refresh_tokens()
    proxy = front(gw.served.port, crm.port)
    token = {"Authorization": "Bearer demo-token-bob"}
    async with client_on("127.0.0.1") as office, client_on("127.0.0.6") as elsewhere:
        async with office.get(f"{proxy.url}/api/contacts", headers=token) as r:
            assert r.status == 200
            assert "Ingrid Hansen" in {c["name"] for c in (await r.json())["contacts"]}
        # From 127.0.0.6, also claiming to be 127.0.0.1: the proxy says who it is. A POST
        # too (nginx asks for the refusal's JSON with a GET, without the body).
        for method, extra in (("GET", {}), ("GET", {"X-Forwarded-For": "127.0.0.1"}), ("POST", {})):
            async with elsewhere.request(
                method, f"{proxy.url}/api/contacts", headers=token | extra, json={"name": "x"}
            ) as r:
                assert r.status == 403
                assert r.headers["Content-Type"].startswith("application/json")
                assert (await r.json())["error"] == "ip_not_allowed"
    assert arrived_paths(crm).count("/api/contacts") == 1


async def test_a_forged_original_uri_is_refused_through_the_proxy_and_from_an_untrusted_peer(
    crm: Served,
    start: Start,
    front: FrontStarter,
    client_on: Callable[[str], aiohttp.ClientSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await start(crm.url, policy=POLICY, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, crm.port)
    forged = {"X-Original-URI": "/public/x", "X-Original-Method": "GET", "Accept": "*/*"}
    # nginx writes its own X-Original-URI (the path judged is /admin/x); Caddy passes the
    # client's beside its own X-Forwarded-Uri, and two names for one request are refused (a
    # 403 where an X-Original-* header is among them: all that nginx would understand).
    expected = (403, "path_not_allowed" if proxy.name == "nginx" else "forward_auth_headers")
    async with (
        client_on("127.0.0.1") as client,
        client.get(f"{proxy.url}/admin/x", headers=forged) as r,
    ):
        assert (r.status, (await r.json())["error"]) == expected
    # The endpoint itself is not served to clients through the proxy.
    async with (
        client_on("127.0.0.1") as client,
        client.get(f"{proxy.url}/_gateway/auth", headers=forged) as r,
    ):
        assert r.status == 404
    # Straight to the gateway, from an address that is not its trusted proxy.
    capsys.readouterr()
    async with (
        client_on("127.0.0.3") as peer,
        peer.get(f"{gw.url}/_gateway/auth", headers=forged) as r,
    ):
        assert (r.status, (await r.json())["error"]) == (403, "forward_auth_untrusted")
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["ip"]) for e in events] == [("forward_auth.untrusted", "127.0.0.3")]
    assert not [p for p in arrived_paths(crm) if p.startswith("/admin")]


ADMIN_TRICKS = [
    "/admin/x",
    "/%2e%2e/admin/x",
    "//admin/x",
    "/x/../admin/x",
    "/x/%2e%2e/admin/x",
    "/x/%2e%2e%2fadmin/x",
    "/x/..;/admin/x",
    "/admin;x/x",
    "/admin/x;jsessionid=1",
    "/%61dmin/x",
    "/x/..%2fadmin/x",
    "/x/..%5cadmin/x",
    "/./admin/x",
]


async def test_path_tricks_through_the_front_proxy_never_reach_a_path_the_rules_refuse(
    crm: Served, start: Start, front: FrontStarter
) -> None:
    gw = await start(crm.url, policy=POLICY, extra=FORWARD_AUTH)
    proxy = front(gw.served.port, crm.port)
    for target in ADMIN_TRICKS:
        status, body = await raw_get(proxy, target)
        assert 400 <= status < 500, (target, status, body[:300])
    assert not [p for p in arrived_paths(crm) if "admin" in p.lower()], arrived_paths(crm)
    # The CRM's own paths still pass: the refusals above are the rules, not a broken proxy.
    assert (await raw_get(proxy, "/hello"))[0] == 200


def test_the_deployment_guide_shows_the_very_files_these_tests_run() -> None:
    guide = (DEPLOY.parent.parent / "docs" / "deployment.md").read_text()
    for name in ("nginx.conf", "Caddyfile", "traefik.yaml"):
        assert (DEPLOY / name).read_text().rstrip("\n") in guide, name


def test_the_readme_quotes_the_very_files_these_tests_run() -> None:
    """The README's forward-auth section quotes both configs: each of its nginx and Caddy
    blocks is a piece of the file as it is, indentation included."""
    readme = (DEPLOY.parent.parent / "README.md").read_text()
    section = readme.split("\n## Keeping nginx or Caddy in front", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(nginx|caddy)\n(.*?)```", section, re.S)
    assert sorted({kind for kind, _ in blocks}) == ["caddy", "nginx"], blocks
    for kind, block in blocks:
        name = "nginx.conf" if kind == "nginx" else "Caddyfile"
        assert block in (DEPLOY / name).read_text(), (name, block[:200])
