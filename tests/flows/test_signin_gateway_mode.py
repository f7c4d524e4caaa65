"""`login.mode: gateway`: our own login page and users file, the identity in a header the
client can never set itself, and the CLI that makes the hashes."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from gateway.crypto import hash_password, new_key_line, parse_keys, verify_password
from tests.conftest import Served
from tests.process import run_command
from tests.signin_kit import Browser, Browsers, SignInGateway, Start, field

POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  remember_device: off
users:
  erin: {enforcement: optional}
paths:
  - {path: /public/**, allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.yaml"
    path.write_text(
        f"Dora: '{hash_password('dora-password')}'\nerin: '{hash_password('erin-password')}'\n"
    )
    return path


@pytest.fixture
async def gw(upstream: Served, start: Start, users_file: Path) -> SignInGateway:
    login = (
        f"login:\n  mode: gateway\n  users_file: {users_file}\n  identity_header: X-Remote-User\n"
    )
    return await start(upstream.url, login=login, policy=POLICY)


async def sign_in(b: Browser, user: str, password: str) -> tuple[int, str]:
    status, html, _ = await b.get("/_gateway/login?next=/reports/q3")
    assert status == 200
    status, page, r = await b.post(
        "/_gateway/login",
        {
            "csrf": field(html, "csrf"),
            "next": field(html, "next"),
            "username": user,
            "password": password,
        },
    )
    return status, r.headers.get("Location", page)


def seen_headers(body: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        found.setdefault(name.lower(), []).append(value)
    return found


async def test_anonymous_browsers_are_sent_to_the_login_page(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    status, _, r = await b.get("/reports/q3?x=1")
    assert (status, r.headers["Location"]) == (
        303,
        "/_gateway/login?next=%2Freports%2Fq3%3Fx%3D1",
    )
    status, _, _ = await b.get("/public/logo.png")  # `anyone` paths pass without sign-in
    assert status == 200


async def test_password_then_totp_then_the_identity_header(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    assert await sign_in(b, "dora", "dora-password") == (303, "/_gateway/enrol")
    await b.enrol()
    r = await b.confirm_codes()
    assert r.headers["Location"] == "/reports/q3"
    status, body, _ = await b.get("/reports/q3")
    assert status == 200
    assert seen_headers(body)["x-remote-user"] == ["dora"]  # canonical: Dora is dora


async def test_wrong_password_is_refused_and_counted(gw: SignInGateway, browsers: Browsers) -> None:
    b = browsers(gw)
    for _ in range(4):
        status, page = await sign_in(b, "dora", "wrong-password")
        assert status == 401
        assert "not correct" in page
    status, page = await sign_in(b, "dora", "wrong-password")  # the fifth locks
    assert status == 429
    status, page = await sign_in(b, "dora", "dora-password")  # locked now
    assert status == 429
    status, page = await sign_in(b, "nobody", "whatever-pass")  # unknown: same answer
    assert status == 401


@pytest.mark.parametrize(
    "spelling", ["X-Remote-User", "x-remote-user", "X_Remote_User", "x-REMOTE_user"]
)
async def test_the_identity_header_from_a_client_never_reaches_the_crm(
    gw: SignInGateway, browsers: Browsers, spelling: str
) -> None:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw,
        raw.get(gw.url + "/public/x", headers={spelling: "admin"}) as r,
    ):
        headers = seen_headers(await r.text())
    assert "x-remote-user" not in headers
    assert "x_remote_user" not in headers
    # …and a signed-in user cannot add a second one either.
    b = browsers(gw, headers={"Accept": "text/html", spelling: "admin"})
    await sign_in(b, "erin", "erin-password")  # optional: straight in
    status, body, _ = await b.get("/reports/q3")
    assert status == 200
    found = seen_headers(body)
    assert found["x-remote-user"] == ["erin"]
    assert "x_remote_user" not in found


async def test_login_page_refuses_an_off_site_next(gw: SignInGateway, browsers: Browsers) -> None:
    b = browsers(gw)
    _status, html, _ = await b.get("/_gateway/login?next=//evil.example/")
    assert field(html, "next") == "/"


async def test_gateway_logout_ends_the_session(gw: SignInGateway, browsers: Browsers) -> None:
    b = browsers(gw)
    await sign_in(b, "erin", "erin-password")
    _, html, _ = await b.get("/_gateway/account")
    status, _, r = await b.post("/_gateway/logout", {"csrf": field(html, "csrf")})
    assert (status, r.headers["Location"]) == (303, "/_gateway/login")
    status, _, _ = await b.get("/reports/q3")
    assert status == 303


def test_hash_password_reads_stdin_and_prints_a_users_file_line() -> None:
    done = run_command("hash-password", "--user", "Frank", stdin="correct horse\n")
    assert done.returncode == 0, done.stderr
    name, hashed = done.stdout.strip().split(": ", 1)
    assert name == "frank"
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse")
    short = run_command("hash-password", stdin="short\n")
    assert short.returncode == 1
    assert "at least 8" in short.stderr


def test_keys_generate_prints_a_usable_key_line() -> None:
    done = run_command("keys", "generate", "--id", "k2")
    assert done.returncode == 0
    assert parse_keys(done.stdout).current[0] == "k2"


def test_run_refuses_more_workers_than_the_memory_store_can_serve(tmp_path: Path) -> None:
    for name in ("session", "seal"):
        (tmp_path / f"{name}.keys").write_text(new_key_line("k1") + "\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:1'}\n"
        f"state: {{durable: {{type: sqlite, path: {tmp_path}/g.db}}}}\n"
        "login: {path: /login, success: {cookie: sid}}\n"
        f"secrets: {{session_keys: {{file: {tmp_path}/session.keys}},"
        f" seal_keys: {{file: {tmp_path}/seal.keys}}}}\n"
    )
    done = run_command("run", "-c", str(config), "--workers", "2")
    assert done.returncode == 2
    assert "--workers: more than 1 needs state.shared type redis once login is on" in done.stderr
