"""Each request's handler run in its connection's task, not in a task of its own, on Python
3.11.

aiohttp's connection loop (`RequestHandler.start`) hands every request to a new task and
awaits it. On Python 3.12 and later it starts that task eagerly: the handler runs at once,
in the same step, until it first waits. On 3.11 there is no eager start, so every request
costs a task (its creation, its registration in asyncio's set of all tasks, its first step
scheduled for the loop's next turn, and the connection's task woken again when it ends):
about 18,000 instructions of the 390,000 a small proxied request costs in all (callgrind,
bench harness). Here the loop's task factory gives the connection loop the handler's
coroutine itself to await, which runs it in place, as eager start would: 12,000 of them
saved (the factory, a Python call, costs some back), 390k → 378k.

A request whose head aiohttp could not parse still gets a task of its own
(`handler_as_task_next`): its refusal (400, 414, 431) is answered and the connection closed
a turn of the loop later, as before, so the transport has read more of what the client was
still sending; closed at once, the rest would arrive at a closed socket and the client's
system answer it with a reset, which can reach the client before the refusal.

What stays the same: a client that goes away cancels the connection's task, and with it the
handler (the request's task was cancelled through it before); `asyncio.timeout` in a
handler times out the same way (it cancels and uncancels whatever task runs it); a graceful
stop waits for the request in progress as before (aiohttp tracks that itself, not through
the task). What differs: a handler's context variables are the connection's, not a copy per
request (aiohttp's reason for the task, its issue #3406); the gateway sets none.

Any other coroutine becomes a task as before (through a factory that was set already, if
one was). An aiohttp release whose handler coroutine is not `RequestHandler._handle_request`
simply gets its tasks again: nothing is taken for it that is not that coroutine.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Generator
from typing import Any, cast

from aiohttp.web_protocol import RequestHandler

_HANDLE_REQUEST = RequestHandler._handle_request.__code__


def run_handlers_inline(loop: asyncio.AbstractEventLoop) -> bool:
    """Install the factory on `loop` (once); False where it is not needed (Python ≥ 3.12)."""
    if sys.version_info >= (3, 12):
        return False
    before = loop.get_task_factory()
    if isinstance(before, _InlineHandlers):
        return True
    loop.set_task_factory(_InlineHandlers(before))
    return True


def handler_as_task_next(loop: asyncio.AbstractEventLoop) -> None:
    """The next request's handler on `loop` runs in a task of its own (one refused below the
    app): called between aiohttp's making the request and making its handler's coroutine."""
    factory = loop.get_task_factory()
    if isinstance(factory, _InlineHandlers):
        factory.task_next = True


class _InlineHandlers:
    """The task factory: aiohttp's per-request coroutine given back to be awaited in place,
    every other coroutine made a task (by the factory set before, if any)."""

    def __init__(self, before: Any) -> None:
        self._before = before
        self.task_next = False  # handler_as_task_next

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        if getattr(coro, "cr_code", None) is _HANDLE_REQUEST:
            if not self.task_next:
                # Awaited at once by RequestHandler.start, which only awaits and deletes it.
                return cast("asyncio.Future[Any]", coro)
            self.task_next = False
        if self._before is not None:
            return cast("asyncio.Future[Any]", self._before(loop, coro, **kwargs))
        return asyncio.Task(coro, loop=loop, **kwargs)
