"""A gateway with sign-in in front of a real CRM, a fake clock, and a scripted browser that
reads the gateway's real pages (forms, CSRF tokens, keys) the way a person would."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import NamedTuple

import aiohttp
import pyotp
import pytest
from aiohttp import web

from gateway.clock import FakeClock
from gateway.crypto import new_key_line
from gateway.demo.crm import build_crm_app
from gateway.model import AuditEvent
from gateway.stores import AuditQuery
from gateway.web.app import build_app
from gateway.web.keys import AUDIT, DURABLE
from gateway.web.signin import SIGNIN, SignIn
from tests.conftest import Served, gateway_config, serve

GATEWAY_COOKIE = "crm_gateway"
CRM_COOKIE = "crm_session"  # the demo CRM's session cookie

DEMO_LOGIN = """\
login:
  mode: upstream
  path: /login
  username_field: username
  success: {status: [302], cookie: crm_session}
  logout: {path: /logout, method: POST}
"""

# Sessions that idle for hours in a story: only `reverify` (or the interval) may end a
# verification, never the idle or absolute timeout.
LONG_SESSIONS = "sessions: {idle_timeout: 12h, absolute_timeout: 24h}\n"

DEMO_POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  remember_device: 30d
users:
  bob: {interval: 1d}
  carol: {enforcement: optional}
  dave: {enforcement: {required_from: 2027-01-15}}
paths:
  - {path: "/**", allow: [anyone]}
"""


def write_keys(tmp_path: Path, *, reuse: bool = False) -> str:
    for name in ("session", "seal"):
        path = tmp_path / f"{name}.keys"
        if not (reuse and path.exists()):
            path.write_text(new_key_line("k1") + "\n")
    return (
        "secrets:\n"
        f"  session_keys: {{file: {tmp_path}/session.keys}}\n"
        f"  seal_keys: {{file: {tmp_path}/seal.keys}}\n"
    )


@dataclass
class SignInGateway:
    served: Served
    clock: FakeClock

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def signin(self) -> SignIn:
        return self.served.app[SIGNIN]


async def start_signin_gateway(
    upstream_url: str,
    tmp_path: Path,
    *,
    login: str = DEMO_LOGIN,
    policy: str = DEMO_POLICY,
    extra: str = "",
    upstream_extra: str = "",
    clock: FakeClock | None = None,
    reuse_keys: bool = False,
) -> SignInGateway:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "policy.yaml").write_text(policy)
    text = f"{login}{write_keys(tmp_path, reuse=reuse_keys)}policies: {folder}\n{extra}"
    config = gateway_config(upstream_url, tmp_path, text, upstream_extra)
    clock = clock or FakeClock(1_800_000_000.0)
    served = await serve(build_app(config, clock=clock), handler_cancellation=True)
    return SignInGateway(served, clock)


