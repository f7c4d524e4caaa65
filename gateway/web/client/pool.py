"""The connections to the CRM: at most `max_connections` at once (a slot each), idle ones kept
for `keepalive` seconds and handed out most recent first, a request that finds every slot
taken waiting in line for `timeouts.pool` seconds. Opens TCP or TLS connections within
`timeouts.connect`. Knows nothing of HTTP beyond whether a connection may be used again.

A connection the CRM closes while idle leaves the pool at once (its slot passes on); one the
CRM spoiled, or whose exchange did not end cleanly, is cut and never handed out again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from gateway.config.model import Upstream
from gateway.web.client.connection import BodyFailure, CrmConnection

# A waiter is handed a connection to reuse, or None: a free slot to open one in.
Handed = CrmConnection | None


class CrmPool:
    def __init__(
        self, upstream: Upstream, ssl_context: ssl.SSLContext | None, body_failure: BodyFailure
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._host = upstream.hostname
        self._port = upstream.port
        self._ssl = ssl_context
        self._limit = upstream.max_connections
        self._keepalive = upstream.keepalive
        self._connect_timeout = upstream.timeouts.connect
        self._pool_timeout = upstream.timeouts.pool
        self._read_timeout = upstream.timeouts.read
        self._body_failure = body_failure
        self._idle: deque[CrmConnection] = deque()  # oldest on the left
        self._waiters: deque[asyncio.Future[Handed]] = deque()
        self._count = 0  # connections open or opening, and slots reserved
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def size(self) -> int:
        """Slots taken: connections open or being opened, idle or busy, and reservations."""
        return self._count

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> CrmConnection:
        """A connection for one exchange: an idle one (most recently used first), a new one in
        a free slot, or the first one released while waiting in line. TimeoutError when none
        came within `timeouts.pool` (or a connect took longer than `timeouts.connect`);
        OSError when the CRM cannot be reached."""
        if self._closed:
            raise ConnectionResetError("the gateway is stopping")
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn.idle = False
            if conn.transport is not None and not conn.spoiled:
                return conn
            conn.abort()  # closed or spoiled but not yet told: its slot is free
            self._free_slot()
        if self._count < self._limit and not self._waiters:
            self._count += 1
            return await self._open()
        handed = await self._wait()
        if handed is not None:
            if handed.transport is not None and not handed.spoiled:
                return handed
            handed.abort()  # lost on the way: its slot is ours
        return await self._open()

    def release(self, conn: CrmConnection, reuse: bool) -> None:
        """The exchange is over; `reuse`: it ended cleanly and the connection may carry
        another. Otherwise the connection is cut (the CRM sees an aborted request, never a
        complete-looking one) and its slot passes on."""
        if reuse and not self._closed and conn.transport is not None:
            waiters = self._waiters
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(conn)
                    return
            conn.idle = True
            conn.idle_since = self._loop.time()
            self._idle.append(conn)
            if self._sweep is None:
                self._sweep = self._loop.call_at(conn.idle_since + self._keepalive, self._expire)
            return
        conn.abort()
        self._free_slot()

    async def reserve(self) -> None:
        """A slot with no connection of this pool in it (a WebSocket opened by aiohttp's
        client): counted against `max_connections` until `unreserve`. An idle connection
        gives its slot up rather than making the upgrade wait."""
        if self._closed:
            raise ConnectionResetError("the gateway is stopping")
        if self._count < self._limit and not self._waiters:
            self._count += 1
            return
        if self._idle:
            conn = self._idle.popleft()
            conn.idle = False
            conn.close()  # its slot is now the reservation's
            return
        handed = await self._wait()
        if handed is not None:
            handed.close()

    def unreserve(self) -> None:
        self._free_slot()

    async def close(self) -> None:
        """Idle connections close now; busy ones when their exchange ends."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._idle:
            conn = self._idle.pop()
            conn.idle = False
            conn.close()
            self._count -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("the gateway is stopping"))
        await asyncio.sleep(0)  # let the transports finish closing

    async def _open(self) -> CrmConnection:
        """A new connection in a slot already counted; the slot passes on if it fails."""
        loop = self._loop
        conn = CrmConnection(loop, self._read_timeout, self._body_failure, self._lost)
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._ssl is None:
                    await loop.create_connection(lambda: conn, self._host, self._port)
                else:
                    await loop.create_connection(
                        lambda: conn,
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host,
                    )
        except BaseException:
            self._free_slot()
            raise
        return conn

    async def _wait(self) -> Handed:
        """In line for a slot, first come first served, for `timeouts.pool` at most."""
        waiter: asyncio.Future[Handed] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._pool_timeout):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed over just as the wait ended (timed out, or the client left).
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed, reuse=True)
            else:
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            raise

    def _free_slot(self) -> None:
        """A slot is free: the first one in line gets it, or the count goes down."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._count -= 1

    def _lost(self, conn: CrmConnection) -> None:
        """connection_lost of any connection: an idle one leaves the pool at once (a busy
        one is given back by its exchange, which sees the loss itself)."""
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
            self._free_slot()

    def _expire(self) -> None:
        """Idle connections older than `keepalive` close; one timer for the whole pool."""
        self._sweep = None
        idle = self._idle
        oldest = self._loop.time() - self._keepalive
        while idle and idle[0].idle_since <= oldest:
            conn = idle.popleft()
            conn.idle = False
            conn.close()
            self._free_slot()
        if idle:
            self._sweep = self._loop.call_at(idle[0].idle_since + self._keepalive, self._expire)
