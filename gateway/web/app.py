"""The composition root: builds the aiohttp application and picks every concrete adapter:
the stores, the upstream client, the guard and its policy, sign-in with its factors and
senders, and the tasks that run beside the requests. Nothing here handles a request: the
scope (gateway.web.scope) comes first on each, then gateway.web.pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from gateway.alerts import AlertRules
from gateway.audit import AuditTrail
from gateway.clock import Clock, SystemClock
from gateway.config.alerts import NewNetwork
from gateway.config.model import Config
from gateway.crypto import Sealer, subkey
from gateway.errors import StoreUnavailable
from gateway.factors.codes import CodeBook
from gateway.policy.model import Policy
from gateway.senders import open_sender
from gateway.signin.passwords import load_password_file
from gateway.signin.regulation import Regulator
from gateway.signin.session import SessionBook
from gateway.stores import InProcessStore, SharedStore, open_stores
from gateway.stores.protocols import SEAL_RING_NOTE
from gateway.tasks import Background
from gateway.web import health, pipeline
from gateway.web.accesslog import AccessLog
from gateway.web.bodies import expect_continue_later
from gateway.web.forwarding import (
    OriginRewriter,
)
from gateway.web.guard import GUARD, open_guard
from gateway.web.helpdesk.listener import admin_listener_middleware
from gateway.web.keys import (
    ACCESS_LOG,
    AUDIT,
    CLOCK,
    CONFIG,
    DURABLE,
    REWRITER,
    SHARED,
    TASKS,
    UPSTREAM_CLIENT,
)
from gateway.web.pages import notices
from gateway.web.pages.notices import NewNetworks
from gateway.web.revocations import read_revocations, watch_revocations
from gateway.web.scope import scope_middleware
from gateway.web.signin import SIGNIN, Passwords, SignIn
from gateway.web.snapshot import restore_snapshot, save_snapshot
from gateway.web.upstream import open_upstream_client


def build_app(
    config: Config, *, clock: Clock | None = None, policy: Policy | None = None
) -> web.Application:
    """`policy`: the config's policies when the caller has already loaded them (the CLI has,
    to validate them); otherwise the guard loads them at start-up."""
    clock = clock or SystemClock()
    access = None
    if config.logging.access_log:
        access = AccessLog(clock, json_lines=config.logging.format == "json")
    middlewares = [scope_middleware(config, clock, access)]
    console = config.admin.console
    if console is not None and console.at == "admin_listener":
        middlewares.insert(0, admin_listener_middleware)  # /metrics there, before the scope
    app = web.Application(middlewares=middlewares, handler_args={"max_field_size": 16384})
    app[TASKS] = Background("gateway")
    app[CONFIG] = config
    app[CLOCK] = clock
    app[REWRITER] = OriginRewriter(config.upstream.url, config.public_url)
    app[health.READINESS] = health.Readiness(clock)
    app.cleanup_ctx.append(_tasks)
    if access is not None:
        app[ACCESS_LOG] = access
        app.cleanup_ctx.append(_access_log)
    app.cleanup_ctx.append(_stores)
    app.cleanup_ctx.append(_upstream_client)
    app.cleanup_ctx.append(_readiness)
    if config.policies or config.signin.login is not None:
        app.cleanup_ctx.append(functools.partial(_guard, preloaded=policy))
    if config.signin.login is not None:
        app.cleanup_ctx.append(_signin)
    app.router.add_route("*", "/{tail:.*}", pipeline.dispatch, expect_handler=expect_continue_later)
    return app


async def _tasks(app: web.Application) -> AsyncIterator[None]:
    """First in, last out: what still runs beside the requests ends after everything else."""
    yield
    await app[TASKS].close()


async def _access_log(app: web.Application) -> AsyncIterator[None]:
    """Second to last out: every request's line is written before the process ends."""
    writer = app[TASKS].spawn(app[ACCESS_LOG].run(), name="access-log")
    yield
    await app[TASKS].stop(writer)


async def _readiness(app: web.Application) -> AsyncIterator[None]:
    """A probe under way ends (or is cancelled) before the stores and the client it uses."""
    yield
    await app[health.READINESS].probes.close(grace=1.0)


async def _upstream_client(app: web.Application) -> AsyncIterator[None]:
    crm, clock = app[health.READINESS].crm, app[CLOCK]
    # readyz hears of each request the CRM leaves past the read timeout.
    client = open_upstream_client(
        app[CONFIG].upstream, on_stall=lambda: crm.timed_out(clock.monotonic())
    )
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
    # New networks are looked for when users are told of them, even with no alert about it.
    told = config.signin.login is not None and "new_network" in config.messaging.notices
    told = told and (config.messaging.sms is not None or config.messaging.email is not None)
    networks = NewNetwork() if told else None
    rules = AlertRules(config.alerts, shared, durable, app[CLOCK], trail, networks=networks)
    trail.listeners.append(rules.observe)
    flusher = app[TASKS].spawn(trail.run(), name="audit-flush")
    kept = _kept_sessions(config, shared)
    if kept is not None:
        await asyncio.to_thread(restore_snapshot, *kept, app[CLOCK])
    yield
    await rules.close()  # deliveries under way may still record and use both stores
    if kept is not None:
        await asyncio.to_thread(save_snapshot, *kept, app[CLOCK])
    await app[TASKS].stop(flusher)
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
        config.policies,
        app[DURABLE],
        app[AUDIT],
        preloaded,
        hold_share=config.policy_hold_share,
        fold_paths=config.upstream.case_insensitive_paths,
    )
    app[GUARD] = guard
    tasks = app[TASKS]
    watcher = tasks.spawn(guard.watch(), name="policy-watch")
    loop = asyncio.get_running_loop()
    # Reloads asked for by SIGHUP: finished or cancelled here, before the stores they write to
    # (the confirmed files' note, the audit trail) close.
    reloads = Background("policy reload")

    def on_sighup() -> None:
        reloads.spawn(guard.reload("SIGHUP"), name="policy-reload")

    taken = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        taken = True
    if taken:
        # Held (blocked) while the process started (gateway.web.server): a SIGHUP sent then
        # is carried out now, once.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    yield
    if taken:
        # Held again before the handler goes: a SIGHUP while stopping must not end the
        # process (its default action) in the middle of a drain.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
    await tasks.stop(watcher)
    await reloads.close(grace=5.0)


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
    # A password at the CRM's login holds its slot while it may wait for the CRM's answer,
    # which is counted even when its browser has left (gateway.web.crmlogin).
    timeouts = config.upstream.timeouts
    waits = timeouts.pool + timeouts.connect + timeouts.read + 5.0
    regulator = Regulator(app[SHARED], clock, signin_config.limits, in_flight_ttl=waits)
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
        Background("sign-in"),
    )
    app[SIGNIN] = signin
    app[AUDIT].listeners.append(NewNetworks(signin).observe)
    version = await read_revocations(app[DURABLE], book)  # before the first request
    watching = watch_revocations(
        app[DURABLE], book, regulator, clock, functools.partial(notices.requested, signin), version
    )
    watcher = app[TASKS].spawn(watching, name="session-revocations")
    yield
    await app[TASKS].stop(watcher)
    # Notices and counts under way, before their senders and stores close.
    await signin.tasks.close(grace=5.0)
    for sender in senders.values():
        await sender.close()
    with contextlib.suppress(StoreUnavailable):
        await app[DURABLE].set_note(SEAL_RING_NOTE, json.dumps({**ring, "stopped": clock.now()}))
