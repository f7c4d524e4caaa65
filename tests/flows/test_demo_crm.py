"""A person and an integration using the demo CRM through the gateway, end to end."""

from __future__ import annotations

import hashlib
import io
import os
import re

import aiohttp
from aiohttp import WSMsgType
from yarl import URL

from tests.conftest import GatewayFactory, Served


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


async def _login(
    http: aiohttp.ClientSession, base: str, user: str, password: str
) -> aiohttp.ClientResponse:
    async with http.get(f"{base}/login") as r:
        token = _csrf(await r.text())
    async with http.post(
        f"{base}/login",
        data={"csrf_token": token, "username": user, "password": password, "next": "/contacts"},
        allow_redirects=False,
    ) as r:
        await r.read()
        return r


async def test_browser_session_login_form_logout(
    crm: Served, start_gateway: GatewayFactory
) -> None:
    gw = await start_gateway(crm.url)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{gw.url}/contacts", allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == "/login?next=/contacts"
        r = await _login(http, gw.url, "alice", "wrong")
        assert r.status == 200  # the CRM shows its form again
        r = await _login(http, gw.url, "alice", "alice-demo")
        assert r.status == 302
        assert r.headers["Location"] == "/contacts"  # relative, passed as the CRM sent it
        assert "crm_session" in {c.key for c in jar}
        async with http.get(f"{gw.url}/contacts/new") as r:
            token = _csrf(await r.text())
        async with http.post(
            f"{gw.url}/contacts",
            data={"csrf_token": token, "name": "Kari Nordmann", "company": "AS"},
        ) as r:
            assert r.status == 200
            assert "Kari Nordmann" in await r.text()
            assert r.url.path == "/contacts"
        async with http.post(f"{gw.url}/logout", allow_redirects=False) as r:
            assert r.status == 302
        async with http.get(f"{gw.url}/contacts", allow_redirects=False) as r:
            assert r.status == 302


async def test_api_token_requests_pass_untouched(
    crm: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(crm.url)
    headers = {"Authorization": "Token demo-token-bob"}
    async with http.post(
        f"{gw.url}/api/contacts", json={"name": "API Contact"}, headers=headers
    ) as r:
        assert r.status == 201
    async with http.get(f"{gw.url}/api/contacts", headers=headers) as r:
        assert r.status == 200
        assert "API Contact" in [c["name"] for c in (await r.json())["contacts"]]
    async with http.get(f"{gw.url}/api/contacts", headers={"Authorization": "Token nope"}) as r:
        assert r.status == 401
        assert r.headers["Content-Type"].startswith("application/json")


async def test_file_upload_and_download_round_trip(
    crm: Served, start_gateway: GatewayFactory
) -> None:
    gw = await start_gateway(crm.url)
    blob = os.urandom(5 * 1024 * 1024 + 3)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, gw.url, "bob", "bob-demo")
        form = aiohttp.FormData()
        form.add_field(
            "file", io.BytesIO(blob), filename="offer.pdf", content_type="application/pdf"
        )
        async with http.post(f"{gw.url}/files", data=form) as r:
            assert r.status == 200
            assert "offer.pdf" in await r.text()
        async with http.get(f"{gw.url}/files/offer.pdf") as r:
            assert r.status == 200
            assert r.headers["Content-Disposition"] == 'attachment; filename="offer.pdf"'
            data = await r.read()
    assert hashlib.sha256(data).digest() == hashlib.sha256(blob).digest()


async def test_websocket_echo_of_demo_crm(
    crm: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(crm.url)
    async with http.ws_connect(URL(gw.url) / "ws", protocols=("crm.v1",)) as ws:
        await ws.send_str("hallo")
        assert await ws.receive_str(timeout=5) == "echo: hallo"
        await ws.send_str("close:4000")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert message.data == 4000
