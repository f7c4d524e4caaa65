"""The one HTTP client to the CRM: a keep-alive pool, no redirects, no decompression, no jar.

Also the one boundary where the client's exceptions become ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.config.model import Upstream
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import UPSTREAM_ERRORS
from gateway.web.forwarding import upstream_request_headers
from gateway.web.keys import CONFIG, VIEW

# Changes sign-in makes to the CRM-bound headers (cookies stripped, identity added).
Adjust = Callable[[CIMultiDict[str]], None]


def open_upstream_client(upstream: Upstream) -> aiohttp.ClientSession:
    timeouts = upstream.timeouts
    connector = aiohttp.TCPConnector(
        limit=upstream.max_connections,
        limit_per_host=0,
        keepalive_timeout=upstream.keepalive,
        ttl_dns_cache=60,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # total=None: long downloads and websockets must not die at a fixed age (FL-9); the
        # read timeout is between two reads, so a stalled CRM is still noticed.
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.pool + timeouts.connect,
            sock_connect=timeouts.connect,
            sock_read=timeouts.read,
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        # The request line is sent as the client wrote it: no re-quoting of the path.
        requote_redirect_url=False,
        read_bufsize=2**16,
    )


def headers_for_crm(
    request: web.Request, extra_drop: frozenset[str] = frozenset()
) -> CIMultiDict[str]:
    """The request's headers as the CRM gets them (gateway.web.forwarding decides which)."""
    upstream = request.app[CONFIG].upstream
    secret = upstream.secret_header
    return upstream_request_headers(
        request.headers,
        request[VIEW],
        upstream_host=upstream.host,
        host_header=upstream.host_header,
        extra_drop=extra_drop,
        secret=(secret.name, secret.value) if secret else None,
    )


def upstream_error(exc: BaseException) -> UpstreamTimeout | UpstreamUnavailable:
    """The error to answer with for what the CRM connection raised; counted by kind."""
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        UPSTREAM_ERRORS.labels("timeout").inc()
        return UpstreamTimeout(str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientConnectorError):
        UPSTREAM_ERRORS.labels("connect").inc()
        return UpstreamUnavailable(str(exc))
    UPSTREAM_ERRORS.labels("broken").inc()
    return UpstreamUnavailable(f"{type(exc).__name__}: {exc}")
