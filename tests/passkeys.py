"""Passkeys in real headless Chromium: a gateway whose public_url is the address the browser
uses (http://localhost:PORT, a secure origin for WebAuthn; passkeys cannot belong to
127.0.0.1), virtual authenticators through the DevTools protocol's WebAuthn domain (Playwright's
CDP session), and what the gateway recorded (audit events)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, CDPSession, Page

from gateway.clock import FakeClock
from gateway.model import AuditEvent
from gateway.stores import AuditQuery
from gateway.web.app import build_app
from gateway.web.keys import AUDIT, DURABLE
from gateway.web.signin import SIGNIN, SignIn
from tests.conftest import Served, gateway_config
from tests.signin_kit import write_keys


@dataclass
class PasskeyGateway:
    served: Served
    clock: FakeClock
    policies: Path

    @property
    def url(self) -> str:
        """The address users type: public_url, the relying party's origin."""
        return f"http://localhost:{self.served.port}"

    @property
    def signin(self) -> SignIn:
        return self.served.app[SIGNIN]

    async def events(self, *names: str, user: str = "") -> list[AuditEvent]:
        """Audit events so far (what the gateway writes every few seconds, written now)."""
        await self.served.app[AUDIT].flush()
        found = await self.served.app[DURABLE].audit_events(AuditQuery(names=names, user=user))
        return [event for _, event in found]


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def serve_on(app: web.Application, sock: socket.socket) -> Served:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return Served(app, runner, "127.0.0.1", sock.getsockname()[1])


# (upstream_url, *, policy, login, extra) -> PasskeyGateway
StartPasskeys = Callable[..., Awaitable[PasskeyGateway]]


@pytest.fixture
async def start_passkeys(tmp_path: Path) -> AsyncIterator[StartPasskeys]:
    """Starts gateways at http://localhost:PORT (public_url), each with its own keys, store and
    policies; stops them all."""
    started: list[PasskeyGateway] = []

    async def make(
        upstream_url: str, *, policy: str, login: str, extra: str = ""
    ) -> PasskeyGateway:
        folder = tmp_path / f"gw{len(started)}"
        (folder / "policies").mkdir(parents=True)
        (folder / "policies" / "policy.yaml").write_text(policy)
        sock = bound_socket()
        text = (
            f"{login}{write_keys(folder)}policies: {folder / 'policies'}\n"
            f"public_url: http://localhost:{sock.getsockname()[1]}\n{extra}"
        )
        clock = FakeClock(1_800_000_000.0)
        served = await serve_on(
            build_app(gateway_config(upstream_url, folder, text), clock=clock), sock
        )
        gw = PasskeyGateway(served, clock, folder / "policies")
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.served.runner.cleanup()


class VirtualKey:
    """One virtual authenticator in a page's browser: a platform passkey (internal) or a
    security key (usb), with user verification (a fingerprint) unless told otherwise."""

    def __init__(self, cdp: CDPSession, authenticator_id: str) -> None:
        self.cdp = cdp
        self.id = authenticator_id

    @classmethod
    async def add(
        cls,
        context: BrowserContext,
        page: Page,
        *,
        transport: str = "internal",
        verified: bool = True,
    ) -> VirtualKey:
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        options = {
            "protocol": "ctap2",
            "transport": transport,
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": verified,
            "automaticPresenceSimulation": True,
        }
        added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
        return cls(cdp, added["authenticatorId"])

    async def credentials(self) -> list[dict[str, Any]]:
        found = await self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        return list(found["credentials"])

    async def add_credential(self, credential: dict[str, Any]) -> None:
        """A credential copied from another authenticator (its private key and counter)."""
        await self.cdp.send(
            "WebAuthn.addCredential", {"authenticatorId": self.id, "credential": credential}
        )

    async def clear(self) -> None:
        await self.cdp.send("WebAuthn.clearCredentials", {"authenticatorId": self.id})

    async def set_verified(self, verified: bool) -> None:
        await self.cdp.send(
            "WebAuthn.setUserVerified", {"authenticatorId": self.id, "isUserVerified": verified}
        )

    async def remove(self) -> None:
        await self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.id})


async def options(page: Page) -> dict[str, Any]:
    """The WebAuthn options the server put in the page."""
    found = await page.get_attribute("form.webauthn", "data-options")
    assert found
    return dict(json.loads(found))


async def set_options(page: Page, changed: dict[str, Any]) -> None:
    """What a tampered page (or a script injected into it) would hand the browser."""
    await page.eval_on_selector(
        "form.webauthn", "(form, text) => { form.dataset.options = text; }", json.dumps(changed)
    )


async def rewrite_options(page: Page, old: str, new: str) -> None:
    """What a tampered page (or a script injected into it) would hand the browser: the
    server's options with `old` replaced by `new`."""
    await page.eval_on_selector(
        "form.webauthn",
        "(form, [a, b]) => { form.dataset.options = form.dataset.options.split(a).join(b); }",
        [old, new],
    )
