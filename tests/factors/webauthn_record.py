"""Records the WebAuthn answers tests/factors/test_webauthn.py verifies (webauthn_recorded.json):
real Chromium, a virtual authenticator (DevTools' WebAuthn domain), a page on
http://localhost:PORT, and options made by the fido2 library with known challenges. Not a
test: run it when the recording must change (`.venv/bin/python -m tests.factors.webauthn_record`).

What it records: alice's and bob's registrations; alice's sign-ins with counters 2 and 3 (user
verified), one with user verification off (its flag unset); bob's sign-in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from pathlib import Path
from typing import Any

from aiohttp import web
from fido2.server import Fido2Server
from fido2.utils import websafe_encode
from fido2.webauthn import (
    AttestationConveyancePreference,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    RegistrationResponse,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from playwright.async_api import Page, async_playwright

from gateway.factors.webauthn import user_handle
from tests.browser import CHROMIUM, LAUNCH_ARGS

OUT = Path(__file__).with_name("webauthn_recorded.json")

CREATE = """async (json) => {
  const options = PublicKeyCredential.parseCreationOptionsFromJSON(JSON.parse(json));
  return JSON.stringify((await navigator.credentials.create({publicKey: options})).toJSON());
}"""
GET = """async (json) => {
  const options = PublicKeyCredential.parseRequestOptionsFromJSON(JSON.parse(json));
  return JSON.stringify((await navigator.credentials.get({publicKey: options})).toJSON());
}"""


def challenge(label: str) -> bytes:
    """The challenge of one recorded ceremony: known, so a test can issue it again."""
    return hashlib.sha256(f"crm-gateway test challenge {label}".encode()).digest()


async def _register(page: Page, server: Fido2Server, user: str) -> tuple[dict[str, Any], Any]:
    entity = PublicKeyCredentialUserEntity(name=user, id=user_handle(user), display_name=user)
    options, state = server.register_begin(
        entity,
        resident_key_requirement=ResidentKeyRequirement.PREFERRED,
        user_verification=UserVerificationRequirement.PREFERRED,
        challenge=challenge(f"register {user}"),
    )
    answer = await page.evaluate(CREATE, json.dumps(dict(options)["publicKey"]))
    auth = server.register_complete(state, json.loads(answer))
    record = {"user": user, "challenge": websafe_encode(challenge(f"register {user}"))}
    return {**record, "response": json.loads(answer)}, auth.credential_data


async def _sign_in(
    page: Page, server: Fido2Server, label: str, credential: Any, uv: str
) -> dict[str, Any]:
    options, _ = server.authenticate_begin(
        [credential], UserVerificationRequirement(uv), challenge=challenge(label)
    )
    answer = await page.evaluate(GET, json.dumps(dict(options)["publicKey"]))
    return {
        "label": label,
        "challenge": websafe_encode(challenge(label)),
        "response": json.loads(answer),
    }


async def record() -> dict[str, Any]:
    async def recording_page(_: web.Request) -> web.Response:
        # async: aiohttp warns about a plain function as a handler (and 4.0 refuses it).
        return web.Response(text="<p>recording</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", recording_page)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    await web.SockSite(runner, sock).start()
    origin = f"http://localhost:{sock.getsockname()[1]}"
    server = Fido2Server(
        PublicKeyCredentialRpEntity(name="CRM Gateway", id="localhost"),
        AttestationConveyancePreference.NONE,
        verify_origin=origin.__eq__,
    )
    found: dict[str, Any] = {"origin": origin, "rp_id": "localhost", "signins": []}
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=list(LAUNCH_ARGS)
            )
            for user in ("alice", "bob"):
                context = await browser.new_context()
                page = await context.new_page()
                cdp = await context.new_cdp_session(page)
                await cdp.send("WebAuthn.enable")
                options = {
                    "protocol": "ctap2",
                    "transport": "usb",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
                added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
                await page.goto(origin + "/")
                registration, credential = await _register(page, server, user)
                found[f"register_{user}"] = registration
                if user == "alice":
                    for label in ("alice 1", "alice 2"):
                        found["signins"].append(
                            await _sign_in(page, server, label, credential, "preferred")
                        )
                    await cdp.send(
                        "WebAuthn.setUserVerified",
                        {"authenticatorId": added["authenticatorId"], "isUserVerified": False},
                    )
                    found["signins"].append(
                        await _sign_in(page, server, "alice unverified", credential, "discouraged")
                    )
                else:
                    found["signins"].append(
                        await _sign_in(page, server, "bob 1", credential, "preferred")
                    )
                await context.close()
            await browser.close()
    finally:
        await runner.cleanup()
    # The library reads back what it recorded: a recording that does not verify is no fixture.
    RegistrationResponse.from_dict(found["register_alice"]["response"])
    return found


if __name__ == "__main__":
    OUT.write_text(json.dumps(asyncio.run(record()), indent=1) + "\n")
    print(f"wrote {OUT}")
