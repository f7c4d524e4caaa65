"""The admin listener when the gateway's app serves it (`admin.console.at: admin_listener`):
which requests came in there, and /metrics answered there as prometheus-client's own server
answers it elsewhere (with several workers, the sum of every worker's files). Every other
path on it goes through the app as on the main listener: the sign-in pages, the console."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.web.keys import ADMIN_LISTENER
from gateway.web.scope import Handler

WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - names of "every address", compared only


def on_admin_listener(request: web.BaseRequest) -> bool:
    """Whether the request came in on the admin listener (app[ADMIN_LISTENER] names it)."""
    listening = request.app.get(ADMIN_LISTENER) if isinstance(request, web.Request) else None
    if listening is None or request.transport is None:
        return False
    here = request.transport.get_extra_info("sockname")
    if not here:
        return False
    host, port = listening
    return bool(here[1] == port and (host in WILDCARDS or here[0] == host))


@web.middleware
async def admin_listener_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """First on every request while the app serves the admin listener: /metrics there."""
    if request.path == "/metrics" and on_admin_listener(request):
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        body = await asyncio.to_thread(exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
    return await handler(request)


def exposition() -> bytes:
    """The metrics in Prometheus' text format: this process's, or every worker's added up
    (PROMETHEUS_MULTIPROC_DIR, set by the supervisor's AdminListener before the fork)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return bytes(generate_latest(REGISTRY))
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    return bytes(generate_latest(registry))