def field(html: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert found, f"no field {name!r} in page"
    return unescape(found.group(1))


class Browser:
    """One browser: its own cookie jar, following nothing on its own."""

    def __init__(self, gw: SignInGateway, *, headers: dict[str, str] | None = None) -> None:
        self.gw = gw
        self.jar = aiohttp.CookieJar(unsafe=True)
        self.http = aiohttp.ClientSession(
            cookie_jar=self.jar,
            headers=headers or {"Accept": "text/html"},
            # A gateway that never answers fails the test in seconds, not aiohttp's 5 minutes.
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self.prefix = "/_gateway/"

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.gw.url + path, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def post(
        self, path: str, data: dict[str, str]
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(self.gw.url + path, data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r

    def cookie(self, name: str) -> str | None:
        for cookie in self.jar:
            if cookie.key == name:
                return cookie.value
        return None

    async def crm_login_form(
        self, user: str, password: str, next_path: str = "/contacts"
    ) -> dict[str, str]:
        """The demo CRM's own login form, fetched through the gateway and filled in."""
        status, html, _ = await self.get("/login")
        assert status == 200
        return {
            "csrf_token": field(html, "csrf_token"),
            "username": user,
            "password": password,
            "next": next_path,
        }

    async def crm_login(self, user: str, password: str, next_path: str = "/contacts") -> str:
        """The demo CRM's own form, through the gateway; returns where the gateway sends us."""
        form = await self.crm_login_form(user, password, next_path)
        status, _, r = await self.post("/login", form)
        assert status in (302, 303), status
        return r.headers["Location"]

    async def enrol(self, name: str = "Phone") -> tuple[str, list[str]]:
        """Enrol from the text key; save the recovery codes. Returns (secret, codes)."""
        status, html, _ = await self.get(f"{self.prefix}enrol")
        assert status == 200, html[:500]
        key = re.search(r'id="secret-key"><code>([^<]+)</code>', html)
        assert key
        secret = key.group(1).replace(" ", "")
        self.enrolment_code = self.code(secret)  # kept: a replay test posts it again
        status, _, r = await self.post(
            f"{self.prefix}enrol",
            {"csrf": field(html, "csrf"), "name": name, "code": self.enrolment_code},
        )
        assert status == 303, status
        assert r.headers["Location"] == f"{self.prefix}recovery-codes"
        status, html, _ = await self.get(f"{self.prefix}recovery-codes")
        codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", html)
        assert len(codes) == 10
        self.last_page = html
        return secret, codes

    async def confirm_codes(self) -> aiohttp.ClientResponse:
        status, _, r = await self.post(
            f"{self.prefix}recovery-codes", {"csrf": field(self.last_page, "csrf"), "saved": "1"}
        )
        assert status == 303
        return r

    def code(self, secret: str, offset: int = 0) -> str:
        return pyotp.TOTP(secret).at(self.gw.clock.now() + offset)

    async def answer(
        self, code: str, *, factor: str = "totp", remember: bool = False
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        status, html, _ = await self.get(f"{self.prefix}challenge?factor={factor}")
        assert status in (200, 429), (status, html[:300])
        data = {"csrf": field(html, "csrf"), "factor": factor, "code": code}
        if remember:
            data["remember"] = "1"
        return await self.post(f"{self.prefix}challenge", data)


# -- shared by the attack and regression suites -------------------------------------------------


class Arrived(NamedTuple):
    method: str
    path: str
    cookies: dict[str, str]


ARRIVED = web.AppKey("arrived", list[Arrived])


@web.middleware
async def note_arrivals(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request.app[ARRIVED].append(Arrived(request.method, request.path, dict(request.cookies)))
    return await handler(request)


def noted_demo_crm() -> web.Application:
    """The demo CRM, noting every request that reached it in app[ARRIVED], so "the CRM never
    saw it" is checked, not assumed."""
    app = build_crm_app()
    app[ARRIVED] = []
    app.middlewares.append(note_arrivals)
    return app


async def noted_crm() -> AsyncIterator[Served]:
    """A fixture body (suites register it as their `crm`): the noting demo CRM, served."""
    served = await serve(noted_demo_crm())
    yield served
    await served.runner.cleanup()


async def gateway_in_front(crm: Served, start: Start) -> SignInGateway:
    """A fixture body (suites register it as their `gw`): a gateway in front of `crm`."""
    return await start(crm.url)


@contextlib.asynccontextmanager
async def post_chunked(
    b: Browser, path: str, body: bytes, size: int
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST a form in `size`-byte chunks: no Content-Length, Transfer-Encoding chunked."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i : i + size]

    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with b.http.post(
        b.gw.url + path, data=chunks(), headers=headers, allow_redirects=False
    ) as r:
        yield r


async def audit_trail(served: Served, *names: str) -> list[AuditEvent]:
    """The audit events of these names (`admin.*` patterns too) once the gateway's pending
    batch is written, oldest first."""
    await served.app[AUDIT].flush()
    return [event for _, event in await served.app[DURABLE].audit_events(AuditQuery(names=names))]


async def notices_sent(gw: SignInGateway, user: str) -> None:
    """Wait for the notices to `user` the gateway sends in the background: each goes by a
    task of its own named `notice to <user>` (done already, or awaited here to its end)."""
    sending = [t for t in gw.signin.tasks.running if t.get_name() == f"notice to {user}"]
    if sending:
        await asyncio.wait(sending)


def posts_to_login(crm: Served) -> list[Arrived]:
    return [a for a in crm.app[ARRIVED] if (a.method, a.path) == ("POST", "/login")]


def set_cookie_names(r: aiohttp.ClientResponse) -> set[str]:
    return {c.split("=", 1)[0].strip() for c in r.headers.getall("Set-Cookie", [])}


def wrong_codes(b: Browser, secret: str, n: int) -> list[str]:
    """`n` six-digit codes that no step the gateway accepts right now would produce."""
    near = {b.code(secret, offset) for offset in (-60, -30, 0, 30, 60)}
    return [c for c in (f"{i:06d}" for i in range(n + len(near))) if c not in near][:n]


def wrong_code(b: Browser, secret: str) -> str:
    return wrong_codes(b, secret, 1)[0]


async def challenge_csrf(b: Browser, factor: str = "totp") -> str:
    status, html, _ = await b.get(f"/_gateway/challenge?factor={factor}")
    assert status == 200, status
    return field(html, "csrf")


Start = Callable[..., Awaitable[SignInGateway]]
Browsers = Callable[..., Browser]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts gateways (each with its own keys, store and policy folder); stops them all."""
    started: list[SignInGateway] = []

    async def make(
        upstream_url: str,
        *,
        login: str = DEMO_LOGIN,
        policy: str = DEMO_POLICY,
        extra: str = "",
        upstream_extra: str = "",
        clock: FakeClock | None = None,
    ) -> SignInGateway:
        folder = tmp_path / f"gw{len(started)}"
        folder.mkdir()
        gw = await start_signin_gateway(
            upstream_url,
            folder,
            login=login,
            policy=policy,
            extra=extra,
            upstream_extra=upstream_extra,
            clock=clock,
        )
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.served.runner.cleanup()


@pytest.fixture
async def browsers() -> AsyncIterator[Browsers]:
    made: list[Browser] = []

    def make(gw: SignInGateway, *, headers: dict[str, str] | None = None) -> Browser:
        b = Browser(gw, headers=headers)
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


async def enrolled(
    b: Browser, user: str = "alice", password: str = "alice-demo"
) -> tuple[str, list[str]]:
    """A first sign-in: the CRM's login, enrolment, codes saved. (secret, recovery codes)"""
    assert await b.crm_login(user, password) == "/_gateway/enrol"
    secret, codes = await b.enrol()
    r = await b.confirm_codes()
    assert r.headers["Location"] == "/contacts"
    return secret, codes


class Challenged(NamedTuple):
    browser: Browser  # has passed alice's password only
    csrf: str  # the challenge form's token
    secret: str  # her authenticator's
    codes: list[str]  # her recovery codes


async def at_the_challenge(
    gw: SignInGateway, browsers: Browsers, *, later: float = 60, factor: str = "totp"
) -> Challenged:
    """alice enrols in one browser; `later` seconds on, another browser passes her password
    and stands at the challenge for `factor`."""
    secret, codes = await enrolled(browsers(gw))
    gw.clock.advance(later)
    b = browsers(gw)
    assert await b.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    return Challenged(b, await challenge_csrf(b, factor), secret, codes)
