"""How a command reaches the durable store: opened through the registry without ever
creating it (a command pointed at the wrong place says so), a clear sentence when it cannot
be reached, and an audit event naming the operator for each change an administrator made."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.audit import STDOUT, LineWriter, event_line
from gateway.clock import SystemClock
from gateway.config.model import Config
from gateway.errors import StoreUnavailable
from gateway.model import AuditEvent
from gateway.stores import DUPLICATE, STORE_MISSING, DurableStore, durable_address, open_durable

T = TypeVar("T")
CLOCK = SystemClock()


def with_store(config: Config, work: Callable[[DurableStore], Awaitable[T]]) -> T:
    """Open the config's durable store, run `work` on it, close it: one CLI command's I/O.

    Never creates a store: one that is not there, or that cannot be read or written, raises
    StoreUnavailable whose detail is one line naming the store and the key that chose it
    (cli.main prints it and exits 1)."""
    return asyncio.run(_with_store(config, work))


async def _with_store(config: Config, work: Callable[[DurableStore], Awaitable[T]]) -> T:
    store: DurableStore | None = None
    try:
        store = await open_durable(config.state.durable, create=False)
        return await work(store)
    except StoreUnavailable as exc:
        if exc.reason == DUPLICATE:
            raise  # the data was refused (a token twice), not the store: the command says so
        raise StoreUnavailable(store_problem(config, exc), reason=exc.reason) from exc
    finally:
        if store is not None:
            await store.close()


def store_problem(config: Config, exc: StoreUnavailable) -> str:
    """What went wrong with the durable store, for an operator: which store (its file), from
    which key, and the store's own words (its backend's error, without our prefix)."""
    store, key = durable_address(config.state.durable)
    where = f"{key} in {config.source}"
    if exc.reason == STORE_MISSING:
        return (
            f"no durable store at {store} ({where}): nothing done and no store created; check "
            "the path, or start the gateway (crm-gateway run) to create it"
        )
    cause = exc.__cause__ if exc.__cause__ is not None else exc.detail
    return f"the durable store {store} cannot be used ({where}): {cause}"


def operator() -> str:
    """Who runs the command, for the audit trail: the login name, or the uid when unknown."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


async def audit_admin(
    config: Config,
    store: DurableStore,
    name: str,
    outcome: str = "ok",
    *,
    user: str = "",
    reason: str = "",
    **details: str | int | float,
) -> AuditEvent:
    """An admin action in the audit trail: the store (so `audit search` finds it) and the
    audit file when it is one (stdout is the command's own output, so not there)."""
    event = AuditEvent(
        CLOCK.now(),
        name,
        outcome,
        user=user,
        method="CLI",
        reason=reason,
        details=tuple(sorted({"by": operator(), **details}.items())),
    )
    await store.add_audit_events([event])
    if config.audit.file not in ("", STDOUT):
        writer = LineWriter(config.audit.file)
        writer.write(event_line(event))
        writer.close()
    return event
