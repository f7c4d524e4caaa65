"""A naive aiohttp reverse proxy: the reference that issue 14's targets are ratios against.

What one writes in an afternoon with aiohttp: uvloop, one `ClientSession` for the whole
process, each request forwarded as it came (hop-by-hop headers dropped), answers of up to
64 KiB read whole and sent as one response, bigger ones streamed. No checks, no log, no
metrics, no redirect or cookie handling. Only `make bench` runs it; it is not the gateway.

    python bench/naive_proxy.py --listen 127.0.0.1:8090 --upstream http://127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import uvloop
from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, web
from multidict import CIMultiDict

# RFC 9110 7.6.1: meant for one connection, not to be forwarded. Content-Length is set again
# by aiohttp for the answer it writes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
BUFFERED = 64 * 1024  # answers up to this size are read whole: "small responses buffered"
CHUNK = 64 * 1024

SESSION = web.AppKey("session", ClientSession)


def build_app(upstream: str) -> web.Application:
    app = web.Application()

    async def client(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = ClientSession(
            auto_decompress=False,
            cookie_jar=DummyCookieJar(),  # users' cookies pass through, never kept
            timeout=ClientTimeout(total=None, sock_connect=5, sock_read=60),
        )
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        )
        headers.pop("Host", None)
        body = request.content if request.body_exists else None
        async with app[SESSION].request(
            request.method,
            upstream + request.raw_path,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as answer:
            out = CIMultiDict(
                (k, v)
                for k, v in answer.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
            )
            size = answer.content_length
            if size is not None and size <= BUFFERED:
                return web.Response(status=answer.status, headers=out, body=await answer.read())
            response = web.StreamResponse(status=answer.status, headers=out)
            if size is not None:
                response.content_length = size
            await response.prepare(request)
            async for chunk in answer.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response

    app.cleanup_ctx.append(client)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--upstream", required=True, metavar="URL")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        build_app(args.upstream.rstrip("/")),
        host=host,
        port=int(port),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
