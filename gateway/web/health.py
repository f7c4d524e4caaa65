"""`healthz` (the process answers) and `readyz` (this worker should be sent traffic).

readyz answers 503 with the reasons in its body while the gateway drains for a stop, when
the CRM does not accept connections or has lately left a request unanswered for the read
timeout, when the durable store refuses a write, and when the shared store does not answer.
Its result is kept for a second: a load balancer polling every worker costs one cheap probe
of each dependency a second, however often it asks. healthz never looks past the process:
a liveness probe that failed with the CRM would have the orchestrator restart every gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.tasks import Background
from gateway.web.keys import CLOCK, CONFIG, DURABLE, SHARED

log = logging.getLogger("gateway.health")

CHECK_TIMEOUT = 3.0  # one probe; a load balancer's own timeout is usually shorter
CACHE_FOR = 1.0  # seconds a readyz result is served again without probing
# How long a request the CRM left unanswered for the read timeout keeps readyz at 503 when
# no answer has come since. Bounded: with no traffic (the load balancer has moved it away)
# nothing else would ever show that the CRM is back.
STALL_MEMORY = 30.0
PROBE_KEY = "ready-probe"  # the one note / key the write probes overwrite (never grows)


class CrmWatch:
    """Whether the CRM has lately let a request wait past the read timeout with no answer
    since. proxy.py tells it each answer and each read timeout; readyz reads it."""

    __slots__ = ("stalled_since",)

    def __init__(self) -> None:
        # When a request first went unanswered, with no answer since (monotonic); or None.
        self.stalled_since: float | None = None

    def answered(self) -> None:
        self.stalled_since = None

    def timed_out(self, now: float) -> None:
        if self.stalled_since is None:
            self.stalled_since = now

    def stalled(self, now: float) -> bool:
        return self.stalled_since is not None and now - self.stalled_since < STALL_MEMORY


@dataclass(frozen=True)
class Check:
    name: str  # upstream, durable_store, shared_store
    reason: str = ""  # "" when the check passed, else a stable code for the body
    error: str = ""  # the exception's type: the body is public, so its text goes to the log
    seconds: float = 0.0
    detail: str = ""  # for the log only

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"status": "failed" if self.reason else "ok"}
        if self.reason:
            body["reason"] = self.reason
        if self.error:
            body["error"] = self.error
        body["ms"] = round(self.seconds * 1000, 1)
        return body


Probe = Callable[[], Awaitable[list[Check]]]


class Flag(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...


class LocalFlag:
    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class SharedFlag:
    """A flag every worker sees: one byte of memory mapped before they are forked (a load
    balancer's readyz polls reach one worker or another, and all of them drain alike)."""

    def __init__(self) -> None:
        self._byte = mmap.mmap(-1, 1)

    def set(self) -> None:
        self._byte[0] = 1

    def is_set(self) -> bool:
        return self._byte[0] == 1


class Readiness:
    """What readyz answers: draining (set by the server on SIGTERM), or the last probe's
    result while it is fresh. One probe at a time, shared by every request that waits."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        # The probe outlives a caller that hangs up; it is done or cancelled before the stores
        # it reads close (gateway.web.app).
        self.probes = Background("readiness probe")
        self.draining = False
        # Set once someone (a load balancer, an orchestrator) has asked readyz: a stop then
        # waits for it to see the 503 (shutdown.drain_delay). Workers share theirs.
        self.watched: Flag = LocalFlag()
        self.crm = CrmWatch()
        self._result: tuple[float, int, dict[str, object]] | None = None
        self._probe: asyncio.Task[tuple[int, dict[str, object]]] | None = None
        self._reasons: tuple[str, ...] = ()

    async def answer(self, probe: Probe) -> tuple[int, dict[str, object]]:
        self.watched.set()
        if self.draining:
            return 503, {"status": "draining", "reasons": ["draining"]}
        now = self.clock.monotonic()
        if self._result is not None and now - self._result[0] < CACHE_FOR:
            return self._result[1], self._result[2]
        if self._probe is None:
            self._probe = self.probes.spawn(self._run(probe), name="readiness-probe")
        # Shielded: a load balancer that hangs up must not cancel the probe others wait for.
        return await asyncio.shield(self._probe)

    async def _run(self, probe: Probe) -> tuple[int, dict[str, object]]:
        try:
            checks = await probe()
        finally:
            self._probe = None
        reasons = tuple(check.reason for check in checks if check.reason)
        status = 503 if reasons else 200
        body: dict[str, object] = {
            "status": "unavailable" if reasons else "ok",
            "reasons": list(reasons),
            "checks": {check.name: check.as_json() for check in checks},
        }
        self._result = (self.clock.monotonic(), status, body)
        self._tell(reasons, checks)
        return status, body

    def _tell(self, reasons: tuple[str, ...], checks: list[Check]) -> None:
        """The log hears of each change once, not of every poll."""
        if reasons == self._reasons:
            return
        if reasons:
            log.warning("not ready: %s", "; ".join(_told(c) for c in checks if c.reason))
        else:
            log.info("ready again (was: %s)", ", ".join(self._reasons))
        self._reasons = reasons


def _told(check: Check) -> str:
    return f"{check.reason} ({check.detail or check.error})"


READINESS = web.AppKey("readiness", Readiness)


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    status, body = await app[READINESS].answer(lambda: probe_dependencies(app))
    return _json(status, body)


async def probe_dependencies(app: web.Application) -> list[Check]:
    return list(
        await asyncio.gather(
            _check_crm(app),
            _check("durable_store", "durable_store_not_writable", _write_durable(app)),
            _check("shared_store", "shared_store_unavailable", _write_shared(app)),
        )
    )


async def _check_crm(app: web.Application) -> Check:
    """A CRM that accepts connections but lets requests wait past the read timeout is not
    one to send traffic to: proxy.py's record of it comes first, a connection second."""
    if app[READINESS].crm.stalled(app[CLOCK].monotonic()):
        timeout = app[CONFIG].upstream.timeouts.read
        detail = f"a request had no answer within the read timeout ({timeout:g}s)"
        return Check("upstream", "upstream_not_answering", "read timeout", detail=detail)
    return await _check("upstream", "upstream_unreachable", _connect_to_crm(app))


async def _connect_to_crm(app: web.Application) -> None:
    upstream = app[CONFIG].upstream
    _, writer = await asyncio.open_connection(upstream.hostname, upstream.port)
    writer.close()
    await writer.wait_closed()


async def _write_durable(app: web.Application) -> None:
    """A disk that is full or read-only still answers reads: only a write tells. One row,
    overwritten each time, so the probe never grows the store."""
    await app[DURABLE].set_note(PROBE_KEY, str(int(app[CLOCK].now())))


async def _write_shared(app: web.Application) -> None:
    """A write, not a PING: a Redis that refuses writes (out of memory, a failed save with
    stop-writes-on-bgsave-error, a replica) still answers PING. One key that expires."""
    await app[SHARED].put(PROBE_KEY, b"1", 10.0)


async def _check(name: str, reason: str, probe: Awaitable[None]) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT)
    except (TimeoutError, OSError, GatewayError) as exc:
        seconds = time.perf_counter() - started
        return Check(name, reason, type(exc).__name__, seconds, str(exc) or type(exc).__name__)
    return Check(name, seconds=time.perf_counter() - started)


ROUTES = {"healthz": healthz, "readyz": readyz}
