"""Real servers on loopback: the gateway app, the demo CRM and purpose-built upstreams."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.config.load import parse_config
from gateway.config.model import Config
from gateway.demo.crm import build_crm_app
from gateway.stores.sqlite import SqliteDurableStore
from gateway.web.app import build_app
from gateway.web.keys import CONFIG
from gateway.web.protocol import GatewayRunner
from tests.django_crm import django_crm_app
from tests.upstreams import INFO, build_upstream_app

# Shared fixtures: the sign-in kit (gateways, browsers), headless Chromium, a real Redis.
pytest_plugins = [
    "tests.signin_kit",
    "tests.browser",
    "tests.redis_server",
    "tests.postgres_server",
]


@dataclass
class Served:
    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


async def serve(
    app: web.Application,
    host: str = "127.0.0.1",
    *,
    runner_class: type[web.AppRunner] | None = None,
    **runner_args: object,
) -> Served:
    # The gateway's app is served as `crm-gateway run` serves it (gateway.web.protocol).
    if runner_class is None:
        runner_class = GatewayRunner if CONFIG in app else web.AppRunner
    runner = runner_class(app, access_log=None, **runner_args)  # type: ignore[arg-type]
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()
        raise
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    site = web.SockSite(runner, sock)
    await site.start()
    return Served(app, runner, host, sock.getsockname()[1])


async def serve_handler(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    *lists: web.AppKey[Any],
) -> Served:
    """An app that answers every method and path with `handler`, each of `lists` an empty
    list in it (what the handler notes), served on 127.0.0.1:0."""
    app = web.Application()
    for key in lists:
        app[key] = []
    app.router.add_route("*", "/{tail:.*}", handler)
    return await serve(app)


async def send_raw(
    port: int, request: bytes, timeout: float = 10, *, source: str = "127.0.0.1"
) -> bytes:
    """`request` written to 127.0.0.1:`port` from the loopback address `source`, byte for
    byte (what no HTTP client library would send), and all of the answer, up to the server
    closing the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def gateway_config(
    upstream_url: str, tmp_path: Path, extra: str = "", upstream_extra: str = ""
) -> Config:
    """A test config; `extra` adds top-level YAML, `upstream_extra` keys under upstream."""
    nested = "".join(f"  {line}\n" for line in upstream_extra.splitlines())
    text = (
        "listen: 127.0.0.1:0\n"
        f"upstream:\n  url: {upstream_url}\n{nested}"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
        "logging: {access_log: false}\n"
        f"{extra}"
    )
    return parse_config(text, "test gateway.yaml")


GatewayFactory = Callable[..., Awaitable[Served]]
AppStarter = Callable[..., Awaitable[Served]]


@pytest.fixture
async def upstream() -> AsyncIterator[Served]:
    app = build_upstream_app()
    served = await serve(app)
    app[INFO].update(origin=served.url, hostname="127.0.0.1")
    yield served
    await served.runner.cleanup()


@pytest.fixture
async def crm() -> AsyncIterator[Served]:
    served = await serve(build_crm_app())
    yield served
    await served.runner.cleanup()


@pytest.fixture
async def django() -> AsyncIterator[Served]:
    """The Django-shaped CRM (tests/django_crm.py) on 127.0.0.1:0."""
    served = await serve(django_crm_app())
    yield served
    await served.runner.cleanup()


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    started: list[Served] = []

    async def start(
        upstream_url: str, extra: str = "", *, upstream_extra: str = "", host: str = "127.0.0.1"
    ) -> Served:
        config = gateway_config(upstream_url, tmp_path, extra, upstream_extra)
        served = await serve(build_app(config), host, handler_cancellation=True)
        started.append(served)
        return served

    yield start
    for served in started:
        await served.runner.cleanup()


@pytest.fixture
async def start_app() -> AsyncIterator[AppStarter]:
    """Serves a test's own loopback apps (a CRM with a quirk, a webhook receiver) on
    127.0.0.1:0 and stops them after the test."""
    started: list[Served] = []

    async def start(app: web.Application, host: str = "127.0.0.1", **runner_args: Any) -> Served:
        served = await serve(app, host, **runner_args)
        started.append(served)
        return served

    yield start
    for served in started:
        await served.runner.cleanup()


@pytest.fixture
async def gateway(upstream: Served, start_gateway: GatewayFactory) -> Served:
    """The gateway in front of the echo/fault upstream."""
    return await start_gateway(upstream.url)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client: no cookie jar, no decompression, no redirects followed."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        yield session


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteDurableStore]:
    """A real SQLite durable store in the test's folder (gateway.db), open as a running
    gateway holds it while a command or a test works on it."""
    opened = SqliteDurableStore(str(tmp_path / "gateway.db"))
    await opened.open()
    yield opened
    await opened.close()
