"""gateway.web.inline: on Python 3.11 a request's handler runs in its connection's task (no
task of its own per request, as eager start gives on 3.12), and what a task per request gave
still holds: a client that goes away cancels its handler, `asyncio.timeout` in a handler
times out and the connection serves on, an error is a 500 and the server serves on,
every other coroutine is still a task (through a factory set before, when there was one)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.web.inline import handler_as_task_next, run_handlers_inline
from gateway.web.protocol import GatewayRunner
from tests.conftest import Served, serve

ON_311 = pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 starts the task eagerly")
TASKS = web.AppKey("tasks", list)
CANCELLED = web.AppKey("cancelled", asyncio.Event)
STARTED = web.AppKey("started", asyncio.Event)


async def _handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    app[TASKS].append(asyncio.current_task())
    if request.path == "/hang":
        app[STARTED].set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            app[CANCELLED].set()
            raise
    if request.path == "/timeout":
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(60)
        except TimeoutError:
            return web.Response(text="timed out")
    if request.path == "/boom":
        raise RuntimeError("a handler's own error")
    return web.Response(text="ok")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    app = web.Application()
    app[TASKS] = []
    app[CANCELLED] = asyncio.Event()
    app[STARTED] = asyncio.Event()
    app.router.add_route("*", "/{tail:.*}", _handler)
    found = await serve(app, runner_class=GatewayRunner, handler_cancellation=True)
    yield found
    await found.runner.cleanup()


async def _ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[bytes, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


@ON_311
async def test_requests_on_one_connection_run_in_its_task(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        for _ in range(3):
            head, body = await _ask(reader, writer, "/page")
            assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
    finally:
        writer.close()
    tasks = served.app[TASKS]
    assert len(tasks) == 3 and len(set(map(id, tasks))) == 1  # one task: the connection's


async def test_a_client_that_goes_away_cancels_its_handler(served: Served) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /hang HTTP/1.1\r\nHost: gw\r\n\r\n")
    await asyncio.wait_for(served.app[STARTED].wait(), 5)
    writer.close()
    await asyncio.wait_for(served.app[CANCELLED].wait(), 5)


async def test_a_timeout_in_a_handler_leaves_the_connection_serving(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        head, body = await _ask(reader, writer, "/timeout")
        assert head.startswith(b"HTTP/1.1 200") and body == b"timed out"
        head, body = await _ask(reader, writer, "/page")
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
    finally:
        writer.close()


async def test_a_handlers_error_is_a_500_and_the_server_serves_on(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        head, _ = await _ask(reader, writer, "/boom")
        assert head.startswith(b"HTTP/1.1 500")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # aiohttp closes after a 500
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        head, body = await _ask(reader, writer, "/page")
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
    finally:
        writer.close()


@ON_311
async def test_other_coroutines_are_still_tasks_through_the_factory_set_before() -> None:
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def before(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        made.append(getattr(coro, "__qualname__", ""))
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(before)  # type: ignore[arg-type]
    try:
        assert run_handlers_inline(loop) and run_handlers_inline(loop)  # installed once

        async def work() -> int:
            return 7

        task = loop.create_task(work(), name="named")
        assert isinstance(task, asyncio.Task) and task.get_name() == "named"
        assert await task == 7
        assert made == [work.__qualname__]
        factory = loop.get_task_factory()
        assert factory is not None and factory is not before
        assert getattr(factory, "_before", None) is before  # chained, not wrapped twice
    finally:
        loop.set_task_factory(None)


@ON_311
async def test_a_head_refused_below_the_app_gets_its_task_as_before() -> None:
    """The handler aiohttp makes for a head it could not parse runs in a task of its own
    (its refusal is sent and the connection closed a turn later, as before: closed at once,
    what the client still sends meets a closed socket and a reset can overtake the 431;
    tests/web/test_protocol.py's oversized heads showed it). Only the next one does."""
    loop = asyncio.get_running_loop()
    assert run_handlers_inline(loop)
    try:
        coros = [RequestHandler._handle_request(None, None, None, None) for _ in range(2)]  # type: ignore[arg-type]
        handler_as_task_next(loop)
        first = loop.create_task(coros[0])
        second = loop.create_task(coros[1])
        assert isinstance(first, asyncio.Task) and second is cast(object, coros[1])
        first.cancel()
        coros[1].close()
    finally:
        loop.set_task_factory(None)
