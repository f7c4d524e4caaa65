"""For the detect-login and doctor flows: the commands run as an operator runs them (main()
in a thread beside this test's servers, stdin given), a deployment folder written the way
docs/front-of-your-crm.md says, and each test CRM's own sign-in done by a scripted browser
through a gateway (its forms fetched, its CSRF tokens sent back, its Origin sent)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from gateway.cli.main import main
from gateway.crypto import new_key_line
from tests.crms import json_crm, origin_crm, php_crm, two_step_crm
from tests.signin_kit import Browser, field

POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
paths:
  - {path: "/**", allow: [anyone]}
"""


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> Ran:
    """`crm-gateway ARGV` in this process (a thread of its own: the CRMs keep serving here),
    with `stdin` as its standard input (not a terminal)."""

    def call() -> int:
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            return main(list(argv))
        finally:
            sys.stdin = saved

    capsys.readouterr()
    code = await asyncio.to_thread(call)
    out, err = capsys.readouterr()
    return Ran(code, out, err)


def deployment(folder: Path, upstream: str, section: str, extra: str = "") -> Path:
    """gateway.yaml beside its key files (mode 0600), a policy folder and a store path: the
    detect-login section pasted at its end as printed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("session", "seal"):
        keys = folder / f"{name}.keys"
        keys.write_text(new_key_line("k1") + "\n")
        keys.chmod(0o600)
    (folder / "policies").mkdir(exist_ok=True)
    (folder / "policies" / "policy.yaml").write_text(POLICY)
    config = folder / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:8080\n"
        f"upstream:\n  url: {upstream}\n"
        "state:\n  durable: {type: sqlite, path: gateway.db}\n"
        "secrets:\n  session_keys: {file: session.keys}\n  seal_keys: {file: seal.keys}\n"
        "policies: policies\n"
        "logging: {access_log: false}\n"
        f"{extra}{section}"
    )
    return config


async def _post(
    b: Browser, path: str, *, data: dict[str, str] | None = None, body: object = None
) -> tuple[int, str]:
    """A browser's POST: its Origin is the site it is on (the gateway's address)."""
    headers = {"Origin": b.gw.url}
    if body is not None:
        headers["Content-Type"] = "application/json"
        data_out: object = json.dumps(body)
    else:
        data_out = data
    async with b.http.post(
        b.gw.url + path, data=data_out, headers=headers, allow_redirects=False
    ) as r:
        await r.read()
        return r.status, r.headers.get("Location", "")


async def php_sign_in(b: Browser, user: str, password: str) -> tuple[int, str]:
    status, html, _ = await b.get("/index.php?action=Login")
    assert status == 200, html[:300]
    form = {"module": "Users", "return_action": "Home", "login_language": "en_us"}
    form |= {"user_name": user, "username_password": password, "Login": "Log In"}
    return await _post(b, "/index.php?action=Login", data=form)


async def suite_sign_in(b: Browser, user: str, password: str) -> tuple[int, str]:
    """SuiteCRM's own form: posted to plain index.php, routed by its hidden fields."""
    status, html, _ = await b.get("/index.php?action=Login")
    assert status == 200 and 'name="action" value="Authenticate"' in html, html[:300]
    form = {"action": "Authenticate", "module": "Users", "return_action": "Home"}
    form |= {"login_language": "en_us", "user_name": user, "username_password": password}
    return await _post(b, "/index.php", data={**form, "Login": "Log In"})


async def json_sign_in(b: Browser, user: str, password: str) -> tuple[int, str]:
    status, _, _ = await b.get("/")
    assert status == 200
    return await _post(b, "/api/v1/auth/login", body={"email": user, "password": password})


async def two_step_sign_in(b: Browser, user: str, password: str) -> tuple[int, str]:
    status, html, _ = await b.get("/signin")
    assert status == 200, html[:300]
    status, location = await _post(
        b, "/signin", data={"_csrf": field(html, "_csrf"), "login": user}
    )
    assert (status, location) == (303, "/signin/password")
    status, html, _ = await b.get("/signin/password")
    assert status == 200, html[:300]
    form = {"_csrf": field(html, "_csrf"), "login": field(html, "login"), "password": password}
    return await _post(b, "/signin/password", data=form)


async def origin_sign_in(b: Browser, user: str, password: str) -> tuple[int, str]:
    status, html, _ = await b.get("/auth/login")
    assert status == 200, html[:300]
    form = {"_csrf": field(html, "_csrf"), "email": user, "password": password}
    return await _post(b, "/auth/login", data=form)


@dataclass(frozen=True)
class Shape:
    name: str
    app: Callable[[], web.Application]
    user: str
    password: str
    sign_in: Callable[[Browser, str, str], Awaitable[tuple[int, str]]]
    page: str  # a page of the CRM that names the signed-in user
    shows: str  # how it names them


SHAPES = {
    "php": Shape(
        "php", php_crm.php_crm_app, "jan", php_crm.USERS["jan"], php_sign_in,
        "/index.php?action=Home", "jan · <a",
    ),
    "suite": Shape(
        "suite", lambda: php_crm.php_crm_app(routed_by_form=True), "jan", php_crm.USERS["jan"],
        suite_sign_in, "/index.php?action=Home", "jan · <a",
    ),
    "json": Shape(
        "json", json_crm.json_crm_app, "mia@acme.example", json_crm.USERS["mia@acme.example"],
        json_sign_in, "/api/v1/me", '"email": "mia@acme.example"',
    ),
    "two-step": Shape(
        "two-step", two_step_crm.two_step_crm_app, "nora", two_step_crm.USERS["nora"],
        two_step_sign_in, "/home", "Signed in as nora",
    ),
    "origin": Shape(
        "origin", origin_crm.origin_crm_app, "quinn@firm.example",
        origin_crm.USERS["quinn@firm.example"], origin_sign_in, "/dashboard",
        "Hello quinn@firm.example",
    ),
}  # fmt: skip
