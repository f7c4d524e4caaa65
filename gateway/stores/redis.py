"""Redis shared store: sessions, held cookies, replay guards and rate windows shared by every
worker and every instance. Each primitive is one atomic Redis command (or one small script),
so the semantics above (regulation, sessions) hold across processes.

Redis errors become StoreUnavailable at this boundary: the gateway answers 503, fail closed.
`state.shared: {type: redis, url: …}`; `SHARED` is its registry entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.clock import Clock
from gateway.config.model import StoreConfig
from gateway.errors import StoreUnavailable
from gateway.metrics import STORE_SECONDS
from gateway.stores.kinds import SharedKind

T = TypeVar("T")
log = logging.getLogger("gateway.stores")

# INCRBY, and a time to live only for a counter it has just created (as the memory store),
# or from now on every call when renewing (ARGV[3] = '1').
_INCR = """
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
if ARGV[3] == '1' or (n == tonumber(ARGV[2]) and redis.call('PTTL', KEYS[1]) < 0) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisSharedStore:
    def __init__(self, url: str, prefix: str = "crm-gateway:") -> None:
        self._prefix = prefix
        # A bounded pool that makes a burst wait for a connection (up to 2 s) instead of
        # failing it: 64 connections serve far more requests than one worker can take.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=2.0,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=30,
        )
        self._client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._incr = self._client.register_script(_INCR)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await fn()
        except (RedisError, OSError) as exc:
            # The URL may hold a password: name only the kind of failure.
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        finally:
            STORE_SECONDS.labels("shared", operation).observe(time.perf_counter() - started)

    async def ping(self) -> None:
        await self._call("ping", self._client.ping)

    async def warn_if_nothing_kept(self) -> bool:
        """At start: one warning when this Redis keeps nothing on disk (no RDB snapshots, no
        append-only file), because a restart of it then signs everyone out and forgets every
        lockout. Silent when it keeps something, or will not say (managed Redis often disables
        CONFIG; readyz reports one that does not answer). True when it warned."""
        try:
            save, aof = await asyncio.wait_for(
                asyncio.gather(
                    self._client.config_get("save"), self._client.config_get("appendonly")
                ),
                3.0,
            )
        except (RedisError, OSError, TimeoutError):
            return False
        if save.get("save") != "" or aof.get("appendonly") != "no":
            return False
        where = self._client.connection_pool.connection_kwargs
        server = where.get("path") or f"{where.get('host')}:{where.get('port')}"
        log.warning(
            'state.shared: the Redis at %s keeps nothing on disk (save "", appendonly no): '
            "if it restarts, everyone is signed out and lockouts are forgotten; set "
            "appendonly yes (or save snapshots) in its configuration",
            server,
        )
        return True

    async def close(self) -> None:
        await self._client.aclose()
        await self._client.connection_pool.disconnect()

    async def get(self, key: str) -> bytes | None:
        found: Any = await self._call("get", lambda: self._client.get(self._key(key)))
        return bytes(found) if found is not None else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._call("put", lambda: self._client.set(self._key(key), value, px=_ms(ttl)))

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        done = await self._call(
            "add", lambda: self._client.set(self._key(key), value, px=_ms(ttl), nx=True)
        )
        return bool(done)

    async def replace(self, key: str, value: bytes, ttl: float) -> bool:
        done = await self._call(
            "replace", lambda: self._client.set(self._key(key), value, px=_ms(ttl), xx=True)
        )
        return bool(done)

    async def take(self, key: str) -> bytes | None:
        found: Any = await self._call("take", lambda: self._client.getdel(self._key(key)))
        return bytes(found) if found is not None else None

    async def delete(self, key: str) -> None:
        await self._call("delete", lambda: self._client.delete(self._key(key)))

    async def incr(self, key: str, ttl: float, amount: int = 1, *, renew: bool = False) -> int:
        args = [_ms(ttl), amount, "1" if renew else "0"]
        found: Any = await self._call("incr", lambda: self._incr(keys=[self._key(key)], args=args))
        return int(found)


async def _open_shared(settings: StoreConfig, clock: Clock) -> RedisSharedStore:
    store = RedisSharedStore(settings.url, settings.prefix)
    await store.warn_if_nothing_kept()
    return store


SHARED = SharedKind(open=_open_shared)
