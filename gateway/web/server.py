"""Runs the gateway: logging, the event loop (uvloop when installed), one or more workers.

Several workers share one listening socket bound before forking, so the kernel spreads
connections; the parent only supervises (web/supervisor.py). A stop drains (web/drain.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server, values
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.config.model import Config, Listen, Logging
from gateway.errors import GatewayError
from gateway.policy.model import Policy
from gateway.web.app import build_app
from gateway.web.drain import LAST_CUT, StopRequest, drain, stop_budget
from gateway.web.health import READINESS, Flag, LocalFlag, SharedFlag
from gateway.web.keys import ADMIN_LISTENER, CONFIG
from gateway.web.protocol import GatewayRunner
from gateway.web.supervisor import Supervisor, tell_listening

log = logging.getLogger("gateway")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Logging) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # aiohttp's own access log is replaced by ours (request id, client address, user).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def install_fast_loop() -> str:
    """uvloop, a dependency wherever it is built (not on Windows): asyncio's loop there."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def bind(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((listen.host, listen.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve_until_stopped(
    app: web.Application,
    sock: socket.socket,
    *,
    started: Callable[[], Awaitable[None]] | None = None,
    admin_sock: socket.socket | None = None,
) -> None:
    """Serve `app` on `sock` until SIGTERM/SIGINT, then drain (config `shutdown`); and on
    `admin_sock` too when the app serves the admin listener (the helpdesk console there)."""
    runner = GatewayRunner(
        app,
        access_log=None,
        # A client that goes away cancels its handler, and with it the upstream request (FL-15).
        handler_cancellation=True,
        # What drain() leaves after the grace is cut this quickly.
        shutdown_timeout=LAST_CUT,
    )
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()  # close what the contexts that did start have opened
        raise
    stop = StopRequest()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.note, signum)
    try:
        site = web.SockSite(runner, sock)
        await site.start()
        if admin_sock is not None:
            await web.SockSite(runner, admin_sock).start()
        if started is not None:
            await started()
        await stop.asked.wait()
        await drain(runner, site, app[READINESS], app[CONFIG].shutdown, stop)
    finally:
        await runner.cleanup()


class AdminListener:
    """Prometheus metrics on their own address (`admin.listen`), served by prometheus-client's
    exposition server in a thread: the CRM's users never reach it, and a busy event loop does
    not stop the monitoring from seeing why. With several workers the supervisor serves the
    sum of every worker's counters (prometheus-client's multiprocess mode, a private folder
    of per-process files); with one worker, that worker serves its own."""

    def __init__(self, listen: Listen, workers: int) -> None:
        self.listen = listen
        self.folder = ""
        if workers > 1:
            # Before any worker exists and before any labelled metric has a value: every
            # value created from now on lives in a file the supervisor can add up.
            self.folder = tempfile.mkdtemp(prefix="crm-gateway-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.folder
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        self._server: Any = None

    def start(self) -> tuple[str, int]:
        registry: CollectorRegistry = REGISTRY
        if self.folder:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.folder)  # type: ignore[no-untyped-call]
        self._server, _thread = start_http_server(
            self.listen.port, self.listen.host, registry=registry
        )
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def run(config: Config, policy: Policy | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    # A reload asked for while starting is not a reason to die (SIGHUP's default), nor lost:
    # SIGHUP is held (blocked) until the app takes it over, and carried out then. The
    # supervisor takes it at once; its workers are forked with it held.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    configure_logging(config.logging)
    loop_name = install_fast_loop()
    try:
        sock = bind(config.listen)
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc.strerror)
        return 1
    admin = None
    admin_sock = None  # the admin listener, when the app serves it (the helpdesk console)
    console = config.admin.console
    if config.admin.listen is not None:
        admin = AdminListener(config.admin.listen, config.workers)
        try:
            if console is not None and console.at == "admin_listener":
                admin_sock = bind(config.admin.listen)
                admin_host, admin_port = admin_sock.getsockname()[:2]
            else:
                admin_host, admin_port = admin.start()
        except OSError as exc:
            log.error("cannot listen on %s (admin): %s", config.admin.listen, exc.strerror)
            admin.stop()
            return 1
        shown_admin = f"[{admin_host}]" if ":" in admin_host else admin_host
        beside = ", and the helpdesk console at /_gateway/admin/" if admin_sock else ""
        log.info(
            "metrics on http://%s:%d/metrics (admin listener%s)",
            shown_admin,
            admin_port,
            beside.replace("/_gateway/", config.path_prefix),
        )
    try:
        return _serve(config, policy, sock, loop_name, admin_sock)
    finally:
        if admin is not None:
            admin.stop()
        if admin_sock is not None:
            admin_sock.close()


def _serve(
    config: Config,
    policy: Policy | None,
    sock: socket.socket,
    loop_name: str,
    admin_sock: socket.socket | None = None,
) -> int:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "crm-gateway listening on http://%s:%d, forwarding to %s (%s, %d worker%s)",
        shown,
        port,
        config.upstream.url,
        loop_name,
        config.workers,
        ("" if config.workers == 1 else "s") + (", one per core" if config.workers_auto else ""),
    )
    if config.workers == 1:
        return _serve_one(config, policy, sock, "the gateway", LocalFlag(), admin_sock=admin_sock)
    watched = SharedFlag()  # before the fork: every worker maps the same byte

    def worker_main(listening_pipe: int) -> None:
        name = f"worker {os.getpid()}"
        told = functools.partial(tell_listening, listening_pipe)
        os._exit(_serve_one(config, policy, sock, name, watched, told, admin_sock=admin_sock))

    # Workers are forked with the policy already loaded: no worker parses it again.
    supervisor = Supervisor(config.workers, sock, stop_budget(config.shutdown), worker_main)
    return supervisor.run()


def _serve_one(
    config: Config,
    policy: Policy | None,
    sock: socket.socket,
    name: str,
    watched: Flag,
    on_listening: Callable[[], None] | None = None,
    *,
    admin_sock: socket.socket | None = None,
) -> int:
    """One serving process to its end: its exit status, and a clear line when it fails."""
    listening = False

    async def started() -> None:
        nonlocal listening
        listening = True
        if on_listening is not None:
            on_listening()

    try:
        app = build_app(config, policy=policy)
        app[READINESS].watched = watched
        if admin_sock is not None:
            app[ADMIN_LISTENER] = tuple(admin_sock.getsockname()[:2])
        asyncio.run(serve_until_stopped(app, sock, started=started, admin_sock=admin_sock))
    except Exception as exc:
        _tell_failure(name, "stopped" if listening else "could not start", exc)
        return 1
    return 0


def _tell_failure(name: str, what: str, exc: Exception) -> None:
    """One line that says why; a traceback only for what is not an expected failure (a
    folder that is a file, a full disk, a store that is down) but a bug."""
    if isinstance(exc, OSError | GatewayError):
        log.error("%s %s: %s: %s", name, what, type(exc).__name__, exc)
    else:
        log.exception("%s %s: %s: %s", name, what, type(exc).__name__, exc)
