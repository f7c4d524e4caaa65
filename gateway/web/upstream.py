"""The client to the CRM as the web layer opens it, the headers it is sent, and the boundary
where aiohttp's client exceptions (WebSocket upgrades) become ours. No redirects, no
decompression, no jar: gateway.web.client does the proxying; only upgrades use aiohttp's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config.model import Upstream
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import UPSTREAM_ERRORS
from gateway.web.client import CrmClient
from gateway.web.forwarding import upstream_request_headers
from gateway.web.keys import CONFIG, VIEW

# Changes sign-in makes to the CRM-bound headers (cookies stripped, identity added).
Adjust = Callable[[CIMultiDict[str]], None]


def open_upstream_client(
    upstream: Upstream, *, on_stall: Callable[[], None] | None = None
) -> CrmClient:
    """The proxy's client to the CRM (gateway.web.client): a keep-alive pool of at most
    `max_connections`, timeouts per phase (a slot, a connection, then the read timeout
    between two reads, never a total: long downloads must not die at a fixed age, FL-9)."""
    return CrmClient(upstream, on_stall=on_stall)


def headers_for_crm(
    request: web.Request,
    extra_drop: frozenset[str] = frozenset(),
    incoming: CIMultiDictProxy[str] | None = None,
) -> CIMultiDict[str]:
    """The request's headers as the CRM gets them (gateway.web.forwarding decides which);
    `incoming`: other headers sent for this client (a kept request, sent again)."""
    upstream = request.app[CONFIG].upstream
    secret = upstream.secret_header
    return upstream_request_headers(
        request.headers if incoming is None else incoming,
        request[VIEW],
        upstream_host=upstream.host,
        host_header=upstream.host_header,
        extra_drop=extra_drop,
        secret=(secret.name, secret.value) if secret else None,
    )


def upstream_error(exc: BaseException) -> UpstreamTimeout | UpstreamUnavailable:
    """The error to answer with for what aiohttp's client raised (a WebSocket upgrade);
    counted by kind, as gateway.web.client counts the proxy's."""
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        UPSTREAM_ERRORS.labels("timeout").inc()
        return UpstreamTimeout(str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientConnectorError):
        UPSTREAM_ERRORS.labels("connect").inc()
        return UpstreamUnavailable(str(exc))
    UPSTREAM_ERRORS.labels("broken").inc()
    return UpstreamUnavailable(f"{type(exc).__name__}: {exc}")
