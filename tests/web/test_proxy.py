"""The proxy against a real echo/fault upstream: what goes through, untouched and changed."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory, Served, send_raw
from tests.process import free_port
from tests.upstreams import EVENTS


async def _echo(
    http: aiohttp.ClientSession, url: str, method: str = "GET", **kwargs: Any
) -> dict[str, Any]:
    async with http.request(method, url, **kwargs) as response:
        assert response.status == 200, await response.text()
        seen: dict[str, Any] = json.loads(await response.read())
        return seen


def _header(seen: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in seen["headers"] if k.lower() == name.lower()]


@pytest.mark.parametrize(
    "method",
    [
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
        "PROPFIND",
        "MKCOL",
        "PURGE",
        "REPORT",
        "QUERY",
    ],
)
async def test_every_method_is_forwarded(
    gateway: Served, http: aiohttp.ClientSession, method: str
) -> None:
    seen = await _echo(http, f"{gateway.url}/any/path", method=method, data=b"body")
    assert seen["method"] == method
    assert seen["body_bytes"] == 4


async def test_head_keeps_content_length_and_sends_no_body(gateway: Served) -> None:
    raw = await send_raw(gateway.port, b"HEAD /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"200 OK" in head
    assert b"Content-Length:" in head
    assert body == b""


async def test_path_and_query_are_forwarded_byte_for_byte(gateway: Served) -> None:
    target = "/a%2Fb/%7Euser/./x/../y;p=1?q=%20a+b&q=%E2%9C%93&empty=&flag"
    request = f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    raw = await send_raw(gateway.port, request.encode())
    seen = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert seen["raw_path"] == target


async def test_absolute_form_target_is_refused(gateway: Served, upstream: Served) -> None:
    raw = await send_raw(
        gateway.port, b"GET http://evil.example/admin HTTP/1.1\r\nHost: gw\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 400")


async def test_chunked_upload_reaches_crm_whole(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 17)

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(blob), 100_000):
            yield blob[i : i + 100_000]

    seen = await _echo(http, f"{gateway.url}/upload", method="POST", data=pieces())
    assert seen["chunked"] is True
    assert seen["body_bytes"] == len(blob)
    assert seen["body_sha256"] == hashlib.sha256(blob).hexdigest()


async def test_content_length_upload_keeps_its_length(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    blob = os.urandom(200_000)
    seen = await _echo(http, f"{gateway.url}/upload", method="PUT", data=io.BytesIO(blob))
    assert _header(seen, "Content-Length") == [str(len(blob))]
    assert seen["chunked"] is False
    assert seen["body_sha256"] == hashlib.sha256(blob).hexdigest()


async def test_chunked_response_stays_chunked(gateway: Served) -> None:
    raw = await send_raw(
        gateway.port, b"GET /chunked HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body.endswith(b"0\r\n\r\n")
    assert b"part4;" in body


async def test_compressed_body_passes_untouched(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/gzip", headers={"Accept-Encoding": "gzip"}) as response:
        body = await response.read()
        assert response.headers["Content-Encoding"] == "gzip"
        assert int(response.headers["Content-Length"]) == len(body)
        assert body[:2] == b"\x1f\x8b"


async def test_client_headers_are_not_added_to(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    """The upstream client adds no User-Agent, Accept or cookies of its own."""
    raw = await send_raw(gateway.port, b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    seen = json.loads(raw.partition(b"\r\n\r\n")[2])
    names = {k.lower() for k, _ in seen["headers"]}
    assert not names & {"user-agent", "accept", "accept-encoding", "cookie", "content-type"}


async def test_upstream_redirects_are_not_followed(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/redirect-elsewhere", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "https://other.example/x"


async def test_host_is_passed_through_by_default(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    seen = await _echo(http, f"{gateway.url}/x", headers={"Host": "crm.example.com"})
    assert _header(seen, "Host") == ["crm.example.com"]
    assert _header(seen, "X-Forwarded-Host") == ["crm.example.com"]


async def test_upstream_host_option_sends_crm_host(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream.url, upstream_extra="host_header: upstream")
    seen = await _echo(http, f"{gw.url}/x", headers={"Host": "crm.example.com"})
    assert _header(seen, "Host") == [f"127.0.0.1:{upstream.port}"]
    assert _header(seen, "X-Forwarded-Host") == ["crm.example.com"]


async def test_forwarding_headers_are_set_and_client_ones_replaced(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    spoofed = {
        "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Real-IP": "10.1.2.3",
        "Forwarded": "for=10.1.2.3;proto=https",
        "X-Forwarded-Prefix": "/admin",
        "X-Request-Id": "client-chosen",
        "X_Forwarded_For": "10.9.9.9",
        "x-forwarded_host": "evil.example",
    }
    seen = await _echo(http, f"{gateway.url}/x", headers={"Host": "gw.test", **spoofed})
    assert _header(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert _header(seen, "X-Forwarded-Proto") == ["http"]
    assert _header(seen, "X-Forwarded-Host") == ["gw.test"]
    names = {k.lower() for k, _ in seen["headers"]}
    assert not names & {
        "x-real-ip",
        "forwarded",
        "x-forwarded-prefix",
        "x_forwarded_for",
        "x-forwarded_host",
    }
    (rid,) = _header(seen, "X-Request-Id")
    assert rid != "client-chosen"


async def test_trusted_proxy_chain_is_kept_and_extended(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream.url, "trusted_proxies: [127.0.0.0/8]\n")
    seen = await _echo(
        http,
        f"{gw.url}/x",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Request-Id": "edge-42",
        },
    )
    assert _header(seen, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert _header(seen, "X-Forwarded-Proto") == ["https"]
    assert _header(seen, "X-Request-Id") == ["edge-42"]


@pytest.mark.parametrize("trusted", ["[127.0.0.1/32]", "[]"])
async def test_a_dual_stack_listener_passes_on_an_ipv4_peer_as_rules_name_it(
    upstream: Served, start_gateway: GatewayFactory, trusted: str
) -> None:
    """A dual-stack listener sees an IPv4 peer as ::ffff:127.0.0.1; the chain the CRM gets
    names it 127.0.0.1, as the rules do, behind a trusted proxy (the proxy's address after
    its client) and without one."""
    gw = await start_gateway(upstream.url, f"trusted_proxies: {trusted}\n", host="::")
    raw = await send_raw(
        gw.port,
        b"GET /x HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
    )
    seen = json.loads(raw.partition(b"\r\n\r\n")[2])
    expected = "6.6.6.6, 127.0.0.1" if trusted != "[]" else "127.0.0.1"
    assert _header(seen, "X-Forwarded-For") == [expected]


async def test_malformed_forwarded_for_from_trusted_proxy_fails_closed(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream.url, "trusted_proxies: [127.0.0.0/8]\n")
    for bad in ("a", "010.0.0.1", ", ".join(["10.0.0.1"] * 40), "1.2.3.4, "):
        async with http.get(f"{gw.url}/x", headers={"X-Forwarded-For": bad}) as response:
            assert response.status == 400, bad
            assert (await response.json())["error"] == "forwarded_header_malformed"


@pytest.mark.parametrize(
    "connection",
    [
        "close, X-Forwarded-For",
        "keep-alive, X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Request-Id",
        "Cookie",
        "Authorization",
    ],
)
async def test_connection_header_cannot_remove_gateway_headers(
    gateway: Served, connection: str
) -> None:
    """HH-1: client's Connection tokens are dropped first, our headers added after."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        f"GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: {connection}\r\n"
        "Cookie: a=1\r\nAuthorization: Token t\r\n\r\n".encode()
    )
    raw = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    writer.close()
    seen = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert _header(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert _header(seen, "X-Forwarded-Host") == ["gw.test"]
    assert _header(seen, "X-Forwarded-Proto") == ["http"]
    assert len(_header(seen, "X-Request-Id")) == 1
    assert _header(seen, "Connection") == [] or _header(seen, "Connection") == ["keep-alive"]


async def test_hop_by_hop_request_headers_are_removed(gateway: Served) -> None:
    raw = await send_raw(
        gateway.port,
        b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close, X-Custom-Hop\r\n"
        b"X-Custom-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
        b"Proxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"200 OK" in head
    seen = json.loads(body)
    names = {k.lower() for k, _ in seen["headers"]}
    for gone in (
        "x-custom-hop",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "http2-settings",
        "proxy-authorization",
        "proxy-connection",
    ):
        assert gone not in names, gone
    assert _header(seen, "X-End-To-End") == ["kept"]


async def test_hop_by_hop_response_headers_are_removed(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/hop-by-hop") as response:
        assert response.headers.get("X-Kept") == "yes"
        assert "X-Internal-Debug" not in response.headers
        assert "Keep-Alive" not in response.headers
        assert "Proxy-Authenticate" not in response.headers


async def test_absolute_upstream_urls_become_relative(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/redirect-absolute", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/after?x=1"
        assert response.headers["Content-Location"] == "/content"
        assert response.headers["Refresh"] == "5; url=/refreshed"


async def test_absolute_upstream_urls_use_public_url_when_configured(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream.url, "public_url: https://crm.example.com\n")
    async with http.get(f"{gw.url}/redirect-absolute", allow_redirects=False) as response:
        assert response.headers["Location"] == "https://crm.example.com/after?x=1"
        assert response.headers["Refresh"] == "5; url=https://crm.example.com/refreshed"
    async with http.get(f"{gw.url}/cookie-domain") as response:
        cookies = response.headers.getall("Set-Cookie")
        assert "sid=abc; Domain=crm.example.com; Path=/; HttpOnly" in cookies


async def test_cookie_domain_naming_upstream_is_dropped(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/cookie-domain") as response:
        cookies = response.headers.getall("Set-Cookie")
    assert "sid=abc; Path=/; HttpOnly" in cookies
    assert "other=1; Domain=example.org; Path=/" in cookies
    assert "plain=2; Path=/" in cookies


async def test_response_carries_request_id(gateway: Served, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/x") as response:
        seen = json.loads(await response.read())
        assert response.headers["X-Request-Id"] == _header(seen, "X-Request-Id")[0]


async def test_secret_header_is_added_and_never_taken_from_clients(
    upstream: Served,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_SECRET", "s3cret-value")
    gw = await start_gateway(
        upstream.url,
        upstream_extra="secret_header:\n  name: X-Gateway-Secret\n  value: {env: TEST_UPSTREAM_SECRET}",
    )
    seen = await _echo(
        http, f"{gw.url}/x", headers={"X-Gateway-Secret": "forged", "X_Gateway_Secret": "f2"}
    )
    assert _header(seen, "X-Gateway-Secret") == ["s3cret-value"]
    assert _header(seen, "X_Gateway_Secret") == []


# -- failures ---------------------------------------------------------------------------


async def test_upstream_refused_gives_502_page_for_browsers_and_json_for_apis(
    start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    port = free_port()  # nothing listens there
    gw = await start_gateway(f"http://127.0.0.1:{port}")
    async with http.get(
        f"{gw.url}/contacts", headers={"Accept": "text/html", "Accept-Language": "nl"}
    ) as r:
        page = await r.text()
        assert r.status == 502
        assert r.headers["Content-Type"].startswith("text/html")
        assert "Het CRM reageert niet" in page
        assert str(port) not in page  # no upstream address leaks
        assert r.headers["X-Request-Id"] in page
    async with http.get(f"{gw.url}/api/contacts", headers={"Accept": "application/json"}) as r:
        assert r.status == 502
        body = await r.json()
        assert body["error"] == "upstream_unavailable"
        assert body["request_id"] == r.headers["X-Request-Id"]


async def test_slow_upstream_gives_504(
    upstream: Served, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream.url, upstream_extra="timeouts: {read: 300ms}")
    async with http.get(f"{gw.url}/slow-headers?s=3") as r:
        assert r.status == 504
        assert (await r.json())["error"] == "upstream_timeout"
    async with http.get(f"{gw.url}/slow-headers?s=3", headers={"Accept": "text/html"}) as r:
        assert r.status == 504
        assert "took too long" in await r.text()


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_response_cut_mid_body_is_cut_for_client(gateway: Served, chunked: str) -> None:
    """FL-7: never a complete-looking response, never an appended error page."""
    request = f"GET /reset-mid-body?chunked={chunked} HTTP/1.1\r\nHost: gw\r\n\r\n"
    raw = await send_raw(gateway.port, request.encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"200 OK" in head
    if chunked == "1":
        assert not body.endswith(b"0\r\n\r\n")
    else:
        assert b"Content-Length: 1048576" in head
        assert len(body) < 1024 * 1024
    assert b"502" not in body and b"upstream" not in body


async def test_client_disconnect_mid_download_cancels_upstream(
    gateway: Served, upstream: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/slow-body") as response:
        await response.content.read(65536)
    # Leaving the block early closes the connection; the CRM must see the abort.
    for _ in range(100):
        if upstream.app[EVENTS]:
            break
        await asyncio.sleep(0.05)
    assert upstream.app[EVENTS] == ["download-aborted"]


async def test_client_disconnect_mid_upload_aborts_upstream_request(
    gateway: Served, upstream: Served
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"POST /slow-sink HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(5):
        writer.write(b"10000\r\n" + b"z" * 65536 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
    writer.transport.abort()
    for _ in range(100):
        if upstream.app[EVENTS]:
            break
        await asyncio.sleep(0.05)
    (event,) = upstream.app[EVENTS]
    assert event.startswith("upload-aborted:")
    assert int(event.split(":")[1]) < 5 * 65536 + 1


@pytest.mark.parametrize("size", [5, 200_000])
async def test_no_content_type_is_invented(
    start_gateway: GatewayFactory, http: aiohttp.ClientSession, size: int
) -> None:
    """A legacy CRM page without Content-Type reaches the browser without one (sniffed
    there), on both the small-body and the streamed path."""
    body = b"<b>x" + b"x" * (size - 4)

    async def legacy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(legacy, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        gw = await start_gateway(f"http://127.0.0.1:{port}")
        async with http.get(f"{gw.url}/page") as r:
            assert r.status == 200
            assert "Content-Type" not in r.headers
            assert await r.read() == body
    finally:
        server.close()
        await server.wait_closed()


async def test_upstream_connections_are_kept_alive_and_reused(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    ports = {(await _echo(http, f"{gateway.url}/seq/{i}"))["peer_port"] for i in range(10)}
    assert len(ports) == 1  # ten sequential requests, one pooled connection to the CRM


async def test_upstream_cookies_are_never_kept_by_the_gateway(
    gateway: Served, http: aiohttp.ClientSession
) -> None:
    """A cookie the CRM sets for one user must never be replayed for another."""
    async with http.get(f"{gateway.url}/set-cookie") as r:
        assert r.headers["Set-Cookie"] == "crm_session=secret-of-user-a; Path=/"
    seen = await _echo(http, f"{gateway.url}/next-user")
    assert _header(seen, "Cookie") == []
