"""The composition root: builds the aiohttp application and picks every concrete adapter.

Request path: scope (request id, client address) → errors → reserved prefix routes or proxy.
The guard (who, from where, how fresh) slots in between the two once sign-in exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gateway.alerts import AlertRules
from gateway.audit import AuditTrail
from gateway.clock import Clock, SystemClock
from gateway.config.model import Config
from gateway.crypto import Sealer, subkey
from gateway.errors import BadRequest, HttpError, StoreUnavailable
from gateway.factors.codes import CodeBook
from gateway.metrics import record_request
from gateway.policy.model import Policy
from gateway.senders import open_sender
from gateway.signin.passwords import load_password_file
from gateway.signin.regulation import Regulator
from gateway.signin.session import SessionBook
from gateway.stores import InProcessStore, SharedStore, open_stores
from gateway.stores.protocols import SEAL_RING_NOTE
from gateway.web import health, pipeline, proxy
from gateway.web.forwarding import (
    ClientView,
    OriginRewriter,
    check_header_bytes,
    client_ip,
    forwarded_proto,
    request_id,
    wants_html,
)
from gateway.web.guard import AccessDenied, open_guard
from gateway.web.keys import (
    ACCESS_LOG,
    AUDIT,
    CLOCK,
    CONFIG,
    DECISION,
    DURABLE,
    GUARD,
    REWRITER,
    SHARED,
    SIGNIN,
    UPSTREAM_CLIENT,
    USER,
    VIEW,
)
from gateway.web.pages.errors import error_response
from gateway.web.signin import Passwords, SignIn
from gateway.web.snapshot import restore_snapshot, save_snapshot
from gateway.web.upstream import open_upstream_client

log = logging.getLogger("gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    config: Config, *, clock: Clock | None = None, policy: Policy | None = None
) -> web.Application:
    """`policy`: the config's policies when the caller has already loaded them (the CLI has,
    to validate them); otherwise the guard loads them at start-up."""
    app = web.Application(middlewares=[scope_middleware], handler_args={"max_field_size": 16384})
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app[REWRITER] = OriginRewriter(config.upstream.url, config.public_url)
    app[ACCESS_LOG] = logging.getLogger("gateway.access")
    app[health.READINESS] = health.Readiness(app[CLOCK])
    app.cleanup_ctx.append(_stores)
    app.cleanup_ctx.append(_upstream_client)
    if config.policies or config.signin.login is not None:
        app.cleanup_ctx.append(functools.partial(_guard, preloaded=policy))
    if config.signin.login is not None:
        app.cleanup_ctx.append(_signin)
    app.on_response_prepare.append(proxy.drop_invented_content_type)
    app.router.add_route("*", "/{tail:.*}", pipeline.dispatch)
    return app


async def _upstream_client(app: web.Application) -> AsyncIterator[None]:
    client = open_upstream_client(app[CONFIG].upstream)
    app[UPSTREAM_CLIENT] = client
    yield
    await client.close()


async def _stores(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    durable, shared = await open_stores(config.state, app[CLOCK])
    app[DURABLE] = durable
    app[SHARED] = shared
    trail = AuditTrail(durable, app[CLOCK], output=config.audit.file, keep=config.audit.keep)
    app[AUDIT] = trail
    # Alert rules watch the trail; without an `alerts` section they return at once.
    rules = AlertRules(config.alerts, shared, durable, app[CLOCK], trail)
    trail.listeners.append(rules.observe)
    flusher = asyncio.create_task(trail.run(), name="audit-flush")
    kept = _kept_sessions(config, shared)
    if kept is not None:
        await asyncio.to_thread(restore_snapshot, *kept, app[CLOCK])
    yield
    await rules.close()  # deliveries under way may still record and use both stores
    if kept is not None:
        await asyncio.to_thread(save_snapshot, *kept, app[CLOCK])
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    await trail.close()  # what is still pending reaches the store before it closes
    await shared.close()
    await durable.close()


def _kept_sessions(
    config: Config, shared: SharedStore
) -> tuple[Path, InProcessStore, Sealer] | None:
    """Sessions in process memory wait out a restart sealed in a file (Redis keeps its own):
    the file, the store and the sealer, or None when there is nothing to keep."""
    path = snapshot_file(config)
    ring = config.signin.secrets.seal_keys
    if path is None or ring is None or not isinstance(shared, InProcessStore):
        return None
    return path, shared, Sealer(ring)


def snapshot_file(config: Config) -> Path | None:
    """Where in-memory sessions wait across a restart: beside the SQLite file, sealed."""
    if config.signin.login is None or config.signin.secrets.seal_keys is None:
        return None
    if config.state.durable.path in ("", ":memory:"):
        return None
    return Path(config.state.durable.path + ".sessions")


async def _guard(app: web.Application, *, preloaded: Policy | None) -> AsyncIterator[None]:
    config = app[CONFIG]
    guard = await open_guard(
        config.policies, app[DURABLE], app[AUDIT], preloaded, hold_share=config.policy_hold_share
    )
    app[GUARD] = guard
    watcher = asyncio.create_task(guard.watch(), name="policy-watch")
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        task = asyncio.create_task(guard.reload("SIGHUP"), name="policy-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    yield
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.remove_signal_handler(signal.SIGHUP)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher


async def _signin(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    signin_config = config.signin
    login = signin_config.login
    secrets = signin_config.secrets
    # Config validation refuses a login without both key rings.
    assert login is not None
    assert secrets.session_keys is not None
    assert secrets.seal_keys is not None
    clock = app[CLOCK]
    sealer = Sealer(secrets.seal_keys)
    # `keys rotate` reads which seal keys the gateway holds, and refuses to re-seal under a
    # key the running gateway could not open.
    ring = {"ids": [key_id for key_id, _ in secrets.seal_keys.keys], "started": clock.now()}
    await app[DURABLE].set_note(SEAL_RING_NOTE, json.dumps({**ring, "stopped": 0}))
    book = SessionBook(app[SHARED], secrets.session_keys, clock, signin_config.sessions)
    regulator = Regulator(app[SHARED], clock, signin_config.limits)
    passwords = None
    if login.mode == "gateway":
        passwords = Passwords(await asyncio.to_thread(load_password_file, login.users_file))
    messaging = config.messaging
    senders = {
        name: open_sender(channel.provider, clock=clock, channel=name)
        for name, channel in (("sms", messaging.sms), ("email", messaging.email))
        if channel is not None
    }
    codes = None
    if senders:
        # Codes are kept as an HMAC under a key derived from the seal key, never the key itself.
        pepper = subkey(secrets.seal_keys.current[1], "one-time codes")
        codes = CodeBook(app[SHARED], regulator, clock, messaging.codes, pepper)
    signin = SignIn(
        config,
        app[GUARD],
        book,
        regulator,
        app[DURABLE],
        app[SHARED],
        sealer,
        clock,
        passwords,
        codes,
        senders,
    )
    app[SIGNIN] = signin
    watcher = asyncio.create_task(signin.watch_revocations(), name="session-revocations")
    yield
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await signin.tasks.close(grace=5.0)  # notices under way, before their senders close
    for sender in senders.values():
        await sender.close()
    with contextlib.suppress(StoreUnavailable):
        await app[DURABLE].set_note(SEAL_RING_NOTE, json.dumps({**ring, "stopped": clock.now()}))


def _view(request: web.Request, config: Config, fresh_id: str) -> ClientView:
    check_header_bytes(request.headers)
    peer = request.remote or ""
    header = config.trusted_proxy_header
    ip, trusted, chain = client_ip(peer, request.headers, config.trusted_proxies, header)
    return ClientView(
        ip=ip,
        peer=peer,
        proto=forwarded_proto(request.headers, trusted, request.scheme, header),
        host=request.headers.get("Host", ""),
        peer_trusted=trusted,
        request_id=request_id(request.headers, trusted, fresh_id),
        chain=chain,
    )


@web.middleware
async def scope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking (address, request id), our errors as pages or JSON, one access-log line."""
    config = request.app[CONFIG]
    clock = request.app[CLOCK]
    started = clock.monotonic()
    rid = os.urandom(8).hex()
    status = 0
    request[DECISION] = ""
    try:
        try:
            request[VIEW] = view = _view(request, config, rid)
            rid = view.request_id
            response = await handler(request)
        except HttpError as exc:
            if not request[DECISION] or exc.status >= 500:
                request[DECISION] = "error" if exc.status >= 500 else "refused"
            response = _error(request, config, exc, rid)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("unexpected error on %s %s [%s]", request.method, request.path, rid)
            request[DECISION] = "error"
            response = _error(request, config, HttpError("unexpected"), rid)
        status = response.status
        if not response.prepared:
            response.headers["X-Request-Id"] = rid
        return response
    finally:
        seconds = clock.monotonic() - started
        decision = request[DECISION] or ("gone" if not status else "forward")
        record_request(decision, seconds)
        if config.logging.access_log:
            _access_line(request, rid, status, seconds, decision)


