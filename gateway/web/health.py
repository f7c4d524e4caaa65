"""`healthz` (the process answers) and `readyz` (the CRM is reachable and the stores answer)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable

from aiohttp import web

from gateway.errors import GatewayError
from gateway.web.keys import CONFIG, DURABLE, SHARED

CHECK_TIMEOUT = 3.0


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _upstream_reachable(request: web.Request) -> None:
    upstream = request.app[CONFIG].upstream
    _, writer = await asyncio.open_connection(upstream.hostname, upstream.port)
    writer.close()
    await writer.wait_closed()


async def _check(name: str, probe: Awaitable[None]) -> tuple[str, str, float]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT)
    except (TimeoutError, OSError, GatewayError) as exc:
        return name, f"failed: {type(exc).__name__}", time.perf_counter() - started
    return name, "ok", time.perf_counter() - started


async def readyz(request: web.Request) -> web.Response:
    checks = await asyncio.gather(
        _check("upstream", _upstream_reachable(request)),
        _check("durable_store", request.app[DURABLE].ping()),
        _check("shared_store", request.app[SHARED].ping()),
    )
    ready = all(result == "ok" for _, result, _ in checks)
    body: dict[str, object] = {
        "status": "ok" if ready else "unavailable",
        "checks": {
            name: {"status": result, "ms": round(secs * 1000, 1)} for name, result, secs in checks
        },
    }
    return _json(200 if ready else 503, body)


ROUTES = {"healthz": healthz, "readyz": readyz}
