"""A graceful stop of one serving process: readyz turns 503 while new connections are still
served, then the listener closes and requests in flight get a grace to finish.

aiohttp's own stop closes the listener at once and marks every connection closing, after
which it drops whatever a connection receives: an upload in flight stalls and is cut. Here a
connection is closed only when it is idle; a busy one finishes its request first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from gateway.config.shutdown import Shutdown
from gateway.web.health import Readiness
from gateway.web.protocol import GatewayRequestHandler

log = logging.getLogger("gateway")

# After the grace: how long aiohttp waits for the handlers it cancels before it drops them.
LAST_CUT = 1.0
_POLL = 0.1  # seconds between looks at the connections while they finish


class StopRequest:
    """SIGTERM or SIGINT asks for a graceful stop; a second SIGINT (Ctrl-C again) for one
    without waiting. Not a second SIGTERM: systemd sends one to every process of the service
    and the supervisor passes one on, so a worker often gets two for one stop."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.hurry = asyncio.Event()
        self._interrupts = 0

    def note(self, signum: int) -> None:
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                self.hurry.set()
        self.asked.set()

    async def wait_unless_hurried(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hurry.wait(), seconds)


def stop_budget(shutdown: Shutdown) -> float:
    """The longest a graceful stop of one process may take before its cleanup."""
    return shutdown.drain_delay + shutdown.grace + LAST_CUT


async def drain(
    runner: web.AppRunner,
    site: web.BaseSite,
    readiness: Readiness,
    shutdown: Shutdown,
    stop: StopRequest,
) -> None:
    """Everything a graceful stop does before runner.cleanup() (which cuts what is left).

    The drain delay is for whoever polls readyz: when nothing has asked it since the start,
    nobody would notice the 503, and the listener closes at once (new clients are refused
    and can go elsewhere at once, rather than waiting for a stop that only waits)."""
    readiness.draining = True
    delay = shutdown.drain_delay if readiness.watched.is_set() else 0.0
    if delay:
        log.info(
            "stopping: readyz answers 503; new connections served for %gs more, then up to "
            "%gs for requests in flight",
            delay,
            shutdown.grace,
        )
    else:
        log.info(
            "stopping: no new connections (nothing has asked readyz: no drain delay); up "
            "to %gs for requests in flight",
            shutdown.grace,
        )
    await stop.wait_unless_hurried(delay)
    await site.stop()  # no new connections from here on
    left = await _finish_in_flight(runner, shutdown.grace, stop)
    if left:
        log.warning(
            "stopping: %d request%s still running after the grace of %gs; cutting them",
            left,
            "" if left == 1 else "s",
            shutdown.grace,
        )


async def _finish_in_flight(runner: web.AppRunner, grace: float, stop: StopRequest) -> int:
    """Close idle connections as they become idle, until none is busy or the grace is over;
    returns how many are still busy."""
    server = runner.server
    if server is None:
        return 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while True:
        busy = 0
        for connection in server.connections:
            if isinstance(connection, GatewayRequestHandler) and not connection.idle:
                busy += 1
            else:
                connection.close()  # idle (keep-alive): it takes no new request
        now = loop.time()
        if not busy or now >= deadline or stop.hurry.is_set():
            return busy
        await stop.wait_unless_hurried(min(_POLL, deadline - now))