def _error(request: web.Request, config: Config, exc: HttpError, rid: str) -> web.Response:
    status = exc.status
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(
        level,
        "%s %s -> %d %s: %s [%s]",
        request.method,
        request.path,
        status,
        exc.reason,
        exc.detail,
        rid,
    )
    response = error_response(
        status=status,
        reason=exc.reason,
        request_id=rid,
        # API clients never get a page, whatever their Accept says.
        html=wants_html(request.headers) and not (isinstance(exc, AccessDenied) and exc.api),
        branding=config.branding,
        accept_language=request.headers.get("Accept-Language", ""),
    )
    if isinstance(exc, BadRequest):
        # What we refused to read may also be badly framed: never reuse the connection.
        response.force_close()
    return response


def _access_line(
    request: web.Request, rid: str, status: int, seconds: float, decision: str
) -> None:
    """`RID IP METHOD PATH STATUS DURATION user=U decision=D`; 499 when the client left first."""
    access = request.app[ACCESS_LOG]
    if not access.isEnabledFor(logging.INFO):
        return
    view = request.get(VIEW)
    # The path only: query strings can carry API tokens, and they never reach a log.
    access.info(
        "%s %s %s %s %d %.1fms user=%s decision=%s",
        rid,
        view.ip if view else request.remote,
        request.method,
        request.raw_path.split("?", 1)[0][:512],
        status or 499,
        seconds * 1000,
        request.get(USER, "-") or "-",
        decision,
    )
