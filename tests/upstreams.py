"""Purpose-built upstreams for proxy tests: an echo that shows what reached the CRM, and
faults (slow headers, resets mid-body, refusals, odd framing) that real CRMs produce."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json

from aiohttp import WSMsgType, web

EVENTS = web.AppKey("events", list)
INFO = web.AppKey("info", dict)  # origin and hostname, filled in once the port is known


async def echo(request: web.Request) -> web.Response:
    """What the CRM saw: method, raw target, every header line, and the body's digest."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        digest.update(chunk)
        size += len(chunk)
    body = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "peer": request.remote,
        "peer_port": request.transport.get_extra_info("peername")[1] if request.transport else 0,
        "body_bytes": size,
        "body_sha256": digest.hexdigest(),
        "chunked": "chunked" in request.headers.get("Transfer-Encoding", ""),
    }
    return web.json_response(body)


async def redirect_absolute(request: web.Request) -> web.Response:
    host = request.app[INFO]["origin"]
    response = web.Response(status=302)
    response.headers["Location"] = f"{host}/after?x=1"
    response.headers["Content-Location"] = f"{host}/content"
    response.headers["Refresh"] = f"5; url={host}/refreshed"
    return response


async def redirect_elsewhere(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "https://other.example/x"})


async def cookie_domain(request: web.Request) -> web.Response:
    response = web.Response(text="ok")
    hostname = request.app[INFO]["hostname"]
    response.headers.add("Set-Cookie", f"sid=abc; Domain={hostname}; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "other=1; Domain=example.org; Path=/")
    response.headers.add("Set-Cookie", "plain=2; Path=/")
    return response


async def set_cookie(request: web.Request) -> web.Response:
    response = web.Response(text="cookie set")
    response.headers["Set-Cookie"] = "crm_session=secret-of-user-a; Path=/"
    return response


async def hop_by_hop(request: web.Request) -> web.StreamResponse:
    response = web.Response(text="ok")
    response.headers["Connection"] = "X-Internal-Debug"
    response.headers["X-Internal-Debug"] = "secret"
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers["Proxy-Authenticate"] = "Basic"
    response.headers["X-Kept"] = "yes"
    return response


async def slow_headers(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(text="late")


async def reset_mid_body(request: web.Request) -> web.StreamResponse:
    """Promises 1 MiB (or chunked), sends 16 KiB, then drops the connection."""
    response = web.StreamResponse()
    if request.query.get("chunked") != "1":
        response.content_length = 1024 * 1024
    await response.prepare(request)
    await response.write(b"x" * 16384)
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return response


async def gzipped(request: web.Request) -> web.Response:
    payload = gzip.compress(b"compressed body " * 1000)
    return web.Response(
        body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    )


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for i in range(5):
        await response.write(f"part{i};".encode())
    await response.write_eof()
    return response


async def slow_body(request: web.Request) -> web.StreamResponse:
    """Streams slowly and records whether the client stayed until the end."""
    events = request.app[EVENTS]
    response = web.StreamResponse()
    response.content_length = 100 * 65536
    await response.prepare(request)
    try:
        for _ in range(100):
            await response.write(b"y" * 65536)
            await asyncio.sleep(0.05)
    except (ConnectionError, asyncio.CancelledError):
        events.append("download-aborted")
        raise
    events.append("download-complete")
    return response


async def slow_sink(request: web.Request) -> web.Response:
    """Reads an upload and records whether it arrived whole or was cut off."""
    events = request.app[EVENTS]
    size = 0
    try:
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
    except (ConnectionError, asyncio.CancelledError, Exception):
        events.append(f"upload-aborted:{size}")
        raise
    events.append(f"upload-complete:{size}")
    return web.json_response({"bytes": size})


async def ws_refuse(request: web.Request) -> web.Response:
    return web.Response(status=403, text="no websockets for you")


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("crm.v1", "crm.v2"), autoping=False)
    await ws.prepare(request)
    request.app[EVENTS].append(f"ws-headers:{json.dumps(dict(request.headers))}")
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            if message.data.startswith("close:"):
                await ws.close(code=int(message.data[6:]), message=b"bye")
                break
            if message.data == "ping-me":
                await ws.ping(b"from-crm")
                continue
            await ws.send_str(f"echo: {message.data}")
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
        elif message.type is WSMsgType.PING:
            request.app[EVENTS].append(f"ws-ping:{message.data.decode()}")
            await ws.pong(message.data)
        elif message.type is WSMsgType.PONG:
            await ws.send_str(f"pong: {message.data.decode()}")
    request.app[EVENTS].append(f"ws-closed:{ws.close_code}")
    return ws


def build_upstream_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[EVENTS] = []
    app[INFO] = {}
    r = app.router
    r.add_get("/redirect-absolute", redirect_absolute)
    r.add_get("/redirect-elsewhere", redirect_elsewhere)
    r.add_get("/cookie-domain", cookie_domain)
    r.add_get("/set-cookie", set_cookie)
    r.add_get("/hop-by-hop", hop_by_hop)
    r.add_get("/slow-headers", slow_headers)
    r.add_get("/reset-mid-body", reset_mid_body)
    r.add_get("/gzip", gzipped)
    r.add_get("/chunked", chunked)
    r.add_get("/slow-body", slow_body)
    r.add_post("/slow-sink", slow_sink)
    r.add_get("/ws-refuse", ws_refuse)
    r.add_get("/ws", ws_echo)
    r.add_route("*", "/{tail:.*}", echo)
    return app
